//! The `datamix` command. It owns argument parsing and logging only; every piece of
//! work is a call into the `datamix` facade.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use datamix::decoder::BackendKind;

// Burn allocates and frees large tensor buffers every step; glibc malloc hands them back
// to the OS and page-faults them in again (about 20% of a CPU training step).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its index in `mi_option_e`, mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed pages in the process instead of purging them back to the OS after
/// mimalloc's delay (1 s). A training step frees and reallocates the same large tensor
/// buffers every step; purged, they come back as fresh (huge) pages that the kernel must
/// zero: 30% of a CPU step and 1.5x the step time measured (docs/benchmarks.md). The
/// cost: the process keeps its peak heap until it exits, as PyTorch's allocator does.
fn keep_freed_pages() {
    // SAFETY: sets one process-wide integer option, before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// Find good pre-training data mixtures without training a model for every mixture.
///
/// A study splits a multi-domain corpus into equal-sized base units, pre-trains a seed
/// model, continues it once per base unit and once per domain (the model pool), trains a
/// few ground-truth mixtures, and then scores any mixture cheaply: by merging base-unit
/// models (Na et al. 2024) and by Mixture of Data Experts (Belenki et al. 2025). It fits
/// regression models on those proxies and recommends a mixture.
#[derive(Parser, Debug)]
#[command(name = "datamix", version, about, long_about)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax, e.g. `debug` or `datamix=debug`);
    /// overrides RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the study variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    Study(cmd::study::StudyCmd),
    /// List the backends compiled into this binary.
    Backends,
    /// Fit regressions to a swarm of trained mixtures (ratios + measured metrics), compare
    /// the families cross-validated, save the model and recommend a mixture under constraints.
    Fit(Box<cmd::fit::FitArgs>),
    /// Search a model saved by `datamix fit` again under other constraints, or propose the
    /// next batch of mixtures to train.
    Search(Box<cmd::search::SearchArgs>),
    /// MDE losses of mixtures from expert log-probability tables (one per eval domain), and
    /// the exact MDE optimum.
    Mde(Box<cmd::mde::MdeArgs>),
    /// Merge safetensors checkpoints by a TOML or YAML plan (models, weights, method: linear,
    /// task arithmetic, TIES or SLERP; output dtype).
    Merge(Box<cmd::merge::MergeArgs>),
    /// Train one model on a corpus or a mixture of its domains, from scratch or continued
    /// from a checkpoint.
    Train(Box<cmd::train::TrainArgs>),
    /// Score models on eval sets; write their per-token log-probabilities as MDE tables.
    Eval(Box<cmd::eval::EvalArgs>),
}

fn main() -> ExitCode {
    keep_freed_pages();
    let cli = Cli::parse();
    let filter = cli
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> datamix::Result<()> {
    match command {
        Command::Study(cmd) => cmd::study::run(cmd),
        Command::Backends => {
            for k in BackendKind::available() {
                println!("{k}");
            }
            Ok(())
        }
        Command::Fit(args) => cmd::fit::run(&args),
        Command::Search(args) => cmd::search::run(&args),
        Command::Mde(args) => cmd::mde::run(&args),
        Command::Merge(args) => cmd::merge::run(&args),
        Command::Train(args) => cmd::train::run(&args),
        Command::Eval(args) => cmd::eval::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the magic index across mimalloc upgrades: option 15 must be the purge
    /// delay, whose default is 1000 ms in mimalloc 3 (10 ms in mimalloc 2).
    #[test]
    fn option_15_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment overrides the default being checked
        }
        // SAFETY: reads one option.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert!(
            default == 1000 || default == 10,
            "purge delay default {default}"
        );
        keep_freed_pages();
        // SAFETY: as above.
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(after, -1);
    }
}
