//! IPv4 headers, with options and fragmentation fields.
use super::{be16, IpProtocol, Malformed, Result};

mod field {
    pub const VER_IHL: usize = 0;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// A view over an IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = 20;

    /// Wrap `buffer`, checking the version, that the header with its options
    /// fits, and that the total length is at least the header length.
    ///
    /// The total length may exceed the buffer (a capture truncated by snap
    /// length); callers compare it with the wire length.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < Self::MIN_HEADER_LEN {
            return Err(Malformed::TruncatedIpv4);
        }
        let p = Self { buffer };
        if p.version() != 4 {
            return Err(Malformed::BadIpv4Version);
        }
        let hl = p.header_len();
        if hl < Self::MIN_HEADER_LEN || hl > p.buffer.as_ref().len() {
            return Err(Malformed::BadIpv4HeaderLen);
        }
        let tl = p.total_len() as usize;
        // A total length of 0 is what TSO/GSO super-packets carry; callers
        // then take the length from the wire.
        if tl != 0 && tl < hl {
            return Err(Malformed::BadIpv4TotalLen);
        }
        Ok(p)
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[field::VER_IHL] & 0x0f) as usize) * 4
    }

    /// Total length field.
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[field::FLG_OFF] & 0x20 != 0
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.buffer.as_ref()[field::FLG_OFF] & 0x40 != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u32 {
        ((be16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) as u32) * 8
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Raw protocol number.
    pub fn protocol_raw(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.protocol_raw())
    }

    /// Source address.
    pub fn src_addr(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[field::SRC], b[field::SRC + 1], b[field::SRC + 2], b[field::SRC + 3]]
    }

    /// Destination address.
    pub fn dst_addr(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[field::DST], b[field::DST + 1], b[field::DST + 2], b[field::DST + 3]]
    }

    /// Captured bytes after the header (options skipped), cut at the total
    /// length when that is smaller (Ethernet padding).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let tl = self.total_len() as usize;
        let end = if tl == 0 { b.len() } else { tl.min(b.len()) };
        &b[self.header_len().min(end)..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 10.0.0.1 -> 10.0.0.2, TCP, total length 40, id 0x1234, DF, ttl 64
    const HDR: [u8; 24] = [
        0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 0, 0, 1, 10, 0, 0, 2, 0xde, 0xad,
        0xbe, 0xef,
    ];

    #[test]
    fn parses_fields() {
        let p = Ipv4Packet::new_checked(&HDR[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 40);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Tcp);
        assert_eq!(p.src_addr(), [10, 0, 0, 1]);
        assert_eq!(p.dst_addr(), [10, 0, 0, 2]);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn fragment_fields() {
        let mut h = HDR;
        h[6] = 0x20; // MF
        h[7] = 0xb9; // offset 185 * 8 = 1480
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
    }

    #[test]
    fn options_are_skipped() {
        let mut h = [0u8; 28];
        h[..20].copy_from_slice(&HDR[..20]);
        h[0] = 0x46; // 24-byte header
        h[3] = 28;
        h[24..28].copy_from_slice(&[1, 2, 3, 4]);
        let p = Ipv4Packet::new_checked(&h[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(Ipv4Packet::new_checked(&HDR[..19]).unwrap_err(), Malformed::TruncatedIpv4);
        let mut h = HDR;
        h[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&h[..]).unwrap_err(), Malformed::BadIpv4Version);
        h[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&h[..]).unwrap_err(), Malformed::BadIpv4HeaderLen);
        h[0] = 0x4f; // 60-byte header in a 24-byte buffer
        assert_eq!(Ipv4Packet::new_checked(&h[..]).unwrap_err(), Malformed::BadIpv4HeaderLen);
        let mut h = HDR;
        h[3] = 10; // total length below header length
        assert_eq!(Ipv4Packet::new_checked(&h[..]).unwrap_err(), Malformed::BadIpv4TotalLen);
    }
}
