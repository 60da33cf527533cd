//! Parquet input: one document per row, text from a string column, the id from another,
//! and every other scalar column (string, integer, float, boolean) as metadata.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::{Map, Value};

use crate::error::{PartitionError, Result};
use crate::reader::{Document, ReaderOptions};

/// Streams documents out of a Parquet file, one record batch at a time.
pub(crate) struct ParquetDocs {
    path: PathBuf,
    options: ReaderOptions,
    batches: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    row: usize,
    row_base: u64,
}

fn err(path: &Path, e: impl std::fmt::Display) -> PartitionError {
    PartitionError::Parquet {
        path: path.into(),
        message: e.to_string(),
    }
}

impl ParquetDocs {
    pub(crate) fn open(path: &Path, options: &ReaderOptions) -> Result<Self> {
        let file = File::open(path).map_err(|e| PartitionError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(path, e))?;
        let schema = builder.schema().clone();
        match schema.field_with_name(&options.text_field) {
            Ok(f)
                if matches!(
                    f.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) => {}
            Ok(f) => {
                return Err(err(
                    path,
                    format!(
                        "column `{}` has type {}, expected a string",
                        options.text_field,
                        f.data_type()
                    ),
                ));
            }
            Err(_) => {
                return Err(err(
                    path,
                    format!("no text column `{}`", options.text_field),
                ));
            }
        }
        let batches = builder
            .with_batch_size(1024)
            .build()
            .map_err(|e| err(path, e))?;
        Ok(Self {
            path: path.into(),
            options: options.clone(),
            batches,
            batch: None,
            row: 0,
            row_base: 0,
        })
    }

    pub(crate) fn next(&mut self) -> Option<Result<Document>> {
        loop {
            if let Some(b) = &self.batch
                && self.row < b.num_rows()
            {
                let row = self.row;
                self.row += 1;
                return Some(self.document(b, row));
            }
            if let Some(b) = self.batch.take() {
                self.row_base += b.num_rows() as u64;
            }
            match self.batches.next()? {
                Ok(b) => {
                    self.batch = Some(b);
                    self.row = 0;
                }
                Err(e) => return Some(Err(err(&self.path, e))),
            }
        }
    }

    fn document(&self, batch: &RecordBatch, row: usize) -> Result<Document> {
        let line = self.row_base + row as u64 + 1;
        let schema = batch.schema();
        let mut text = None;
        let mut id = None;
        let mut metadata = Map::new();
        for (field, col) in schema.fields().iter().zip(batch.columns()) {
            let Some(v) = cell(col, row) else { continue };
            if field.name() == &self.options.text_field {
                text = v.as_str().map(str::to_string);
            } else if field.name() == &self.options.id_field {
                id = Some(match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                });
            } else {
                metadata.insert(field.name().clone(), v);
            }
        }
        let text = text.ok_or_else(|| PartitionError::MissingText {
            path: self.path.clone(),
            line,
            field: self.options.text_field.clone(),
        })?;
        let id = id.unwrap_or_else(|| format!("{}:{}", self.path.display(), line));
        Ok(Document { id, text, metadata })
    }
}

/// One scalar cell as JSON; `None` for nulls and unsupported types.
fn cell(col: &ArrayRef, row: usize) -> Option<Value> {
    if col.is_null(row) {
        return None;
    }
    Some(match col.data_type() {
        DataType::Utf8 => Value::from(col.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::from(col.as_string::<i64>().value(row)),
        DataType::Utf8View => Value::from(col.as_string_view().value(row)),
        DataType::Int32 => Value::from(col.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(col.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => Value::from(col.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => Value::from(col.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => Value::from(col.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => Value::from(col.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => Value::from(col.as_boolean().value(row)),
        _ => return None,
    })
}
