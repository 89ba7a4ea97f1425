//! A payload sketch of the first [`SKETCH_BYTES`] payload bytes of one
//! direction, updated packet by packet without allocation (the bytes are
//! kept; the statistics are computed once, when asked).
//!
//! - **entropy**: Shannon entropy of the byte values, in bits per byte (0..=8).
//! - **printable fraction**: share of bytes that are printable ASCII
//!   (0x20..=0x7e) or `\t`, `\n`, `\r` (0..=1).
//! - **bigram histogram**: for each pair of consecutive bytes (pairs span
//!   packet boundaries), bucket = 32-bit FNV-1a of the two bytes, modulo 16.
//!   [`PayloadSketch::bigram_fractions`] normalizes the counts to fractions
//!   summing to 1 (all zeros when there is no pair yet);
//!   [`PayloadSketch::bigram_counts`] gives the raw counts.

/// Most payload bytes a sketch takes in.
pub const SKETCH_BYTES: usize = 256;
/// Number of bigram buckets.
pub const BUCKETS: usize = 16;

/// The running sketch of one direction: the first [`SKETCH_BYTES`] bytes
/// are kept (a copy per packet, nothing per byte); the statistics are
/// computed when asked, once per flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadSketch {
    bytes: [u8; SKETCH_BYTES],
    seen: u16,
}

impl Default for PayloadSketch {
    fn default() -> Self {
        Self::new()
    }
}

/// 32-bit FNV-1a of two bytes.
pub fn fnv1a_pair(a: u8, b: u8) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for x in [a, b] {
        h ^= u32::from(x);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `D[c] = (c+1)·log2(c+1) − c·log2(c)` for c in 0..=256: the growth of
/// `Σ c·log2(c)` when one count goes up by one.
static DCLOG2C: std::sync::LazyLock<[f64; SKETCH_BYTES + 1]> = std::sync::LazyLock::new(|| {
    let f = |c: f64| if c > 0.0 { c * c.log2() } else { 0.0 };
    let mut t = [0f64; SKETCH_BYTES + 1];
    for (i, v) in t.iter_mut().enumerate() {
        *v = f(i as f64 + 1.0) - f(i as f64);
    }
    t
});

impl PayloadSketch {
    /// An empty sketch.
    pub const fn new() -> Self {
        PayloadSketch { bytes: [0; SKETCH_BYTES], seen: 0 }
    }

    /// Forget what was taken (the buffer is reused).
    pub fn clear(&mut self) {
        self.seen = 0;
    }

    /// Adds a packet's payload; bytes past the first [`SKETCH_BYTES`] are ignored.
    /// Returns how many bytes were taken.
    pub fn update(&mut self, payload: &[u8]) -> usize {
        let at = usize::from(self.seen).min(SKETCH_BYTES);
        let take = payload.len().min(SKETCH_BYTES - at);
        if let (Some(dst), Some(src)) = (self.bytes.get_mut(at..at + take), payload.get(..take)) {
            dst.copy_from_slice(src);
            self.seen += take as u16;
            take
        } else {
            0
        }
    }

    fn taken(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.seen)).unwrap_or(&[])
    }

    /// Bytes taken so far (at most [`SKETCH_BYTES`]).
    pub fn len(&self) -> usize {
        usize::from(self.seen)
    }

    /// True when no byte was taken.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// True once [`SKETCH_BYTES`] bytes were taken.
    pub fn is_full(&self) -> bool {
        usize::from(self.seen) >= SKETCH_BYTES
    }

    /// Shannon entropy of the bytes in bits per byte (0 when empty):
    /// `log2(n) - Σ c·log2(c) / n` over the byte-value counts.
    pub fn entropy(&self) -> f32 {
        let b = self.taken();
        if b.is_empty() {
            return 0.0;
        }
        // Four histograms, so that runs of one byte value (zero padding)
        // do not make every increment wait for the previous one.
        // One pass over the bytes: Σ c·log2(c) grows by D[c] = (c+1)·log2(c+1) − c·log2(c)
        // when a value's count goes from c to c+1; four independent sums.
        let table: &[f64; SKETCH_BYTES + 1] = &DCLOG2C;
        let mut h = [0u16; 256];
        let mut acc = [0f64; 4];
        for (i, &x) in b.iter().enumerate() {
            let c = &mut h[usize::from(x)];
            acc[i % 4] += table.get(usize::from(*c)).copied().unwrap_or(0.0);
            *c += 1;
        }
        let n = b.len();
        let sum: f64 = acc.iter().sum();
        ((n as f64).log2() - sum / n as f64).max(0.0) as f32
    }

    /// Share of printable bytes (0 when empty).
    pub fn printable_fraction(&self) -> f32 {
        let b = self.taken();
        if b.is_empty() {
            return 0.0;
        }
        let p = b.iter().filter(|&&x| (0x20..=0x7e).contains(&x) || matches!(x, b'\t' | b'\n' | b'\r')).count();
        p as f32 / b.len() as f32
    }

    /// Raw bigram bucket counts (they sum to `len() - 1`, or 0).
    pub fn bigram_counts(&self) -> [u16; BUCKETS] {
        let mut out = [0u16; BUCKETS];
        for w in self.taken().windows(2) {
            out[fnv1a_pair(w[0], w[1]) as usize % BUCKETS] += 1;
        }
        out
    }

    /// Bigram bucket counts as fractions summing to 1 (all zeros with no pair).
    pub fn bigram_fractions(&self) -> [f32; BUCKETS] {
        let counts = self.bigram_counts();
        let total: u32 = counts.iter().map(|&c| u32::from(c)).sum();
        let mut out = [0f32; BUCKETS];
        if total > 0 {
            for (o, &c) in out.iter_mut().zip(counts.iter()) {
                *o = f32::from(c) / total as f32;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let mut s = PayloadSketch::new();
        assert_eq!((s.entropy(), s.printable_fraction()), (0.0, 0.0));
        assert_eq!(s.bigram_fractions(), [0.0; BUCKETS]);
        // "ab" then "\x00\xff" in a second packet: 4 distinct bytes → 2 bits/byte;
        // printable 2 of 4; 3 bigrams (ab, b\0, \0\xff) across the boundary.
        s.update(b"ab");
        s.update(&[0x00, 0xff]);
        assert!((s.entropy() - 2.0).abs() < 1e-6);
        assert_eq!(s.printable_fraction(), 0.5);
        assert_eq!(s.bigram_counts().iter().map(|&c| u32::from(c)).sum::<u32>(), 3);
        // FNV-1a("ab") = 0x4d2505ca (the published FNV-1a 32 value of "ab"), mod 16 = 10.
        assert_eq!(fnv1a_pair(b'a', b'b'), 0x4d25_05ca);
        assert!(s.bigram_counts()[10] >= 1);
        let f: f32 = s.bigram_fractions().iter().sum();
        assert!((f - 1.0).abs() < 1e-6);
        // One repeated byte: entropy 0, and the cap holds.
        let mut t = PayloadSketch::new();
        assert_eq!(t.update(&[b'A'; 300]), SKETCH_BYTES);
        assert_eq!(t.update(b"x"), 0);
        assert_eq!((t.entropy(), t.printable_fraction(), t.len()), (0.0, 1.0, 256));
        assert_eq!(t.bigram_counts()[fnv1a_pair(b'A', b'A') as usize % 16], 255);
    }
}
