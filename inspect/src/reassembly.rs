//! Bounded reassembly into a caller-provided buffer, without allocation.
//!
//! [`OffsetAssembler`] places byte ranges at their stream offsets in a fixed
//! buffer and tracks which ranges are filled (at most [`MAX_HOLES`] + 1
//! disjoint ranges); [`contiguous`](OffsetAssembler::contiguous) is how many
//! bytes from offset 0 are present. QUIC CRYPTO frames use it directly;
//! [`TcpReassembler`] maps TCP sequence numbers onto it.

use crate::util::reasons;

/// Most disjoint filled ranges tracked at once (holes between them: one less).
pub const MAX_HOLES: usize = 15;
const MAX_RANGES: usize = MAX_HOLES + 1;

reasons! {
    /// What went wrong, or what was unusual, with one pushed segment.
    ///
    /// `Gap` and `Overflow` are reported after the bytes that fit were
    /// stored: they are notes for counters, and the caller may go on.
    pub enum ReassemblyError {
        /// The segment starts after a hole: it was stored, but the
        /// contiguous prefix did not grow.
        Gap => "gap",
        /// Some or all of the segment lies past the buffer's capacity; the
        /// part past the end was dropped (only the first N bytes are kept).
        Overflow => "overflow",
        /// Storing the segment would need more than [`MAX_HOLES`] holes; it was dropped.
        TooManyHoles => "too_many_holes",
        /// The segment lies wholly before the stream start (an old retransmission); dropped.
        BeforeStart => "before_start",
    }
}

/// What an [`OffsetAssembler`] knows besides its buffer's bytes: saved with
/// [`OffsetAssembler::state`] and given back to [`OffsetAssembler::resume`],
/// so a long-lived owner (a flow) keeps buffer and state apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsmState {
    ranges: [(u16, u16); MAX_RANGES],
    n: u8,
}

/// Places byte ranges by offset into a caller buffer of capacity N.
#[derive(Debug)]
pub struct OffsetAssembler<'a> {
    buf: &'a mut [u8],
    /// Sorted, disjoint, non-adjacent `[start, end)` ranges.
    ranges: [(usize, usize); MAX_RANGES],
    n: usize,
}

impl<'a> OffsetAssembler<'a> {
    /// An empty assembler over `buf`; its length is the capacity N.
    pub fn new(buf: &'a mut [u8]) -> Self {
        OffsetAssembler { buf, ranges: [(0, 0); MAX_RANGES], n: 0 }
    }

    /// An assembler over `buf` (the same buffer as before) in a saved state.
    /// The buffer must be at most 65,535 bytes (saved offsets are 16-bit).
    pub fn resume(buf: &'a mut [u8], st: AsmState) -> Self {
        let mut ranges = [(0, 0); MAX_RANGES];
        let cap = buf.len();
        let mut n = 0usize;
        for (dst, &(s, e)) in ranges.iter_mut().zip(st.ranges.iter().take(usize::from(st.n))) {
            // A state from another buffer could name ranges past this one; keep what fits.
            let (s, e) = (usize::from(s).min(cap), usize::from(e).min(cap));
            if s < e {
                *dst = (s, e);
                n += 1;
            }
        }
        OffsetAssembler { buf, ranges, n }
    }

    /// The state to [`resume`](Self::resume) from later.
    pub fn state(&self) -> AsmState {
        let mut st = AsmState::default();
        for (dst, &(s, e)) in st.ranges.iter_mut().zip(self.ranges.iter().take(self.n)) {
            *dst = (s.min(usize::from(u16::MAX)) as u16, e.min(usize::from(u16::MAX)) as u16);
        }
        st.n = self.n as u8;
        st
    }

    /// Forgets everything stored (the buffer is reused).
    pub fn clear(&mut self) {
        self.n = 0;
    }

    /// The capacity N in bytes.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes present from offset 0 without a hole.
    pub fn contiguous(&self) -> usize {
        match self.ranges.first() {
            Some(&(0, end)) if self.n > 0 => end,
            _ => 0,
        }
    }

    /// The contiguous prefix.
    pub fn data(&self) -> &[u8] {
        self.buf.get(..self.contiguous()).unwrap_or(&[])
    }

    /// True when the first N bytes are all present.
    pub fn is_full(&self) -> bool {
        self.contiguous() == self.buf.len()
    }

    /// True when bytes after a hole are stored.
    pub fn has_gap(&self) -> bool {
        self.n > 1 || (self.n == 1 && self.contiguous() == 0)
    }

    /// Stores `data` at `offset`; returns the contiguous length.
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> Result<usize, ReassemblyError> {
        let cap = self.buf.len();
        let start = match usize::try_from(offset) {
            Ok(s) if s < cap => s,
            _ => return if data.is_empty() { Ok(self.contiguous()) } else { Err(ReassemblyError::Overflow) },
        };
        let want_end = start.saturating_add(data.len());
        let end = want_end.min(cap);
        if end == start {
            return Ok(self.contiguous());
        }
        self.add_range(start, end)?;
        if let (Some(dst), Some(src)) = (self.buf.get_mut(start..end), data.get(..end - start)) {
            dst.copy_from_slice(src);
        }
        if want_end > cap {
            Err(ReassemblyError::Overflow)
        } else if start > self.contiguous() {
            Err(ReassemblyError::Gap)
        } else {
            Ok(self.contiguous())
        }
    }

    fn add_range(&mut self, start: usize, end: usize) -> Result<(), ReassemblyError> {
        let mut out = [(0usize, 0usize); MAX_RANGES];
        let mut m = 0usize;
        let (mut s, mut e) = (start, end);
        let mut placed = false;
        for &(rs, re) in self.ranges.iter().take(self.n) {
            if re < s {
                *out.get_mut(m).ok_or(ReassemblyError::TooManyHoles)? = (rs, re);
                m += 1;
            } else if rs > e {
                if !placed {
                    *out.get_mut(m).ok_or(ReassemblyError::TooManyHoles)? = (s, e);
                    m += 1;
                    placed = true;
                }
                *out.get_mut(m).ok_or(ReassemblyError::TooManyHoles)? = (rs, re);
                m += 1;
            } else {
                s = s.min(rs);
                e = e.max(re);
            }
        }
        if !placed {
            *out.get_mut(m).ok_or(ReassemblyError::TooManyHoles)? = (s, e);
            m += 1;
        }
        self.ranges = out;
        self.n = m;
        Ok(())
    }
}

/// The state of a [`TcpReassembler`] apart from its buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpReassemblyState {
    asm: AsmState,
    start: Option<u32>,
}

/// In-order reassembly of one TCP direction's first N bytes.
///
/// The stream starts at the sequence number given to
/// [`set_start`](Self::set_start) (the SYN's sequence number + 1), or else at
/// the first pushed segment. Segments may come out of order or overlap
/// (retransmissions); they are placed by sequence number (modulo 2³²).
#[derive(Debug)]
pub struct TcpReassembler<'a> {
    asm: OffsetAssembler<'a>,
    start: Option<u32>,
}

impl<'a> TcpReassembler<'a> {
    /// A reassembler keeping the first `buf.len()` bytes in `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        TcpReassembler { asm: OffsetAssembler::new(buf), start: None }
    }

    /// A reassembler over `buf` (the same buffer as before) in a saved state.
    pub fn resume(buf: &'a mut [u8], st: TcpReassemblyState) -> Self {
        TcpReassembler { asm: OffsetAssembler::resume(buf, st.asm), start: st.start }
    }

    /// The state to [`resume`](Self::resume) from later.
    pub fn state(&self) -> TcpReassemblyState {
        TcpReassemblyState { asm: self.asm.state(), start: self.start }
    }

    /// Sets the sequence number of the first payload byte (SYN seq + 1).
    /// Ignored once data has been stored.
    pub fn set_start(&mut self, seq: u32) {
        if self.asm.n == 0 {
            self.start = Some(seq);
        }
    }

    /// The first payload byte's sequence number, once known.
    pub fn start(&self) -> Option<u32> {
        self.start
    }

    /// Adds one segment's payload; returns the contiguous length.
    pub fn push(&mut self, seq: u32, payload: &[u8]) -> Result<usize, ReassemblyError> {
        if payload.is_empty() {
            return Ok(self.asm.contiguous());
        }
        let start = *self.start.get_or_insert(seq);
        let rel = seq.wrapping_sub(start);
        let (off, data) = if rel >= 0x8000_0000 {
            let back = 0u32.wrapping_sub(rel) as usize;
            match payload.get(back..) {
                Some(rest) if !rest.is_empty() => (0u64, rest),
                _ => return Err(ReassemblyError::BeforeStart),
            }
        } else {
            (u64::from(rel), payload)
        };
        self.asm.insert(off, data)
    }

    /// Bytes present from the start without a hole.
    pub fn contiguous(&self) -> usize {
        self.asm.contiguous()
    }

    /// The contiguous prefix of the stream.
    pub fn data(&self) -> &[u8] {
        self.asm.data()
    }

    /// True when all N bytes are present.
    pub fn is_full(&self) -> bool {
        self.asm.is_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_out_of_order() {
        let mut buf = [0u8; 8];
        let mut r = TcpReassembler::new(&mut buf);
        r.set_start(u32::MAX - 1); // wraps
        assert_eq!(r.push(u32::MAX - 1, b"ab"), Ok(2));
        assert_eq!(r.push(2, b"ef"), Err(ReassemblyError::Gap));
        assert_eq!(r.contiguous(), 2);
        assert_eq!(r.push(0, b"cd"), Ok(6));
        assert_eq!(r.push(u32::MAX, b"bcd"), Ok(6)); // overlap
        assert_eq!(r.push(u32::MAX - 3, b"x"), Err(ReassemblyError::BeforeStart));
        assert_eq!(r.push(u32::MAX - 3, b"xyab"), Ok(6)); // trimmed front
        assert_eq!(r.push(4, b"ghij"), Err(ReassemblyError::Overflow));
        assert_eq!(r.data(), b"abcdefgh");
        assert!(r.is_full());
        assert_eq!(r.push(100, b"z"), Err(ReassemblyError::Overflow));
    }

    #[test]
    fn state_survives_a_resume() {
        let mut buf = [0u8; 16];
        let st = {
            let mut r = TcpReassembler::new(&mut buf);
            assert_eq!(r.push(100, b"abcd"), Ok(4));
            assert_eq!(r.push(108, b"ij"), Err(ReassemblyError::Gap));
            r.state()
        };
        let mut r = TcpReassembler::resume(&mut buf, st);
        assert_eq!(r.start(), Some(100));
        assert_eq!(r.push(104, b"efgh"), Ok(10));
        assert_eq!(r.data(), b"abcdefghij");
        // A state naming ranges past a smaller buffer is cut to it.
        let mut small = [0u8; 4];
        let r = TcpReassembler::resume(&mut small, st);
        assert_eq!(r.contiguous(), 4);
    }

    #[test]
    fn hole_budget() {
        let mut buf = [0u8; 100];
        let mut a = OffsetAssembler::new(&mut buf);
        for i in 0..MAX_RANGES as u64 {
            assert_eq!(a.insert(1 + i * 3, b"x"), Err(ReassemblyError::Gap));
        }
        assert_eq!(a.insert(90, b"x"), Err(ReassemblyError::TooManyHoles));
        assert_eq!(a.insert(0, b"x"), Ok(2)); // merges with the first range
        assert!(a.has_gap());
    }
}
