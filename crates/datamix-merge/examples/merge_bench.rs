//! Benchmark driver for `benches/merge.sh` (not a library example):
//!
//! - `gen DIR N`: write N random Llama-shaped checkpoints of ~134M f32
//!   parameters as `DIR/m{i}/model.safetensors` with a Hugging Face
//!   `config.json` (so mergekit accepts them).
//! - `readbw FILE...`: hot-cache sequential read bandwidth, three ways:
//!   `read(2)` into a page-aligned 1 MiB buffer (as `dd bs=1M`), one file
//!   after another on one thread and a file per thread on all threads, and
//!   touching every byte of the memory-mapped files on all threads.
//! - `writebw FILE OUT`: the disk's write floor for one output: copy FILE
//!   (hot in the page cache) to OUT with 4 MiB `write(2)`s, then `fsync`.
//! - `merge OUT FILE... [--bf16] [--no-hash] [--huge] [--mem [--reuse=REPS]] [--batch-mb=N]`: uniform linear merge
//!   with datamix, to OUT (or in memory with `--mem`), timed; `--reuse=REPS`
//!   then times REPS more in-memory merges into the first one's buffers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use datamix_merge::{MergePlan, Merger, OutDtype, PathsOnly};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use safetensors::{Dtype, tensor::TensorView};

const HIDDEN: usize = 768;
const INTER: usize = 2048;
const LAYERS: usize = 12;
const VOCAB: usize = 32000;

fn shapes() -> Vec<(String, Vec<usize>)> {
    let mut v = vec![("model.embed_tokens.weight".into(), vec![VOCAB, HIDDEN])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for m in ["q", "k", "v", "o"] {
            v.push((
                format!("{p}.self_attn.{m}_proj.weight"),
                vec![HIDDEN, HIDDEN],
            ));
        }
        v.push((format!("{p}.mlp.gate_proj.weight"), vec![INTER, HIDDEN]));
        v.push((format!("{p}.mlp.up_proj.weight"), vec![INTER, HIDDEN]));
        v.push((format!("{p}.mlp.down_proj.weight"), vec![HIDDEN, INTER]));
        v.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN]));
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]));
    }
    v.push(("model.norm.weight".into(), vec![HIDDEN]));
    v.push(("lm_head.weight".into(), vec![VOCAB, HIDDEN]));
    v
}

const CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "hidden_size": 768,
  "intermediate_size": 2048,
  "num_hidden_layers": 12,
  "num_attention_heads": 12,
  "num_key_value_heads": 12,
  "vocab_size": 32000,
  "max_position_embeddings": 2048,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "hidden_act": "silu",
  "tie_word_embeddings": false,
  "torch_dtype": "float32"
}
"#;

fn gen_model(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes()
        .into_par_iter()
        .enumerate()
        .map(|(t, (name, shape))| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed * 1000 + t as u64);
            let n: usize = shape.iter().product();
            let bytes = (0..n)
                .flat_map(|_| rng.random_range(-0.05f32..0.05).to_le_bytes())
                .collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<_> = data
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), &dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
}

fn total_bytes(files: &[PathBuf]) -> u64 {
    files.iter().map(|f| f.metadata().unwrap().len()).sum()
}

/// CPU seconds (user + system) used by this process so far, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 Hz).
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// One page of a page-aligned `read(2)` buffer, as `dd` uses: the kernel's
/// copy into a misaligned buffer (glibc's large blocks start 16 bytes into a
/// page) ran ~2.5x slower here.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// A page-aligned 1 MiB read buffer.
fn read_buffer() -> Vec<Page> {
    vec![Page([0; 4096]); 256]
}

/// Reads `file` to its end with `read(2)` into `buf`; returns a byte of it
/// so the reads are not optimised away.
fn read_all(file: &Path, buf: &mut [Page]) -> u64 {
    // SAFETY: `Page` is plain bytes, so its slice is a valid byte slice.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), buf.len() * 4096) };
    let mut f = std::fs::File::open(file).unwrap();
    let mut sum = 0u64;
    loop {
        let n = f.read(bytes).unwrap();
        if n == 0 {
            return sum;
        }
        sum = sum.wrapping_add(bytes[n - 1] as u64);
    }
}

fn readbw(files: &[PathBuf]) {
    let bytes = total_bytes(files) as f64;
    let cpu = cpu_seconds();
    let start = Instant::now();
    let mut buf = read_buffer();
    let sum: u64 = files.iter().map(|f| read_all(f, &mut buf)).sum();
    let t = start.elapsed().as_secs_f64();
    println!(
        "read(2) 1 thread: {:.2} GB/s ({:.3} s, cpu {:.2} s, {:.2} GB) [{sum}]",
        bytes / t / 1e9,
        t,
        cpu_seconds() - cpu,
        bytes / 1e9
    );

    // `dd bs=1M` on every thread at once, a file per task.
    let cpu = cpu_seconds();
    let start = Instant::now();
    let sum: u64 = files
        .par_iter()
        .map_init(read_buffer, |buf, f| read_all(f, buf))
        .sum();
    let t = start.elapsed().as_secs_f64();
    println!(
        "read(2) all threads: {:.2} GB/s ({:.3} s, cpu {:.2} s) [{sum}]",
        bytes / t / 1e9,
        t,
        cpu_seconds() - cpu
    );

    let cpu = cpu_seconds();
    let start = Instant::now();
    let maps: Vec<_> = files
        .iter()
        .map(|f| {
            // SAFETY: the benchmark's own input files, written before this point and not
            // modified while mapped.
            unsafe { memmap2::Mmap::map(&std::fs::File::open(f).unwrap()).unwrap() }
        })
        .collect();
    let sum: u64 = maps
        .par_iter()
        .flat_map(|m| m.par_chunks(1 << 22))
        .map(|c| {
            let (w, _) = c.as_chunks::<8>();
            w.iter()
                .fold(0u64, |a, x| a.wrapping_add(u64::from_le_bytes(*x)))
        })
        .reduce(|| 0, u64::wrapping_add);
    let t = start.elapsed().as_secs_f64();
    println!(
        "mmap touch all threads: {:.2} GB/s ({:.3} s, cpu {:.2} s) [{sum}]",
        bytes / t / 1e9,
        t,
        cpu_seconds() - cpu
    );
}

fn writebw(file: &Path, out: &Path) {
    use std::io::Write;
    let data = std::fs::read(file).unwrap();
    let cpu = cpu_seconds();
    let start = Instant::now();
    let mut f = std::fs::File::create(out).unwrap();
    for c in data.chunks(4 << 20) {
        f.write_all(c).unwrap();
    }
    f.sync_all().unwrap();
    let t = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(out).unwrap();
    println!(
        "write(2) + fsync of one model: {:.2} GB/s ({:.3} s, cpu {:.2} s, {:.2} GB)",
        data.len() as f64 / t / 1e9,
        t,
        cpu_seconds() - cpu,
        data.len() as f64 / 1e9
    );
}

fn merge(merger: Merger, out: &Path, files: &[PathBuf], args: &[String]) {
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |key: &str| args.iter().find_map(|a| a.strip_prefix(key));
    let mut merger = merger
        .hash_inputs(!flag("--no-hash"))
        .huge_pages(flag("--huge"));
    if let Some(mb) = value("--batch-mb=") {
        merger = merger.batch_bytes(mb.parse::<usize>().unwrap() << 20);
    }
    if flag("--bf16") {
        merger = merger.out_dtype(OutDtype::BF16);
    }
    let plan = MergePlan::uniform(files.to_vec());
    let bytes = total_bytes(files) as f64;
    let start = Instant::now();
    if !flag("--mem") {
        merger.merge_to_file(&plan, &PathsOnly, out).unwrap();
        let t = start.elapsed().as_secs_f64();
        println!(
            "datamix merge of {} inputs ({:.2} GB) to {}: {t:.3} s, {:.2} GB/s of input",
            files.len(),
            bytes / 1e9,
            out.display(),
            bytes / t / 1e9
        );
        return;
    }
    let mut m = merger.merge(&plan, &PathsOnly).unwrap();
    std::hint::black_box(&m);
    let t = start.elapsed().as_secs_f64();
    println!(
        "datamix merge of {} inputs ({:.2} GB) in memory, {} tensors: {t:.3} s, {:.2} GB/s of input",
        files.len(),
        bytes / 1e9,
        m.len(),
        bytes / t / 1e9
    );
    let reps: usize = value("--reuse=").map_or(0, |r| r.parse().unwrap());
    if reps == 0 {
        return;
    }
    // Merges into the first one's buffers, as a study scoring many mixtures
    // does: median wall and CPU time over the repetitions.
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (cpu, start) = (cpu_seconds(), Instant::now());
        merger.merge_into(&plan, &PathsOnly, &mut m).unwrap();
        std::hint::black_box(&m);
        walls.push(start.elapsed().as_secs_f64());
        cpus.push(cpu_seconds() - cpu);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (wall, cpu) = (median(&mut walls), median(&mut cpus));
    println!(
        "datamix merge_into reused buffers: median {wall:.3} s, cpu {cpu:.2} s, {:.2} GB/s of input (of {reps}: {walls:.3?})",
        bytes / wall / 1e9
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    match pos.first().map(|s| s.as_str()) {
        Some("gen") => {
            let dir = PathBuf::from(pos[1]);
            let n: u64 = pos[2].parse().unwrap();
            for i in 0..n {
                let start = Instant::now();
                gen_model(&dir.join(format!("m{i}")), i);
                eprintln!("generated m{i} in {:.1} s", start.elapsed().as_secs_f64());
            }
        }
        Some("readbw") => readbw(&pos[1..].iter().map(PathBuf::from).collect::<Vec<_>>()),
        Some("writebw") => writebw(Path::new(pos[1]), Path::new(pos[2])),
        Some("merge") => {
            let out = PathBuf::from(pos[1]);
            let files: Vec<PathBuf> = pos[2..].iter().map(PathBuf::from).collect();
            merge(Merger::linear(), &out, &files, &args);
        }
        _ => {
            eprintln!(
                "usage: merge_bench gen DIR N | readbw FILE... | writebw FILE OUT | merge OUT FILE... [--bf16] [--no-hash] [--huge] [--mem [--reuse=REPS]] [--batch-mb=N]"
            );
            std::process::exit(2);
        }
    }
}
