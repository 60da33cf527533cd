//! Merge-then-evaluate: build the merged proxy of a candidate mixture in
//! memory (datamix-merge) and score it on token streams (datamix-decoder),
//! writing nothing unless asked.

use std::path::Path;

use burn::tensor::backend::Backend;
use datamix_decoder::checkpoint::{HostTensor, TensorMap};
use datamix_decoder::{Decoder, DecoderConfig, EvalConfig, EvalResult, evaluate};
use datamix_merge::{MergePlan, MergedTensors, Merger, Resolver};

use crate::error::{Error, Result};

/// Converts an in-memory merge result to the decoder's host tensors.
pub fn merged_to_host(merged: &MergedTensors) -> Result<TensorMap> {
    merged
        .tensors()
        .iter()
        .map(|t| {
            let data = t.as_f32().ok_or_else(|| {
                Error::Invalid(format!(
                    "merged tensor `{}` is not a float tensor",
                    t.name()
                ))
            })?;
            Ok((
                t.name().to_string(),
                HostTensor {
                    shape: t.shape().to_vec(),
                    data: data.to_vec(),
                },
            ))
        })
        .collect()
}

/// Merges `plan` in memory and loads the result as a decoder of `config`.
pub fn merge_model<B: Backend>(
    plan: &MergePlan,
    resolver: &impl Resolver,
    config: &DecoderConfig,
    device: &B::Device,
) -> Result<Decoder<B>> {
    let merged = Merger::linear().hash_inputs(false).merge(plan, resolver)?;
    let host = merged_to_host(&merged)?;
    Ok(config.init_from_host(&host, Path::new("<merged plan>"), device)?)
}

/// Merges `plan` in memory and evaluates the proxy on every named stream.
pub fn evaluate_merged<B: Backend>(
    plan: &MergePlan,
    resolver: &impl Resolver,
    config: &DecoderConfig,
    streams: &[(String, Vec<u32>)],
    eval: &EvalConfig,
    device: &B::Device,
) -> Result<Vec<(String, EvalResult)>> {
    let model = merge_model::<B>(plan, resolver, config, device)?;
    streams
        .iter()
        .map(|(name, tokens)| Ok((name.clone(), evaluate(&model, tokens, eval, device)?)))
        .collect()
}
