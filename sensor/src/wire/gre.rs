//! GRE headers (RFC 2784/2890, and version 1 "enhanced GRE" of PPTP, RFC 2637).
use super::{be16, EtherType, Malformed, Result};

const F_CSUM: u16 = 0x8000;
const F_ROUTING: u16 = 0x4000;
const F_KEY: u16 = 0x2000;
const F_SEQ: u16 = 0x1000;
const F_ACK: u16 = 0x0080;

/// A view over a GRE header.
#[derive(Debug, Clone, Copy)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Fixed part of the header.
    pub const MIN_HEADER_LEN: usize = 4;

    /// Wrap `buffer`, checking the version, that no source routing is used,
    /// and that the optional fields fit.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::MIN_HEADER_LEN {
            return Err(Malformed::BadGre);
        }
        let p = Self { buffer };
        if p.version() > 1 || p.flags() & F_ROUTING != 0 || p.header_len() > p.buffer.as_ref().len() {
            return Err(Malformed::BadGre);
        }
        Ok(p)
    }

    fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// Version (0 plain GRE, 1 PPTP enhanced GRE).
    pub fn version(&self) -> u8 {
        (self.flags() & 0x7) as u8
    }

    /// Whether the sequence number is present.
    pub fn has_seq(&self) -> bool {
        self.flags() & F_SEQ != 0
    }

    /// Protocol type of the payload (an EtherType; 0x880B is PPP).
    pub fn protocol_raw(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Protocol type as an [`EtherType`].
    pub fn protocol(&self) -> EtherType {
        EtherType::from(self.protocol_raw())
    }

    /// Header length including checksum, key, sequence and (v1) ack fields.
    pub fn header_len(&self) -> usize {
        let f = self.flags();
        let mut n = 4;
        if f & F_CSUM != 0 {
            n += 4;
        }
        if f & F_KEY != 0 {
            n += 4;
        }
        if f & F_SEQ != 0 {
            n += 4;
        }
        if self.version() == 1 && f & F_ACK != 0 {
            n += 4;
        }
        n
    }

    /// Bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_keyed() {
        let plain = [0x00u8, 0x00, 0x08, 0x00, 0x45];
        let p = GrePacket::new_checked(&plain[..]).unwrap();
        assert_eq!(p.version(), 0);
        assert_eq!(p.protocol(), EtherType::Ipv4);
        assert_eq!(p.header_len(), 4);
        assert_eq!(p.payload(), &[0x45]);
        // checksum + key + sequence, transparent Ethernet bridging
        let mut k = [0u8; 16];
        k[0] = 0xb0;
        k[2] = 0x65;
        k[3] = 0x58;
        let p = GrePacket::new_checked(&k[..]).unwrap();
        assert_eq!(p.header_len(), 16);
        assert!(p.has_seq());
        assert_eq!(p.protocol(), EtherType::TransparentEthernet);
    }

    #[test]
    fn pptp_and_errors() {
        // v1, key + seq + ack, PPP
        let mut h = [0u8; 16];
        h[0] = 0x30;
        h[1] = 0x81;
        h[2] = 0x88;
        h[3] = 0x0b;
        let p = GrePacket::new_checked(&h[..]).unwrap();
        assert_eq!(p.version(), 1);
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.protocol_raw(), 0x880b);
        assert_eq!(GrePacket::new_checked(&h[..12]).unwrap_err(), Malformed::BadGre);
        assert_eq!(GrePacket::new_checked(&[0x40u8, 0, 8, 0][..]).unwrap_err(), Malformed::BadGre);
        assert_eq!(GrePacket::new_checked(&[0x00u8, 0x03, 8, 0][..]).unwrap_err(), Malformed::BadGre);
        assert_eq!(GrePacket::new_checked(&[0u8, 0, 8][..]).unwrap_err(), Malformed::BadGre);
    }
}
