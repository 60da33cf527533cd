//! `datamix eval`: models (run folders of `datamix train`, or pool entries) scored on eval
//! sets; the per-token log-probabilities written as MDE tables, one per eval domain, with
//! the models as experts (the input of `datamix mde`).

use std::path::PathBuf;

use datamix::Result;
use datamix::decoder::BackendKind;
use datamix::single::{EvalSpec, eval};

use super::common::{Outputs, csv_field, user};

const EXAMPLE: &str = "\
Examples:
  # Two experts on the held-out split of their corpus and on an out-of-domain set
  datamix eval --model books=runs/books --model code=runs/code \\
      --heldout runs/seed/corpus --eval data/small/eval --out runs/eval

  # Then the MDE loss of any mixture of them, and the MDE optimum
  datamix mde --tables runs/eval/tables --optimize

Writes eval.csv (model, eval_domain, tokens, ce, perplexity) and tables/<eval
domain>.safetensors. Models must share one tokenizer (their folders' tokenizer.json, or
--tokenizer for pool entries).";

/// Arguments of `datamix eval`.
#[derive(clap::Args, Debug)]
#[command(after_help = EXAMPLE)]
pub struct EvalArgs {
    /// A model folder, NAME=DIR or DIR (named after the folder); repeatable.
    #[arg(long = "model", value_name = "[NAME=]DIR", required = true)]
    pub models: Vec<String>,
    /// A tokenizer.json for folders without one (pool entries).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Eval files or folders (one eval domain per file).
    #[arg(long = "eval", value_name = "PATH")]
    pub eval_sets: Vec<PathBuf>,
    /// End-task files or folders (JSONL of context + answer, or choices): answer tokens only.
    #[arg(long = "tasks", value_name = "PATH")]
    pub task_sets: Vec<PathBuf>,
    /// A packed corpus: the held-out split of each of its domains is an eval domain.
    #[arg(long, value_name = "DIR")]
    pub heldout: Option<PathBuf>,
    /// Tokens scored per eval domain at most.
    #[arg(long, default_value_t = 16384)]
    pub eval_tokens: usize,
    /// Tokens of context per scored window [default: the sequence length the models
    /// trained on].
    #[arg(long)]
    pub window: Option<usize>,
    /// Backend (one of the compiled-in: see `datamix backends`).
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// Output folder (eval.csv, tables/); without it, results are only printed.
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `NAME=DIR`, or `DIR` named after its last component.
fn model(text: &str) -> Result<(String, PathBuf)> {
    if let Some((name, dir)) = text.split_once('=')
        && !name.is_empty()
        && !name.contains('/')
    {
        return Ok((name.to_string(), PathBuf::from(dir)));
    }
    let dir = PathBuf::from(text);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| user(format!("--model `{text}`: expected [NAME=]DIR")))?;
    Ok((name, dir))
}

/// Runs `datamix eval`.
pub fn run(a: &EvalArgs) -> Result<()> {
    let spec = EvalSpec {
        models: a.models.iter().map(|m| model(m)).collect::<Result<_>>()?,
        tokenizer: a.tokenizer.clone(),
        eval_sets: a.eval_sets.clone(),
        task_sets: a.task_sets.clone(),
        heldout: a.heldout.clone(),
        eval_tokens: a.eval_tokens,
        window: a.window,
        backend: a.backend,
    };
    let o = eval(&spec)?;
    let mut csv = String::from("model,eval_domain,tokens,ce,perplexity\n");
    println!(
        "{:<16} {:<20} {:>8} {:>9} {:>11}",
        "model", "eval domain", "tokens", "CE", "perplexity"
    );
    for r in &o.rows {
        println!(
            "{:<16} {:<20} {:>8} {:>9.4} {:>11.2}",
            r.model, r.eval_domain, r.tokens, r.ce, r.perplexity
        );
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            csv_field(&r.model),
            csv_field(&r.eval_domain),
            r.tokens,
            r.ce,
            r.perplexity
        ));
    }
    if let Some(dir) = &a.out {
        let mut out = Outputs::default();
        out.add("eval.csv", csv);
        out.write(dir)?;
        let tables = dir.join("tables");
        std::fs::create_dir_all(&tables).map_err(|e| datamix::Error::io(&tables, e))?;
        for t in &o.tables {
            t.save(tables.join(format!("{}.safetensors", t.eval_domain())))?;
        }
        println!(
            "\nWrote {} and {} MDE table(s) in {}",
            dir.join("eval.csv").display(),
            o.tables.len(),
            tables.display()
        );
    }
    Ok(())
}
