//! BSD null/loopback link headers (DLT_NULL, DLT_LOOP): a 4-byte address family.
use super::{be32, Malformed, Result};

/// What the address family says the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullFamily {
    /// AF_INET (2)
    Ipv4,
    /// AF_INET6 (10 on Linux, 24 on NetBSD/OpenBSD, 28 on FreeBSD, 30 on macOS)
    Ipv6,
    /// Anything else.
    Unknown(u32),
}

/// A view over the 4-byte null/loopback header.
#[derive(Debug, Clone, Copy)]
pub struct NullHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NullHeader<T> {
    /// Header length.
    pub const LEN: usize = 4;

    /// Wrap `buffer`, checking that the header fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::LEN {
            return Err(Malformed::TruncatedLink);
        }
        Ok(Self { buffer })
    }

    /// The address family. DLT_NULL stores it in the writer's byte order and
    /// DLT_LOOP in network order, so both orders are accepted.
    pub fn family(&self) -> NullFamily {
        let be = be32(self.buffer.as_ref(), 0);
        let v = if be > 0xffff { be.swap_bytes() } else { be };
        match v {
            2 => NullFamily::Ipv4,
            10 | 24 | 28 | 30 => NullFamily::Ipv6,
            other => NullFamily::Unknown(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_byte_orders() {
        assert_eq!(NullHeader::new_checked(&[2u8, 0, 0, 0][..]).unwrap().family(), NullFamily::Ipv4);
        assert_eq!(NullHeader::new_checked(&[0u8, 0, 0, 2][..]).unwrap().family(), NullFamily::Ipv4);
        assert_eq!(NullHeader::new_checked(&[30u8, 0, 0, 0][..]).unwrap().family(), NullFamily::Ipv6);
        assert_eq!(NullHeader::new_checked(&[0u8, 0, 0, 24][..]).unwrap().family(), NullFamily::Ipv6);
        assert_eq!(NullHeader::new_checked(&[7u8, 0, 0, 0][..]).unwrap().family(), NullFamily::Unknown(7));
        assert_eq!(NullHeader::new_checked(&[2u8, 0][..]).unwrap_err(), Malformed::TruncatedLink);
    }
}
