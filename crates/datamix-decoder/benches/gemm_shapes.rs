//! Whether PaLM's fused projections would pay on the CPU: the `small` preset's per-layer
//! matrix products (2048 rows = batch 8 x seq 256, d 256, one 32-wide key/value head,
//! SwiGLU hidden 1024) timed as the decoder runs them (one gemm per weight) and fused
//! (the five input projections `q k v gate up` as one `[256, 2368]` weight, the two output
//! projections as one `[1280, 256]`), forward and both backward products, on the gemm
//! crate `flex` and the fused ops use.
//!
//! `cargo bench -p datamix-decoder --bench gemm_shapes` (2 threads, best of 30 per product;
//! docs/benchmarks.md quotes a run).

mod common;

/// Prints the summed best time and rate of a set of products.
fn report(name: &str, products: &[((usize, usize, usize), bool, bool)]) {
    let (mut secs, mut flops) = (0.0, 0.0);
    for &(shape @ (m, k, n), ta, tb) in products {
        secs += common::best_gemm(shape, (ta, tb), 30, gemm::Parallelism::Rayon(2)).0;
        flops += 2.0 * (m * k * n) as f64;
    }
    println!(
        "{name:34} {:7.2} ms {:6.1} GFLOP/s",
        secs * 1e3,
        flops / secs / 1e9
    );
}

/// One product per width in `ns`, shaped by `shape`.
fn each(
    ns: &[usize],
    shape: impl Fn(usize) -> (usize, usize, usize),
    ta: bool,
    tb: bool,
) -> Vec<((usize, usize, usize), bool, bool)> {
    ns.iter().map(|&n| (shape(n), ta, tb)).collect()
}

fn main() {
    let (rows, d, hidden) = (2048, 256, 1024);
    // Output widths of the input projections and input widths of the output projections.
    let ins = [d, 32, 32, hidden, hidden];
    let outs = [d, hidden];
    let (fused_in, fused_out) = (ins.iter().sum::<usize>(), d + hidden);
    // (m, k, n) of Y = X W, dX = dY Wᵀ and dW = Xᵀ dY.
    let cases = [
        (
            "forward, input projections x5",
            each(&ins, |n| (rows, d, n), false, false),
        ),
        (
            "forward, input projections fused",
            vec![((rows, d, fused_in), false, false)],
        ),
        (
            "forward, output projections x2",
            each(&outs, |k| (rows, k, d), false, false),
        ),
        (
            "forward, output projections fused",
            vec![((rows, fused_out, d), false, false)],
        ),
        (
            "dX, input projections x5",
            each(&ins, |n| (rows, n, d), false, true),
        ),
        (
            "dX, input projections fused",
            vec![((rows, fused_in, d), false, true)],
        ),
        (
            "dX, output projections x2",
            each(&outs, |k| (rows, d, k), false, true),
        ),
        (
            "dX, output projections fused",
            vec![((rows, d, fused_out), false, true)],
        ),
        (
            "dW, input projections x5",
            each(&ins, |n| (d, rows, n), true, false),
        ),
        (
            "dW, input projections fused",
            vec![((d, rows, fused_in), true, false)],
        ),
        (
            "dW, output projections x2",
            each(&outs, |k| (k, rows, d), true, false),
        ),
        (
            "dW, output projections fused",
            vec![((fused_out, rows, d), true, false)],
        ),
        ("peak, 2048^3", vec![((2048, 2048, 2048), false, false)]),
    ];
    for (name, products) in &cases {
        report(name, products);
    }
}
