//! Timing of the gemm crate's `f32` products, shared by the benches.

use std::time::Instant;

/// The best of `reps` timings (seconds) of `C[m, n] = A[m, k] B[k, n]`, row-major, with
/// every element of A equal to 1 and of B to 0.5 (so every element of C is `k / 2`), and
/// the product. `ta`/`tb` read A/B transposed from `[k, m]`/`[n, k]` buffers, as the
/// backward products do.
pub fn best_gemm(
    (m, k, n): (usize, usize, usize),
    (ta, tb): (bool, bool),
    reps: usize,
    threads: gemm::Parallelism,
) -> (f64, Vec<f32>) {
    let (a, b) = (vec![1.0f32; m * k], vec![0.5f32; k * n]);
    let mut c = vec![0.0f32; m * n];
    let (a_rs, a_cs) = if ta { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if tb { (1, k) } else { (n, 1) };
    let best = (0..reps)
        .map(|_| {
            let t = Instant::now();
            // SAFETY: `c` is `m x n` with row stride `n`; `a` and `b` hold `m k` and `k n`
            // elements, read through the strides above, all within bounds.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    a_cs as isize,
                    a_rs as isize,
                    b.as_ptr(),
                    b_cs as isize,
                    b_rs as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    threads,
                )
            };
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    (best, c)
}
