//! A tiny, exact binary encoding for the engine's state snapshot: LEB128
//! varints for integers (zeros cost one byte, so sparse histograms stay
//! small) and IEEE bits for floats (exact round trip, unlike decimal text).
use std::fmt;

/// A snapshot that does not decode (truncated, or written by another version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub &'static str);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gate state snapshot does not decode: {}", self.0)
    }
}
impl std::error::Error for CodecError {}

#[derive(Debug, Default)]
pub(crate) struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u64(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }
    pub fn u32(&mut self, v: u32) {
        self.u64(v as u64)
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.0.push(v as u8);
    }
    pub fn u32s(&mut self, v: &[u32]) {
        self.u64(v.len() as u64);
        for x in v {
            self.u32(*x);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Dec<'a> {
    b: &'a [u8],
}

impl<'a> Dec<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Dec { b }
    }
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&x, rest) = self.b.split_first().ok_or(CodecError("truncated varint"))?;
            self.b = rest;
            v |= ((x & 0x7f) as u64) << shift;
            if x & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError("varint too long"))
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.u64()?).map_err(|_| CodecError("u32 out of range"))
    }
    pub fn f64(&mut self) -> Result<f64, CodecError> {
        if self.b.len() < 8 {
            return Err(CodecError("truncated f64"));
        }
        let (h, rest) = self.b.split_at(8);
        self.b = rest;
        let mut a = [0u8; 8];
        a.copy_from_slice(h);
        Ok(f64::from_bits(u64::from_le_bytes(a)))
    }
    pub fn bool(&mut self) -> Result<bool, CodecError> {
        let (&x, rest) = self.b.split_first().ok_or(CodecError("truncated bool"))?;
        self.b = rest;
        Ok(x != 0)
    }
    pub fn u32s(&mut self, max: usize) -> Result<Vec<u32>, CodecError> {
        let n = self.u64()? as usize;
        if n > max {
            return Err(CodecError("array too long"));
        }
        (0..n).map(|_| self.u32()).collect()
    }
    pub fn done(&self) -> Result<(), CodecError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(CodecError("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip() {
        let mut e = Enc::default();
        e.u64(0);
        e.u64(u64::MAX);
        e.u32(300);
        e.f64(0.1);
        e.bool(true);
        e.u32s(&[0, 1, 1 << 31]);
        let mut d = Dec::new(&e.0);
        assert_eq!(d.u64().unwrap(), 0);
        assert_eq!(d.u64().unwrap(), u64::MAX);
        assert_eq!(d.u32().unwrap(), 300);
        assert_eq!(d.f64().unwrap().to_bits(), 0.1f64.to_bits());
        assert!(d.bool().unwrap());
        assert_eq!(d.u32s(10).unwrap(), vec![0, 1, 1 << 31]);
        d.done().unwrap();
        assert!(Dec::new(&[0x80]).u64().is_err());
    }
}
