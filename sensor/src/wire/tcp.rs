//! TCP headers.
use super::{be16, be32, Malformed, Result};

/// TCP flag bits as they sit in byte 13 of the header.
pub mod flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
    /// URG
    pub const URG: u8 = 0x20;
    /// ECE
    pub const ECE: u8 = 0x40;
    /// CWR
    pub const CWR: u8 = 0x80;
}

/// A view over a TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Header length without options.
    pub const MIN_HEADER_LEN: usize = 20;

    /// Wrap `buffer`, checking that the header with its options fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let len = buffer.as_ref().len();
        if len < Self::MIN_HEADER_LEN {
            return Err(Malformed::TruncatedTcp);
        }
        let p = Self { buffer };
        let hl = p.header_len();
        if hl < Self::MIN_HEADER_LEN || hl > len {
            return Err(Malformed::BadTcpDataOffset);
        }
        Ok(p)
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    /// Acknowledgement number.
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), 8)
    }

    /// Header length in bytes (data offset).
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[12] >> 4) as usize) * 4
    }

    /// The eight flag bits (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[13]
    }

    /// Receive window.
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), 14)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: [u8; 24] = [
        0x30, 0x39, 0x00, 0x50, // 12345 -> 80
        0x00, 0x00, 0x00, 0x01, // seq 1
        0x00, 0x00, 0x00, 0x00, // ack 0
        0x60, 0x02, 0xff, 0xff, // 24-byte header, SYN, window 65535
        0x00, 0x00, 0x00, 0x00, // checksum, urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
    ];

    #[test]
    fn parses_fields() {
        let p = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.src_port(), 12345);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 1);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), flags::SYN);
        assert_eq!(p.window(), 65535);
    }

    #[test]
    fn rejects_bad_offsets() {
        assert_eq!(TcpPacket::new_checked(&SYN[..19]).unwrap_err(), Malformed::TruncatedTcp);
        let mut s = SYN;
        s[12] = 0x40; // 16 bytes: below minimum
        assert_eq!(TcpPacket::new_checked(&s[..]).unwrap_err(), Malformed::BadTcpDataOffset);
        s[12] = 0x70; // 28 bytes: beyond buffer
        assert_eq!(TcpPacket::new_checked(&s[..]).unwrap_err(), Malformed::BadTcpDataOffset);
    }
}
