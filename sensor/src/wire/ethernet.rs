//! Ethernet II frames and 802.1Q / 802.1ad VLAN tags.
use super::{be16, Malformed, Result};

/// EtherType values the decoder acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtherType {
    /// 0x0800
    Ipv4,
    /// 0x86DD
    Ipv6,
    /// 0x8100 (802.1Q), 0x88A8 (802.1ad), 0x9100 and 0x9200 (pre-standard QinQ)
    Vlan,
    /// 0x8847 / 0x8848
    Mpls,
    /// 0x8864 (PPPoE session stage)
    PppoeSession,
    /// 0x88E7 (802.1ah provider backbone bridging I-tag)
    Pbb,
    /// 0x6558 (transparent Ethernet bridging, inside GRE)
    TransparentEthernet,
    /// Any other value, kept so it can be counted.
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => Self::Ipv4,
            0x86DD => Self::Ipv6,
            0x8100 | 0x88A8 | 0x9100 | 0x9200 => Self::Vlan,
            0x8847 | 0x8848 => Self::Mpls,
            0x8864 => Self::PppoeSession,
            0x88E7 => Self::Pbb,
            0x6558 => Self::TransparentEthernet,
            other => Self::Unknown(other),
        }
    }
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
    pub const LLC: Range<usize> = 14..17;
    pub const SNAP_TYPE: usize = 20;
    pub const SNAP_PAYLOAD: usize = 22;
}

/// A view over an Ethernet II (or 802.3 LLC/SNAP) frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Length of the Ethernet II header.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wrap `buffer`, checking that the header fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Malformed::TruncatedLink);
        }
        Ok(Self { buffer })
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> [u8; 6] {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> [u8; 6] {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }

    /// The raw type/length field.
    pub fn type_or_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// The EtherType and the offset of the payload. 802.3 frames carrying
    /// LLC/SNAP report the SNAP type; other 802.3 frames report `Unknown(len)`.
    pub fn ethertype_and_offset(&self) -> (EtherType, usize) {
        let b = self.buffer.as_ref();
        let t = self.type_or_len();
        if t <= 1500 {
            if b.len() >= field::SNAP_PAYLOAD && b[field::LLC] == [0xAA, 0xAA, 0x03] {
                return (EtherType::from(be16(b, field::SNAP_TYPE)), field::SNAP_PAYLOAD);
            }
            return (EtherType::Unknown(t), field::PAYLOAD);
        }
        (EtherType::from(t), field::PAYLOAD)
    }

    /// The bytes after the Ethernet II header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

/// A view over one 4-byte 802.1Q/802.1ad tag body (TCI + inner EtherType),
/// i.e. the bytes that follow a VLAN TPID.
#[derive(Debug, Clone, Copy)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Length of a tag body.
    pub const LEN: usize = 4;

    /// Wrap `buffer`, checking that the tag fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::LEN {
            return Err(Malformed::TruncatedVlan);
        }
        Ok(Self { buffer })
    }

    /// The 12-bit VLAN id.
    pub fn vid(&self) -> u16 {
        be16(self.buffer.as_ref(), 0) & 0x0fff
    }

    /// The 3-bit priority code point.
    pub fn pcp(&self) -> u8 {
        self.buffer.as_ref()[0] >> 5
    }

    /// The EtherType of what follows the tag.
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(be16(self.buffer.as_ref(), 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 18] = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, // dst
        0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, // src
        0x81, 0x00, // 802.1Q
        0xa0, 0x64, // pcp 5, vid 100
        0x08, 0x00, // IPv4
    ];

    #[test]
    fn parses_ethernet_and_vlan() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), [0x00, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(f.src_addr(), [0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb]);
        assert_eq!(f.ethertype_and_offset(), (EtherType::Vlan, 14));
        let tag = VlanTag::new_checked(f.payload()).unwrap();
        assert_eq!(tag.vid(), 100);
        assert_eq!(tag.pcp(), 5);
        assert_eq!(tag.ethertype(), EtherType::Ipv4);
    }

    #[test]
    fn snap_reports_inner_type() {
        let mut f = [0u8; 22];
        f[12] = 0x00;
        f[13] = 0x30; // 802.3 length 48
        f[14..17].copy_from_slice(&[0xAA, 0xAA, 0x03]);
        f[20] = 0x08;
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.ethertype_and_offset(), (EtherType::Ipv4, 22));
    }

    #[test]
    fn short_buffers_are_errors() {
        assert_eq!(EthernetFrame::new_checked(&FRAME[..13]).unwrap_err(), Malformed::TruncatedLink);
        assert_eq!(VlanTag::new_checked(&FRAME[14..17]).unwrap_err(), Malformed::TruncatedVlan);
        assert_eq!(EtherType::from(0x88A8), EtherType::Vlan);
        assert_eq!(EtherType::from(0x1234), EtherType::Unknown(0x1234));
    }
}
