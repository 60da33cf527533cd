//! Tokenize + pack throughput, driven by `benches/partition.sh` at the workspace root.
//!
//! `cargo bench -p datamix-partition --bench partition -- --input F.jsonl --tokenizer T.json --threads 2 [--repeat 2]`
//!
//! Prints the full pipeline's MB/s of input text (read, hash, tokenize, cache, pack, write
//! shards and manifest; cold cache) and the raw `tokenizers` batch-encode MB/s on the same
//! texts already in memory; each the best of `--repeat` runs from a cold tokenizer.
//!
//! Like the `datamix` binary, the bench uses mimalloc: `tokenizers` allocates a few small
//! buffers per token, and glibc malloc/free took ~38% of a profile of this bench.

use std::path::PathBuf;
use std::time::Instant;

use datamix_partition::*;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut input, mut tokenizer, mut threads, mut repeat) = (None, None, 2usize, 2usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--input" => input = args.next().map(PathBuf::from),
            "--tokenizer" => tokenizer = args.next().map(PathBuf::from),
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|t| t.parse().ok())
                    .expect("--threads N")
            }
            "--repeat" => {
                repeat = args
                    .next()
                    .and_then(|t| t.parse().ok())
                    .expect("--repeat N")
            }
            _ => {} // cargo passes --bench
        }
    }
    let (Some(input), Some(tok_path)) = (input, tokenizer) else {
        eprintln!("usage: partition --input F.jsonl --tokenizer tokenizer.json [--threads N]");
        return;
    };
    // A fresh tokenizer per measurement: its BPE word cache starts cold every time.
    let load = || TextTokenizer::from_file(&tok_path, DEFAULT_EOT).expect("tokenizer");
    let sources = CorpusSource::discover(&input).expect("input");
    let texts: Vec<String> = sources
        .iter()
        .flat_map(|s| {
            s.open(&ReaderOptions::default())
                .unwrap()
                .map(|d| d.unwrap().text)
        })
        .collect();
    let mb = texts.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = PartitionConfig {
        seq_len: 1024,
        unit_tokens: 1 << 20,
        heldout_fraction: 0.0,
        threads: Some(threads),
        progress: false,
        ..Default::default()
    };
    let (mut raw_best, mut cold_best) = (f64::INFINITY, f64::INFINITY);
    for rep in 0..repeat {
        // Raw encode: the tokenizers crate as shipped (default settings), its own batch
        // API, texts already in memory.
        let tok = tokenizers::Tokenizer::from_file(&tok_path).expect("tokenizer");
        let t0 = Instant::now();
        let ntok: usize = pool.install(|| {
            texts
                .chunks(1024)
                .map(|c| {
                    tok.encode_batch_fast(c.iter().map(|s| s.as_str()).collect(), false)
                        .unwrap()
                })
                .map(|e| e.iter().map(|x| x.len()).sum::<usize>())
                .sum()
        });
        let raw = t0.elapsed().as_secs_f64();
        raw_best = raw_best.min(raw);
        println!(
            "rust_raw_encode[{rep}]: {mb:.2} MB, {ntok} tokens, {raw:.2} s, {:.2} MB/s",
            mb / raw
        );

        // Full pipeline, cold cache: read, hash, tokenize, cache, pack, write.
        let cache = dir.path().join(format!("cache{rep}"));
        let part = Partitioner::new(cfg.clone(), load())
            .unwrap()
            .with_cache_dir(&cache);
        let t0 = Instant::now();
        let m = part
            .run(&sources, &dir.path().join("out"))
            .expect("pipeline");
        let cold = t0.elapsed().as_secs_f64();
        cold_best = cold_best.min(cold);
        let tokens: u64 = m.domains.iter().map(|d| d.tokens).sum();
        println!(
            "rust_tokenize_pack[{rep}]: {mb:.2} MB, {tokens} tokens (incl. EOT), {cold:.2} s, {:.2} MB/s",
            mb / cold
        );
        if rep == 0 {
            let t0 = Instant::now();
            part.run(&sources, &dir.path().join("out"))
                .expect("pipeline");
            let warm = t0.elapsed().as_secs_f64();
            println!(
                "rust_pack_cached: {warm:.2} s ({:.1} MB/s of text)",
                mb / warm
            );
        }
    }
    println!("rust_raw_encode_mb_s={:.4}", mb / raw_best);
    println!("rust_pipeline_mb_s={:.4}", mb / cold_best);
}
