//! `datamix train`: one model on a corpus or a mixture of its domains (from scratch or
//! continued from a checkpoint); the run folder it writes is what `datamix eval` scores.

use std::path::PathBuf;

use datamix::Result;
use datamix::decoder::BackendKind;
use datamix::single::{TrainData, TrainSpec, train};

use super::common::{key_value, user};

const EXAMPLE: &str = "\
Examples:
  # A seed model on the uniform mixture of the corpus' domains (one domain per file)
  datamix train --corpus data/small/corpus --steps 300 --out runs/seed

  # Domain experts continued from it on the seed's packed corpus (same tokenizer)
  datamix train --packed runs/seed/corpus --init runs/seed --mixture books=1 --steps 60 --out runs/books
  datamix train --packed runs/seed/corpus --init runs/seed --mixture rust_code=1 --steps 60 --out runs/code

  # Then: their log-probabilities on eval sets, as MDE tables (see `datamix eval --help`)
  datamix eval --model books=runs/books --model code=runs/code --heldout runs/seed/corpus --out runs/eval

The run folder holds the trainer checkpoint (config.json, model.safetensors,
optimizer.safetensors, trainer.json), tokenizer.json, train.csv (step, loss, lr, grad_norm),
the packed corpus (corpus/, with --corpus) and run.json (written last: mixture, settings,
held-out cross-entropy per domain).";

/// Arguments of `datamix train`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLE)]
pub struct TrainArgs {
    /// Raw text to pack (a file or a folder, one domain per file: JSONL, text, Parquet).
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "packed",
        conflicts_with = "packed"
    )]
    pub corpus: Option<PathBuf>,
    /// A packed corpus (a study's out_dir/corpus, another run's corpus/).
    #[arg(long, value_name = "DIR")]
    pub packed: Option<PathBuf>,
    /// A tokenizer.json to pack --corpus with, instead of training a byte-level BPE.
    #[arg(long, value_name = "FILE", conflicts_with = "packed")]
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary of the trained tokenizer.
    #[arg(long, default_value_t = 2048)]
    pub vocab_size: usize,
    /// Tokens per training sequence (with --corpus; a packed corpus has its own).
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Share of each domain's documents held out for evaluation (with --corpus).
    #[arg(long, default_value_t = 0.1)]
    pub heldout_fraction: f64,
    /// Domain weight, DOMAIN=W (repeatable; normalised; default: uniform).
    #[arg(long = "mixture", value_name = "DOMAIN=W", value_delimiter = ',')]
    pub mixture: Vec<String>,
    /// Decoder preset: tiny, small, m70, m130, m1b (not used with --init).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Continue from a trainer checkpoint: a run folder or a study's pool entry.
    #[arg(long, value_name = "DIR")]
    pub init: Option<PathBuf>,
    /// Optimizer steps.
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 30)]
    pub warmup: u64,
    /// Seed of the initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens scored per domain on the held-out split after training.
    #[arg(long, default_value_t = 16384)]
    pub eval_tokens: usize,
    /// Backend (one of the compiled-in: see `datamix backends`).
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// The run folder (refused if it holds a finished run).
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
}

/// Runs `datamix train`.
pub fn run(a: &TrainArgs) -> Result<()> {
    let data = match (&a.corpus, &a.packed) {
        (Some(c), None) => TrainData::Text {
            corpus: c.clone(),
            tokenizer: a.tokenizer.clone(),
            vocab_size: a.vocab_size,
            seq_len: a.seq_len,
            heldout_fraction: a.heldout_fraction,
        },
        (None, Some(p)) => TrainData::Packed(p.clone()),
        _ => return Err(user("give --corpus or --packed")),
    };
    let mixture = if a.mixture.is_empty() {
        None
    } else {
        Some(
            a.mixture
                .iter()
                .map(|m| key_value("--mixture", m))
                .collect::<Result<Vec<_>>>()?,
        )
    };
    let spec = TrainSpec {
        data,
        mixture,
        preset: a.preset.clone(),
        init: a.init.clone(),
        steps: a.steps,
        batch_size: a.batch_size,
        lr: a.lr,
        warmup_steps: a.warmup,
        seed: a.seed,
        eval_tokens: a.eval_tokens,
        backend: a.backend,
        out: a.out.clone(),
    };
    let r = train(&spec)?;
    println!(
        "Trained {} steps ({} tokens, {:.1} s) on {} → {} (final training loss {:.4})",
        r.train.total_steps,
        r.tokens,
        r.seconds,
        r.mixture
            .iter()
            .filter(|(_, w)| *w > 0.0)
            .map(|(d, w)| format!("{d}={w:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
        a.out.display(),
        r.final_loss
    );
    println!(
        "\n{:<16} {:>8} {:>9} {:>11}",
        "held-out", "tokens", "CE", "perplexity"
    );
    for h in &r.heldout {
        println!(
            "{:<16} {:>8} {:>9.4} {:>11.2}",
            h.eval_domain, h.tokens, h.ce, h.perplexity
        );
    }
    Ok(())
}
