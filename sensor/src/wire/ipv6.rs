//! IPv6 headers and the extension headers the decoder walks: hop-by-hop,
//! routing, destination options, fragment, AH and mobility.
use super::{be16, be32, Malformed, Result};

/// A view over the fixed 40-byte IPv6 header and what follows it.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Fixed header length.
    pub const HEADER_LEN: usize = 40;

    /// Wrap `buffer`, checking the version and the fixed header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Malformed::TruncatedIpv6);
        }
        let p = Self { buffer };
        if p.version() != 6 {
            return Err(Malformed::BadIpv6Version);
        }
        Ok(p)
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        ((be16(self.buffer.as_ref(), 0) >> 4) & 0xff) as u8
    }

    /// Flow label.
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), 0) & 0x000f_ffff
    }

    /// Payload length field (0 for jumbograms).
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Next header after the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[6]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[7]
    }

    /// Source address.
    pub fn src_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[8..24]);
        a
    }

    /// Destination address.
    pub fn dst_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[24..40]);
        a
    }

    /// Captured bytes after the fixed header, cut at the payload length when
    /// that is smaller and not zero.
    pub fn payload(&self) -> &[u8] {
        let b = &self.buffer.as_ref()[Self::HEADER_LEN..];
        let pl = self.payload_len() as usize;
        if pl == 0 {
            b
        } else {
            &b[..pl.min(b.len())]
        }
    }
}

/// Whether `nh` is an extension header that [`Ipv6ExtHeader`] can walk.
pub fn is_extension(nh: u8) -> bool {
    matches!(nh, 0 | 43 | 44 | 51 | 60 | 135)
}

/// A generic extension header: next header, and its length in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
    kind: u8,
}

impl<T: AsRef<[u8]>> Ipv6ExtHeader<T> {
    /// Wrap `buffer` as extension header `kind`, checking that the whole
    /// header (per its own length field) fits.
    pub fn new_checked(buffer: T, kind: u8) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < 8 {
            return Err(Malformed::BadIpv6ExtHeader);
        }
        let h = Self { buffer, kind };
        if h.header_len() > h.buffer.as_ref().len() {
            return Err(Malformed::BadIpv6ExtHeader);
        }
        Ok(h)
    }

    /// The next header value.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// This header's length in bytes.
    pub fn header_len(&self) -> usize {
        let l = self.buffer.as_ref()[1] as usize;
        match self.kind {
            44 => 8,
            51 => (l + 2) * 4,
            _ => (l + 1) * 8,
        }
    }
}

/// A view over an IPv6 fragment extension header.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6FragmentHeader<T> {
    /// Header length.
    pub const LEN: usize = 8;

    /// Wrap `buffer`, checking that the header fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::LEN {
            return Err(Malformed::BadIpv6ExtHeader);
        }
        Ok(Self { buffer })
    }

    /// Next header of the fragmentable part.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u32 {
        ((be16(self.buffer.as_ref(), 2) >> 3) as u32) * 8
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[3] & 1 != 0
    }

    /// Identification.
    pub fn ident(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(next: u8, payload_len: u16) -> [u8; 40] {
        let mut h = [0u8; 40];
        h[0] = 0x60;
        h[1] = 0x0a;
        h[2] = 0xbc;
        h[3] = 0xde;
        h[4..6].copy_from_slice(&payload_len.to_be_bytes());
        h[6] = next;
        h[7] = 64;
        h[8] = 0x20;
        h[9] = 0x01;
        h[23] = 1;
        h[24] = 0xfe;
        h[25] = 0x80;
        h[39] = 2;
        h
    }

    #[test]
    fn fixed_header() {
        let h = header(6, 20);
        let p = Ipv6Packet::new_checked(&h[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.flow_label(), 0xabcde);
        assert_eq!(p.payload_len(), 20);
        assert_eq!(p.next_header(), 6);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr()[..2], [0x20, 0x01]);
        assert_eq!(p.src_addr()[15], 1);
        assert_eq!(p.dst_addr()[..2], [0xfe, 0x80]);
        assert_eq!(p.payload().len(), 0);
    }

    #[test]
    fn extension_headers() {
        // hop-by-hop of 8 bytes, then a fragment header
        let hbh = [44u8, 0, 1, 4, 0, 0, 0, 0];
        let h = Ipv6ExtHeader::new_checked(&hbh[..], 0).unwrap();
        assert_eq!(h.next_header(), 44);
        assert_eq!(h.header_len(), 8);
        let frag = [17u8, 0, 0x05, 0x39, 0xde, 0xad, 0xbe, 0xef];
        let f = Ipv6FragmentHeader::new_checked(&frag[..]).unwrap();
        assert_eq!(f.next_header(), 17);
        assert_eq!(f.frag_offset(), 0x0538);
        assert!(f.more_frags());
        assert_eq!(f.ident(), 0xdeadbeef);
        // AH length is in 4-byte units minus 2
        let ah = [6u8, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Ipv6ExtHeader::new_checked(&ah[..], 51).unwrap().header_len(), 24);
    }

    #[test]
    fn rejects_bad_headers() {
        let h = header(6, 0);
        assert_eq!(Ipv6Packet::new_checked(&h[..39]).unwrap_err(), Malformed::TruncatedIpv6);
        let mut bad = h;
        bad[0] = 0x40;
        assert_eq!(Ipv6Packet::new_checked(&bad[..]).unwrap_err(), Malformed::BadIpv6Version);
        let long = [6u8, 3, 0, 0, 0, 0, 0, 0]; // claims 32 bytes
        assert_eq!(Ipv6ExtHeader::new_checked(&long[..], 60).unwrap_err(), Malformed::BadIpv6ExtHeader);
        assert!(is_extension(0) && is_extension(44) && !is_extension(6));
    }
}
