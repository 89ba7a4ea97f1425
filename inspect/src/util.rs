//! Small shared helpers: a fixed-capacity string, a byte reader that never
//! panics, and the macro that defines the named-reason error enums.

use core::fmt;

/// Defines a `Copy` error enum whose variants are named reasons, with
/// `name()` (a `snake_case` metric label), `ALL` and `Display`.
macro_rules! reasons {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $var:ident => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $var, )+
        }
        impl $name {
            /// Every variant, in declaration order (for pre-registering metric labels).
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// Number of variants.
            pub const COUNT: usize = [$($label),+].len();
            /// The variant's position in [`Self::ALL`] (a counter index).
            pub fn index(self) -> usize {
                self as usize
            }
            /// The reason as a stable `snake_case` label for metrics.
            pub fn name(self) -> &'static str {
                match self { $($name::$var => $label,)+ }
            }
        }
        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
        impl std::error::Error for $name {}
    };
}
pub(crate) use reasons;

/// A string of at most `N` bytes stored inline (no allocation).
///
/// Everything this crate writes into one is ASCII, except names copied from
/// the wire, which are checked to be UTF-8 before they are accepted.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BoundedStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

/// Returned by [`BoundedStr`] writers when the text does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl<const N: usize> BoundedStr<N> {
    /// An empty string.
    pub const fn new() -> Self {
        BoundedStr { buf: [0; N], len: 0 }
    }
    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
    /// The bytes of the text.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The capacity `N`.
    pub const fn capacity(&self) -> usize {
        N
    }
    /// Empties the string.
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Appends bytes (the caller guarantees UTF-8 as a whole); all or nothing.
    pub(crate) fn push_bytes(&mut self, b: &[u8]) -> Result<(), Full> {
        let end = self.len.checked_add(b.len()).ok_or(Full)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(Full)?;
        dst.copy_from_slice(b);
        self.len = end;
        Ok(())
    }
    /// Appends a string; all or nothing.
    pub fn push_str(&mut self, s: &str) -> Result<(), Full> {
        self.push_bytes(s.as_bytes())
    }
    /// Appends one ASCII byte.
    pub(crate) fn push_ascii(&mut self, c: u8) -> Result<(), Full> {
        self.push_bytes(&[c & 0x7f])
    }
    /// Appends lowercase hex of `bytes`.
    pub(crate) fn push_hex(&mut self, bytes: &[u8]) -> Result<(), Full> {
        for &b in bytes {
            self.push_ascii(HEX[usize::from(b >> 4)])?;
            self.push_ascii(HEX[usize::from(b & 15)])?;
        }
        Ok(())
    }
    /// Appends a `u16` as four lowercase hex digits.
    pub(crate) fn push_hex_u16(&mut self, v: u16) -> Result<(), Full> {
        self.push_hex(&v.to_be_bytes())
    }
    /// Appends a number in decimal.
    pub(crate) fn push_dec(&mut self, mut v: u32) -> Result<(), Full> {
        let mut tmp = [0u8; 10];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        self.push_bytes(tmp.get(i..).unwrap_or(&[]))
    }
}

impl<const N: usize> Default for BoundedStr<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for BoundedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for BoundedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> PartialEq<str> for BoundedStr<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> PartialEq<&str> for BoundedStr<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

/// A cursor over untrusted bytes; every read is checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|s| s.first().copied())
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        let s = self.take(2)?;
        Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
    }
    pub(crate) fn u24(&mut self) -> Option<u32> {
        let s = self.take(3)?;
        Some(u32::from_be_bytes([0, *s.first()?, *s.get(1)?, *s.get(2)?]))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        let s = self.take(4)?;
        Some(u32::from_be_bytes([*s.first()?, *s.get(1)?, *s.get(2)?, *s.get(3)?]))
    }
    /// A QUIC variable-length integer (RFC 9000 §16).
    pub(crate) fn varint(&mut self) -> Option<u64> {
        let first = *self.buf.get(self.pos)?;
        let len = 1usize << (first >> 6);
        let s = self.take(len)?;
        let mut v = u64::from(first & 0x3f);
        for &b in s.get(1..)? {
            v = (v << 8) | u64::from(b);
        }
        Some(v)
    }
    /// A `u8`-length-prefixed vector.
    pub(crate) fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// A `u16`-length-prefixed vector.
    pub(crate) fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// Iterates big-endian `u16` values of a slice (a trailing odd byte is ignored).
pub(crate) fn u16s(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_str_writes() {
        let mut s = BoundedStr::<8>::new();
        s.push_dec(0).unwrap();
        s.push_dec(4294967).unwrap();
        assert_eq!(s.as_str(), "04294967");
        assert_eq!(s.push_str("x"), Err(Full));
        let mut h = BoundedStr::<8>::new();
        h.push_hex_u16(0x0a1b).unwrap();
        assert_eq!(h, "0a1b");
    }

    #[test]
    fn varints() {
        // RFC 9000 §A.1 examples.
        let cases: &[(&[u8], u64)] = &[
            (&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c], 151_288_809_941_952_652),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (b, v) in cases {
            assert_eq!(Reader::new(b).varint(), Some(*v));
        }
        assert_eq!(Reader::new(&[0x7b]).varint(), None);
    }
}
