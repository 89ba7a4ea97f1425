//! VXLAN headers (RFC 7348), carried in UDP port 4789.
use super::{be32, Malformed, Result};

/// The IANA UDP port for VXLAN.
pub const PORT: u16 = 4789;

/// A view over a VXLAN header and its inner Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Header length.
    pub const HEADER_LEN: usize = 8;

    /// Wrap `buffer`, checking that the header fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Malformed::TruncatedVxlan);
        }
        Ok(Self { buffer })
    }

    /// Whether the I flag (valid VNI) is set; without it this is not VXLAN.
    pub fn vni_valid(&self) -> bool {
        self.buffer.as_ref()[0] & 0x08 != 0
    }

    /// The 24-bit VXLAN network identifier.
    pub fn vni(&self) -> u32 {
        be32(self.buffer.as_ref(), 4) >> 8
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vni() {
        let d = [0x08u8, 0, 0, 0, 0x00, 0x04, 0xd2, 0x00, 0xff];
        let v = VxlanPacket::new_checked(&d[..]).unwrap();
        assert!(v.vni_valid());
        assert_eq!(v.vni(), 1234);
        assert_eq!(v.payload(), &[0xff]);
        assert!(!VxlanPacket::new_checked(&[0u8; 8][..]).unwrap().vni_valid());
        assert_eq!(VxlanPacket::new_checked(&d[..7]).unwrap_err(), Malformed::TruncatedVxlan);
    }
}
