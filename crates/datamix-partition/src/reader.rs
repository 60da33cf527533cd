//! Streaming document readers: Dolma-style JSONL (plain, `.gz`, `.zst`), plain-text files,
//! folders of text files (one folder per domain) and Parquet files with a text column.
//!
//! Every reader holds one document (or one Parquet record batch) in memory at a time.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{PartitionError, Result};

/// One document: its id, text and metadata (a JSON object).
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Identifier (from the record, or made from the file name and position).
    pub id: String,
    /// The text.
    pub text: String,
    /// Metadata: the record's `metadata` object merged with its other top-level fields.
    pub metadata: Map<String, Value>,
}

impl Document {
    /// A 64-bit hash of the text (xxh3), stable across runs and platforms.
    pub fn hash(&self) -> u64 {
        text_hash(&self.text)
    }
}

/// The document hash used for held-out splits and ordering (xxh3-64 of the UTF-8 text).
pub fn text_hash(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// What to do with a malformed record (bad JSON, missing text, invalid UTF-8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// Stop with an error naming the file and line.
    #[default]
    Fail,
    /// Skip the record and count it (see [`SourceReader::skipped`]).
    Skip,
}

/// How records are read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReaderOptions {
    /// Field (JSONL) or column (Parquet) holding the text.
    pub text_field: String,
    /// Field or column holding the document id (optional in the data).
    pub id_field: String,
    /// Policy for malformed records.
    pub bad_records: BadRecordPolicy,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            text_field: "text".into(),
            id_field: "id".into(),
            bad_records: BadRecordPolicy::Fail,
        }
    }
}

/// The format of one input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// One JSON object per line (Dolma style), possibly `.gz`/`.zst` compressed.
    Jsonl,
    /// Plain text; documents are separated by blank lines. Possibly compressed.
    Text,
    /// A folder whose every file (recursively) is one document.
    Folder,
    /// A Parquet file with a text column.
    Parquet,
}

/// One input: a path, its format and an optional domain given to documents that carry none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusSource {
    /// File or folder.
    pub path: PathBuf,
    /// How to read it.
    pub format: SourceFormat,
    /// Set as metadata `domain` on documents that lack that key (folder and plain-text
    /// sources default to the folder name / file stem).
    pub domain: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn split_compression(name: &str) -> (&str, Compression) {
    if let Some(s) = name.strip_suffix(".gz") {
        (s, Compression::Gzip)
    } else if let Some(s) = name
        .strip_suffix(".zst")
        .or_else(|| name.strip_suffix(".zstd"))
    {
        (s, Compression::Zstd)
    } else {
        (name, Compression::None)
    }
}

fn format_of(path: &Path) -> Option<SourceFormat> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let (stem, compression) = split_compression(&name);
    let ext = Path::new(stem)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    match ext {
        "jsonl" | "json" | "ndjson" => Some(SourceFormat::Jsonl),
        "txt" | "text" => Some(SourceFormat::Text),
        "parquet" if compression == Compression::None => Some(SourceFormat::Parquet),
        _ => None,
    }
}

fn file_stem_domain(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let (stem, _) = split_compression(name);
    Some(Path::new(stem).file_stem()?.to_str()?.to_string())
}

impl CorpusSource {
    /// Finds the inputs under `path`.
    ///
    /// A file is read by its extension (`.jsonl`/`.json`/`.ndjson`, `.txt`, `.parquet`, each
    /// text format optionally `.gz`/`.zst`). A directory contributes, in name order, every
    /// such file directly inside it and every sub-directory as a folder-per-domain source
    /// (domain = sub-directory name). Hidden entries and uncompressed `.json` files (such
    /// as a `tokenizer.json` beside the data) are skipped in directories.
    pub fn discover(path: &Path) -> Result<Vec<CorpusSource>> {
        let meta = std::fs::metadata(path).map_err(|e| PartitionError::io(path, e))?;
        if meta.is_file() {
            let format = format_of(path)
                .ok_or_else(|| PartitionError::UnknownFormat { path: path.into() })?;
            let domain = (format == SourceFormat::Text)
                .then(|| file_stem_domain(path))
                .flatten();
            return Ok(vec![CorpusSource {
                path: path.into(),
                format,
                domain,
            }]);
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| PartitionError::io(path, e))?
            .map(|e| {
                e.map(|e| e.path())
                    .map_err(|err| PartitionError::io(path, err))
            })
            .collect::<Result<_>>()?;
        entries.sort();
        let mut out = Vec::new();
        for p in entries {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                let domain = p.file_name().and_then(|n| n.to_str()).map(str::to_string);
                out.push(CorpusSource {
                    path: p,
                    format: SourceFormat::Folder,
                    domain,
                });
            } else if let Some(format) = format_of(&p) {
                let name = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if name.ends_with(".json") {
                    continue; // tokenizer.json, configs: only compressed `.json.gz`/`.json.zst` are data
                }
                let domain = (format == SourceFormat::Text)
                    .then(|| file_stem_domain(&p))
                    .flatten();
                out.push(CorpusSource {
                    path: p,
                    format,
                    domain,
                });
            }
        }
        Ok(out)
    }

    /// Opens a streaming reader over this source's documents.
    pub fn open(&self, options: &ReaderOptions) -> Result<SourceReader> {
        let inner = match self.format {
            SourceFormat::Jsonl => Inner::Jsonl {
                lines: open_lines(&self.path)?,
                line: 0,
            },
            SourceFormat::Text => Inner::Text {
                lines: open_lines(&self.path)?,
                line: 0,
                block: 0,
            },
            SourceFormat::Folder => Inner::Folder {
                files: list_files(&self.path)?,
                next: 0,
            },
            #[cfg(feature = "parquet")]
            SourceFormat::Parquet => Inner::Parquet(crate::parquet_reader::ParquetDocs::open(
                &self.path, options,
            )?),
            #[cfg(not(feature = "parquet"))]
            SourceFormat::Parquet => {
                return Err(PartitionError::Parquet {
                    path: self.path.clone(),
                    message: "datamix-partition was built without the `parquet` feature".into(),
                });
            }
        };
        Ok(SourceReader {
            source: self.clone(),
            options: options.clone(),
            inner,
            skipped: 0,
            done: false,
        })
    }

    /// Hashes the source's bytes (every file of a folder, in name order) with xxh3-128, hex.
    pub fn content_hash(&self) -> Result<String> {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let files = if self.path.is_dir() {
            list_files(&self.path)?
        } else {
            vec![self.path.clone()]
        };
        let mut buf = vec![0u8; 1 << 20];
        for f in &files {
            if self.path.is_dir() {
                h.update(
                    f.strip_prefix(&self.path)
                        .unwrap_or(f)
                        .to_string_lossy()
                        .as_bytes(),
                );
                h.update(&[0]);
            }
            let mut file = File::open(f).map_err(|e| PartitionError::io(f, e))?;
            loop {
                let n = file.read(&mut buf).map_err(|e| PartitionError::io(f, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        Ok(format!("{:032x}", h.digest128()))
    }
}

fn open_lines(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).map_err(|e| PartitionError::io(path, e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let reader: Box<dyn Read + Send> = match split_compression(&name).1 {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::Zstd => {
            Box::new(zstd::Decoder::new(file).map_err(|e| PartitionError::io(path, e))?)
        }
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| PartitionError::io(&d, e))? {
            let p = e.map_err(|e| PartitionError::io(&d, e))?.path();
            if p.file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'))
            {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

enum Inner {
    Jsonl {
        lines: Box<dyn BufRead + Send>,
        line: u64,
    },
    Text {
        lines: Box<dyn BufRead + Send>,
        line: u64,
        block: u64,
    },
    Folder {
        files: Vec<PathBuf>,
        next: usize,
    },
    #[cfg(feature = "parquet")]
    Parquet(crate::parquet_reader::ParquetDocs),
}

/// A streaming iterator over one source's documents.
///
/// Yields `Err` for a malformed record under [`BadRecordPolicy::Fail`] (and then stops);
/// under [`BadRecordPolicy::Skip`] it skips and counts it.
pub struct SourceReader {
    source: CorpusSource,
    options: ReaderOptions,
    inner: Inner,
    skipped: u64,
    done: bool,
}

impl SourceReader {
    /// Records skipped so far under [`BadRecordPolicy::Skip`].
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn read_next(&mut self) -> Option<Result<Document>> {
        let path = &self.source.path;
        match &mut self.inner {
            Inner::Jsonl { lines, line } => {
                let mut buf = String::new();
                loop {
                    buf.clear();
                    *line += 1;
                    match lines.read_line(&mut buf) {
                        Ok(0) => return None,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                            return Some(Err(PartitionError::InvalidUtf8 {
                                path: path.clone(),
                                line: *line,
                            }));
                        }
                        Err(e) => return Some(Err(PartitionError::io(path, e))),
                    }
                    if buf.trim().is_empty() {
                        continue;
                    }
                    return Some(parse_record(&buf, path, *line, &self.options));
                }
            }
            Inner::Text { lines, line, block } => {
                let mut text = String::new();
                let mut buf = String::new();
                loop {
                    buf.clear();
                    *line += 1;
                    let n = match lines.read_line(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                            return Some(Err(PartitionError::InvalidUtf8 {
                                path: path.clone(),
                                line: *line,
                            }));
                        }
                        Err(e) => return Some(Err(PartitionError::io(path, e))),
                    };
                    let blank = buf.trim().is_empty();
                    if n == 0 || (blank && !text.is_empty()) {
                        if text.is_empty() {
                            return None;
                        }
                        *block += 1;
                        if text.ends_with('\n') {
                            text.pop();
                        }
                        let id = format!("{}#{}", path.display(), block);
                        return Some(Ok(Document {
                            id,
                            text,
                            metadata: Map::new(),
                        }));
                    }
                    if !blank {
                        text.push_str(&buf);
                    }
                }
            }
            Inner::Folder { files, next } => {
                let file = files.get(*next)?.clone();
                *next += 1;
                let bytes = match std::fs::read(&file) {
                    Ok(b) => b,
                    Err(e) => return Some(Err(PartitionError::io(&file, e))),
                };
                let rel = file
                    .strip_prefix(path)
                    .unwrap_or(&file)
                    .to_string_lossy()
                    .into_owned();
                match String::from_utf8(bytes) {
                    Ok(text) => {
                        let mut metadata = Map::new();
                        metadata.insert("path".into(), Value::String(rel.clone()));
                        Some(Ok(Document {
                            id: rel,
                            text,
                            metadata,
                        }))
                    }
                    Err(_) => Some(Err(PartitionError::InvalidUtf8 {
                        path: file,
                        line: 0,
                    })),
                }
            }
            #[cfg(feature = "parquet")]
            Inner::Parquet(p) => p.next(),
        }
    }
}

fn parse_record(line: &str, path: &Path, lineno: u64, options: &ReaderOptions) -> Result<Document> {
    let malformed = |message: String| PartitionError::MalformedRecord {
        path: path.into(),
        line: lineno,
        message,
    };
    let value: Value = serde_json::from_str(line).map_err(|e| malformed(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(malformed("expected a JSON object".into()));
    };
    let text = match obj.remove(&options.text_field) {
        Some(Value::String(s)) => s,
        _ => {
            return Err(PartitionError::MissingText {
                path: path.into(),
                line: lineno,
                field: options.text_field.clone(),
            });
        }
    };
    let id = match obj.remove(&options.id_field) {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => format!("{}:{}", path.display(), lineno),
    };
    let mut metadata = match obj.remove("metadata") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (k, v) in obj {
        metadata.entry(k).or_insert(v);
    }
    Ok(Document { id, text, metadata })
}

impl Iterator for SourceReader {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            match self.read_next() {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Ok(mut doc)) => {
                    if let Some(d) = &self.source.domain {
                        doc.metadata
                            .entry("domain")
                            .or_insert_with(|| Value::String(d.clone()));
                    }
                    return Some(Ok(doc));
                }
                Some(Err(e)) => {
                    let recoverable = matches!(
                        e,
                        PartitionError::MalformedRecord { .. }
                            | PartitionError::MissingText { .. }
                            | PartitionError::InvalidUtf8 { .. }
                    );
                    if recoverable && self.options.bad_records == BadRecordPolicy::Skip {
                        self.skipped += 1;
                        tracing::warn!("skipping: {e}");
                        continue;
                    }
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        assert_eq!(
            format_of(Path::new("a/b.jsonl.zst")),
            Some(SourceFormat::Jsonl)
        );
        assert_eq!(format_of(Path::new("b.json.gz")), Some(SourceFormat::Jsonl));
        assert_eq!(format_of(Path::new("b.txt")), Some(SourceFormat::Text));
        assert_eq!(
            format_of(Path::new("b.parquet")),
            Some(SourceFormat::Parquet)
        );
        assert_eq!(format_of(Path::new("b.bin")), None);
        assert_eq!(
            file_stem_domain(Path::new("x/books.txt.gz")).as_deref(),
            Some("books")
        );
    }

    #[test]
    fn record_merges_top_level_fields_into_metadata() {
        let o = ReaderOptions::default();
        let d = parse_record(
            r#"{"id":7,"text":"hi","source":"s","metadata":{"domain":"a","source":"m"}}"#,
            Path::new("f"),
            1,
            &o,
        )
        .unwrap();
        assert_eq!(d.id, "7");
        assert_eq!(d.text, "hi");
        assert_eq!(d.metadata["domain"], "a");
        assert_eq!(d.metadata["source"], "m");
        let e = parse_record(r#"{"id":1}"#, Path::new("f.jsonl"), 3, &o).unwrap_err();
        assert!(e.to_string().contains("f.jsonl:3"), "{e}");
    }
}
