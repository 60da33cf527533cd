//! A Bloom filter over token n-grams (Kirsch-Mitzenmacher double hashing on xxh3-128).

/// A fixed-size Bloom filter of token windows.
#[derive(Clone, Debug)]
pub struct NgramBloom {
    bits: Vec<u64>,
    nbits: u64,
    hashes: u32,
}

fn window_hash(window: &[u32]) -> (u64, u64) {
    let h = xxhash_rust::xxh3::xxh3_128(bytemuck::cast_slice(window));
    (h as u64, ((h >> 64) as u64) | 1)
}

impl NgramBloom {
    /// A filter sized for `items` insertions at false-positive rate `fp_rate` per lookup.
    pub fn new(items: u64, fp_rate: f64) -> Self {
        let items = items.max(1) as f64;
        let ln2 = std::f64::consts::LN_2;
        let nbits = ((-items * fp_rate.clamp(1e-15, 0.5).ln()) / (ln2 * ln2))
            .ceil()
            .max(64.0) as u64;
        let hashes = ((nbits as f64 / items) * ln2).round().clamp(1.0, 32.0) as u32;
        Self {
            bits: vec![0; nbits.div_ceil(64) as usize],
            nbits,
            hashes,
        }
    }

    fn positions(&self, window: &[u32]) -> impl Iterator<Item = u64> + '_ {
        let (a, b) = window_hash(window);
        (0..u64::from(self.hashes)).map(move |i| a.wrapping_add(i.wrapping_mul(b)) % self.nbits)
    }

    /// Adds one window.
    pub fn insert(&mut self, window: &[u32]) {
        let pos: Vec<u64> = self.positions(window).collect();
        for p in pos {
            self.bits[(p / 64) as usize] |= 1 << (p % 64);
        }
    }

    /// Whether the window may have been added (false positives at the configured rate).
    pub fn contains(&self, window: &[u32]) -> bool {
        self.positions(window)
            .all(|p| self.bits[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }

    /// Size of the bit array in bytes.
    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn inserted_windows_are_found(ws in proptest::collection::vec(proptest::collection::vec(any::<u32>(), 13), 1..50)) {
            let mut b = NgramBloom::new(ws.len() as u64, 1e-9);
            for w in &ws { b.insert(w); }
            for w in &ws { prop_assert!(b.contains(w)); }
        }
    }

    #[test]
    fn absent_windows_are_rarely_found() {
        let mut b = NgramBloom::new(10_000, 1e-6);
        for i in 0..10_000u32 {
            b.insert(&[i; 13]);
        }
        let fp = (10_000..110_000u32)
            .filter(|&i| b.contains(&[i; 13]))
            .count();
        assert!(fp <= 2, "{fp} false positives in 100k lookups");
    }
}
