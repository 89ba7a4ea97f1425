//! A payload sketch of the first [`SKETCH_BYTES`] payload bytes of one
//! direction, updated packet by packet without allocation.
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

/// The running sketch of one direction.
#[derive(Debug, Clone)]
pub struct PayloadSketch {
    counts: [u16; 256],
    bigrams: [u16; BUCKETS],
    seen: u16,
    printable: u16,
    last: Option<u8>,
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

impl PayloadSketch {
    /// An empty sketch.
    pub const fn new() -> Self {
        PayloadSketch { counts: [0; 256], bigrams: [0; BUCKETS], seen: 0, printable: 0, last: None }
    }

    /// Adds a packet's payload; bytes past the first [`SKETCH_BYTES`] are ignored.
    /// Returns how many bytes were taken.
    pub fn update(&mut self, payload: &[u8]) -> usize {
        let room = SKETCH_BYTES.saturating_sub(usize::from(self.seen));
        let take = payload.get(..payload.len().min(room)).unwrap_or(&[]);
        for &b in take {
            if let Some(c) = self.counts.get_mut(usize::from(b)) {
                *c += 1;
            }
            if (0x20..=0x7e).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r') {
                self.printable += 1;
            }
            if let Some(a) = self.last {
                if let Some(c) = self.bigrams.get_mut(fnv1a_pair(a, b) as usize % BUCKETS) {
                    *c += 1;
                }
            }
            self.last = Some(b);
            self.seen += 1;
        }
        take.len()
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

    /// Shannon entropy of the bytes in bits per byte (0 when empty).
    pub fn entropy(&self) -> f32 {
        if self.seen == 0 {
            return 0.0;
        }
        let n = f64::from(self.seen);
        let h: f64 = self
            .counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = f64::from(c) / n;
                -p * p.log2()
            })
            .sum();
        h as f32
    }

    /// Share of printable bytes (0 when empty).
    pub fn printable_fraction(&self) -> f32 {
        if self.seen == 0 {
            0.0
        } else {
            f32::from(self.printable) / f32::from(self.seen)
        }
    }

    /// Raw bigram bucket counts (they sum to `len() - 1`, or 0).
    pub fn bigram_counts(&self) -> [u16; BUCKETS] {
        self.bigrams
    }

    /// Bigram bucket counts as fractions summing to 1 (all zeros with no pair).
    pub fn bigram_fractions(&self) -> [f32; BUCKETS] {
        let total: u32 = self.bigrams.iter().map(|&c| u32::from(c)).sum();
        let mut out = [0f32; BUCKETS];
        if total > 0 {
            for (o, &c) in out.iter_mut().zip(self.bigrams.iter()) {
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
