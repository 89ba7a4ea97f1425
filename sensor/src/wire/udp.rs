//! UDP headers.
use super::{be16, Malformed, Result};

/// A view over a UDP datagram.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Header length.
    pub const HEADER_LEN: usize = 8;

    /// Wrap `buffer`, checking that the header fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Malformed::TruncatedUdp);
        }
        Ok(Self { buffer })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Length field (header included).
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Whether the length field claims no payload.
    pub fn is_empty(&self) -> bool {
        self.len() <= Self::HEADER_LEN as u16
    }

    /// Captured payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields() {
        let d = [0x00u8, 0x35, 0xc3, 0x50, 0x00, 0x0a, 0x00, 0x00, 0xab, 0xcd];
        let p = UdpPacket::new_checked(&d[..]).unwrap();
        assert_eq!(p.src_port(), 53);
        assert_eq!(p.dst_port(), 50000);
        assert_eq!(p.len(), 10);
        assert!(!p.is_empty());
        assert_eq!(p.payload(), &[0xab, 0xcd]);
        assert_eq!(UdpPacket::new_checked(&d[..7]).unwrap_err(), Malformed::TruncatedUdp);
    }
}
