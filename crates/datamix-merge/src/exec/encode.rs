//! Encoding `f64` accumulators into little-endian output dtypes (`f32`
//! with run-time-detected AVX-512 / AVX2). Knows dtypes and bytes only.

use multiversion::multiversion;
use safetensors::Dtype;

/// Writes `acc` into `dst` as little-endian `dtype` (a float dtype).
pub(super) fn encode(acc: &[f64], dtype: Dtype, dst: &mut [u8]) {
    pub(super) fn go<const N: usize>(acc: &[f64], dst: &mut [u8], f: impl Fn(f64) -> [u8; N]) {
        let (chunks, _) = dst.as_chunks_mut::<N>();
        chunks.iter_mut().zip(acc).for_each(|(c, &a)| *c = f(a));
    }
    match dtype {
        Dtype::F64 => go(acc, dst, f64::to_le_bytes),
        Dtype::BF16 => go(acc, dst, |a| half::bf16::from_f64(a).to_le_bytes()),
        Dtype::F16 => go(acc, dst, |a| half::f16::from_f64(a).to_le_bytes()),
        _ => encode_f32(acc, dst),
    }
}

/// Writes `acc` into `dst` as little-endian `f32`, with AVX-512 or AVX2 where
/// the CPU has them (`multiversion` clones, detected at run time; ~2-4% of an
/// in-memory merge, docs/bench-merge.md). Every path rounds to nearest even, as
/// `as f32` does.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
pub(super) fn encode_f32(acc: &[f64], dst: &mut [u8]) {
    let (chunks, _) = dst.as_chunks_mut::<4>();
    chunks
        .iter_mut()
        .zip(acc)
        .for_each(|(c, &a)| *c = (a as f32).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_encoding_rounds_like_a_cast_on_every_path() {
        let mut acc: Vec<f64> = (0..1037).map(|i| (i as f64 - 500.0) / 3.0).collect();
        acc.extend([
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
            1e300,
            -1e-300,
            f32::MIN_POSITIVE as f64 / 3.0,
            1.0 + f64::EPSILON,
            // Halfway between two f32: rounds to the even one.
            1.0 + f32::EPSILON as f64 / 2.0,
        ]);
        let mut dst = vec![0u8; acc.len() * 4 + 4];
        encode(&acc, Dtype::F32, &mut dst);
        for (i, (c, &a)) in dst.chunks(4).zip(&acc).enumerate() {
            let got = f32::from_le_bytes(c.try_into().unwrap());
            assert_eq!(got.to_bits(), (a as f32).to_bits(), "element {i}: {a}");
        }
        assert_eq!(
            dst[acc.len() * 4..],
            [0; 4],
            "writes nothing past the input"
        );
    }
}
