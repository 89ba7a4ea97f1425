//! Geneve headers (RFC 8926), carried in UDP port 6081 (Open vSwitch, OVN,
//! AWS Gateway Load Balancer). Options are skipped, not read.
use super::{be16, be32, Malformed, Result};

/// The IANA UDP port for Geneve.
pub const PORT: u16 = 6081;

mod field {
    pub const VER_OPT_LEN: usize = 0;
    pub const PROTOCOL: usize = 2;
    pub const VNI: usize = 4;
}

/// A view over a Geneve header, its options and the inner packet.
#[derive(Debug, Clone, Copy)]
pub struct GenevePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GenevePacket<T> {
    /// Length of the fixed header.
    pub const HEADER_LEN: usize = 8;

    /// Wrap `buffer`, checking the version (0) and that header and options fit.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(Malformed::TruncatedGeneve);
        }
        if b[field::VER_OPT_LEN] >> 6 != 0 {
            return Err(Malformed::BadGeneve);
        }
        let p = Self { buffer };
        if p.buffer.as_ref().len() < p.header_len() {
            return Err(Malformed::TruncatedGeneve);
        }
        Ok(p)
    }

    /// Header length, options included.
    pub fn header_len(&self) -> usize {
        Self::HEADER_LEN + usize::from(self.buffer.as_ref()[field::VER_OPT_LEN] & 0x3f) * 4
    }

    /// The inner protocol, an EtherType (0x6558 for Ethernet).
    pub fn protocol(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// The 24-bit virtual network identifier.
    pub fn vni(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VNI) >> 8
    }

    /// The inner packet.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_options_and_vni() {
        // One 4-byte option word; Ethernet inside; VNI 0x00abcd.
        let d = [0x01u8, 0x00, 0x65, 0x58, 0x00, 0xab, 0xcd, 0x00, 1, 2, 3, 4, 0xee];
        let g = GenevePacket::new_checked(&d[..]).unwrap();
        assert_eq!((g.header_len(), g.protocol(), g.vni()), (12, 0x6558, 0xabcd));
        assert_eq!(g.payload(), &[0xee]);
    }

    #[test]
    fn rejects_other_versions_and_cut_options() {
        assert_eq!(GenevePacket::new_checked(&[0u8; 7][..]).unwrap_err(), Malformed::TruncatedGeneve);
        assert_eq!(
            GenevePacket::new_checked(&[0x40u8, 0, 0x65, 0x58, 0, 0, 0, 0][..]).unwrap_err(),
            Malformed::BadGeneve
        );
        assert_eq!(
            GenevePacket::new_checked(&[0x02u8, 0, 0x65, 0x58, 0, 0, 0, 0, 1, 2][..]).unwrap_err(),
            Malformed::TruncatedGeneve
        );
    }
}
