//! Train the `tiny` decoder on the built-in small corpus and print per-domain held-out
//! cross-entropy: the decoder, the partitioner and the sampler in ~60 lines.
//!
//! ```sh
//! ./scripts/fetch-corpus.sh --small
//! cargo run --release --example quickstart [-- data/small/corpus]
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use datamix::decoder::backend::Cpu;
use datamix::decoder::{DecoderConfig, EvalConfig, Packer, TrainConfig, Trainer, evaluate};
use datamix::partition::{
    CorpusSource, DEFAULT_EOT, Mixture, MixtureSampler, PackedCorpus, PartitionConfig, Partitioner,
    ReaderOptions, train_tokenizer,
};

type B = burn::backend::Autodiff<Cpu>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus_dir: PathBuf = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/small/corpus".into())
        .into();
    let out = std::env::temp_dir().join("datamix-quickstart");
    let sources = CorpusSource::discover(&corpus_dir)?;
    let tok = train_tokenizer(
        &sources,
        &ReaderOptions::default(),
        1024,
        DEFAULT_EOT,
        u64::MAX,
    )?;
    let seq = 128;
    let cfg = PartitionConfig {
        seq_len: seq,
        unit_tokens: 1 << 16,
        heldout_fraction: 0.15,
        ..Default::default()
    };
    let manifest = Partitioner::new(cfg, tok.clone())?.run(&sources, &out)?;
    println!("{}", manifest.report());
    let corpus = Arc::new(PackedCorpus::open(&out)?);

    let device = Default::default();
    let model = DecoderConfig::preset("tiny", tok.vocab_size())?;
    let steps = 300;
    let train = TrainConfig {
        batch_size: 8,
        seq_len: seq,
        lr: 3e-3,
        warmup_steps: 30,
        total_steps: steps,
        ..Default::default()
    };
    let mut trainer = Trainer::<B>::new(model, train, &device)?;
    let uniform = Mixture::from_weights(&corpus, &vec![1.0; manifest.domains.len()])?;
    let budget = steps * 8 * seq as u64 + seq as u64;
    let mut packer = Packer::new(
        MixtureSampler::new(corpus.clone(), &uniform, budget, 0)?,
        8,
        seq,
    );
    let t0 = std::time::Instant::now();
    trainer.fit(&mut packer, steps, |s| {
        if s.step % 50 == 0 {
            println!("step {:4}  loss {:.3}  lr {:.2e}", s.step, s.loss, s.lr);
        }
    })?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{:.0} training tokens/s",
        (steps * 8 * seq as u64) as f64 / secs
    );

    let model = trainer.inference_model();
    println!("\n{:<14} {:>8} {:>10}", "domain", "CE", "perplexity");
    for d in &manifest.domains {
        let tokens: Vec<u32> = corpus
            .heldout(&d.name)
            .into_iter()
            .flatten()
            .flat_map(|s| s.to_vec())
            .collect();
        if tokens.len() < 2 {
            continue;
        }
        let r = evaluate(&model, &tokens, &EvalConfig::new(seq), &device)?;
        println!("{:<14} {:>8.3} {:>10.1}", d.name, r.mean_ce, r.perplexity);
    }
    Ok(())
}
