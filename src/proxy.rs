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
    ProxyMerger::new().model::<B>(plan, resolver, config, device)
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
    ProxyMerger::new().evaluate::<B>(plan, resolver, config, streams, eval, device)
}

/// Builds the proxies of many candidate mixtures one after another, merging each into
/// the buffers of the one before ([`Merger::merge_into`]): scoring a series of
/// mixtures then allocates, page-faults and zeroes one output model instead of one per
/// mixture. A plan of another layout (other tensors or shapes) gets fresh buffers.
#[derive(Debug, Default)]
pub struct ProxyMerger {
    last: Option<MergedTensors>,
}

impl ProxyMerger {
    /// A merger with no buffers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges `plan` and loads the result as a decoder of `config`.
    pub fn model<B: Backend>(
        &mut self,
        plan: &MergePlan,
        resolver: &impl Resolver,
        config: &DecoderConfig,
        device: &B::Device,
    ) -> Result<Decoder<B>> {
        let merger = Merger::linear().hash_inputs(false);
        let merged = match &mut self.last {
            Some(out) => {
                merger.merge_into(plan, resolver, out)?;
                out
            }
            None => self.last.insert(merger.merge(plan, resolver)?),
        };
        let host = merged_to_host(merged)?;
        Ok(config.init_from_host(&host, Path::new("<merged plan>"), device)?)
    }

    /// Merges `plan` and evaluates the proxy on every named stream.
    pub fn evaluate<B: Backend>(
        &mut self,
        plan: &MergePlan,
        resolver: &impl Resolver,
        config: &DecoderConfig,
        streams: &[(String, Vec<u32>)],
        eval: &EvalConfig,
        device: &B::Device,
    ) -> Result<Vec<(String, EvalResult)>> {
        let model = self.model::<B>(plan, resolver, config, device)?;
        streams
            .iter()
            .map(|(name, tokens)| Ok((name.clone(), evaluate(&model, tokens, eval, device)?)))
            .collect()
    }
}

#[cfg(all(test, feature = "cpu"))]
mod tests {
    use burn::backend::Flex;
    use datamix_decoder::checkpoint::save_weights;
    use datamix_merge::PathsOnly;

    use super::*;

    #[test]
    fn reused_buffers_give_the_same_proxies_as_fresh_merges() {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let config = DecoderConfig::preset("tiny", 64)
            .unwrap()
            .with_max_seq_len(16);
        let paths: Vec<_> = (0..3)
            .map(|seed| {
                let path = dir.path().join(format!("unit{seed}.safetensors"));
                let model = config.init_seeded::<Flex>(seed, &device).unwrap();
                save_weights(&model, &config, &path).unwrap();
                path
            })
            .collect();
        let plans = [
            MergePlan::weighted([(paths[0].clone(), 0.7), (paths[1].clone(), 0.3)]),
            MergePlan::uniform(paths.iter().cloned()),
            MergePlan::uniform([paths[2].clone()]),
        ];
        let streams = vec![(
            "s".to_string(),
            (0..100).map(|i| (i * 7 % 64) as u32).collect(),
        )];
        let eval = EvalConfig::new(16);
        let mut merger = ProxyMerger::new();
        for plan in &plans {
            let reused =
                merger.evaluate::<Flex>(plan, &PathsOnly, &config, &streams, &eval, &device);
            let fresh =
                evaluate_merged::<Flex>(plan, &PathsOnly, &config, &streams, &eval, &device);
            assert_eq!(reused.unwrap()[0].1.logprobs, fresh.unwrap()[0].1.logprobs);
        }
        // A bad plan fails and leaves the buffers usable.
        let missing = MergePlan::uniform([dir.path().join("missing.safetensors")]);
        assert!(
            merger
                .model::<Flex>(&missing, &PathsOnly, &config, &device)
                .is_err()
        );
        let again =
            merger.evaluate::<Flex>(&plans[0], &PathsOnly, &config, &streams, &eval, &device);
        let fresh =
            evaluate_merged::<Flex>(&plans[0], &PathsOnly, &config, &streams, &eval, &device);
        assert_eq!(again.unwrap()[0].1.logprobs, fresh.unwrap()[0].1.logprobs);
    }
}
