//! ICMP and ICMPv6 headers (the first 8 bytes share one layout).
use super::{be16, Malformed, Result};

/// A view over an ICMP or ICMPv6 message.
#[derive(Debug, Clone, Copy)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Header length (type, code, checksum, rest-of-header).
    pub const HEADER_LEN: usize = 8;

    /// Wrap `buffer`, checking that the header fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Malformed::TruncatedIcmp);
        }
        Ok(Self { buffer })
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Echo identifier (meaningful for echo, timestamp and similar queries).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }
}

/// Whether an ICMPv4 type is a query whose request and reply share an
/// identifier (echo, timestamp, information, address mask).
pub fn v4_is_query(t: u8) -> bool {
    matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
}

/// Whether an ICMPv6 type is echo request or reply.
pub fn v6_is_query(t: u8) -> bool {
    matches!(t, 128 | 129)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request() {
        let d = [8u8, 0, 0xf7, 0xfd, 0x12, 0x34, 0x00, 0x01];
        let p = IcmpPacket::new_checked(&d[..]).unwrap();
        assert_eq!(p.msg_type(), 8);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq(), 1);
        assert!(v4_is_query(8) && v4_is_query(0) && !v4_is_query(3));
        assert!(v6_is_query(128) && !v6_is_query(135));
        assert_eq!(IcmpPacket::new_checked(&d[..7]).unwrap_err(), Malformed::TruncatedIcmp);
    }
}
