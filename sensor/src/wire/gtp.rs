//! GTP-U, the GPRS Tunnelling Protocol's user plane (3GPP TS 29.281), carried
//! in UDP port 2152 on mobile operators' Gn, S1-U, S5 and N3 interfaces.
//! Only G-PDUs (message type 255) carry a user's IP packet; echo and error
//! messages stay with the outer UDP flow.
use super::{be16, be32, Malformed, Result};

/// The IANA UDP port for GTP-U.
pub const PORT: u16 = 2152;
/// Message type of a G-PDU (an encapsulated user packet).
pub const G_PDU: u8 = 255;
/// Extension headers followed before the packet is called malformed.
const MAX_EXTENSIONS: usize = 8;

/// A view over a GTPv1-U header and what follows it.
#[derive(Debug, Clone, Copy)]
pub struct GtpPacket<T: AsRef<[u8]>> {
    buffer: T,
    header_len: usize,
}

mod field {
    pub const FLAGS: usize = 0;
    pub const MSG_TYPE: usize = 1;
    pub const LENGTH: usize = 2;
    pub const TEID: usize = 4;
    /// First byte after the mandatory header: the optional part (sequence
    /// number, N-PDU number, next extension header type) when E, S or PN is set.
    pub const OPTIONAL: usize = 8;
    pub const NEXT_EXT: usize = 11;
}

impl<T: AsRef<[u8]>> GtpPacket<T> {
    /// Length of the mandatory header.
    pub const HEADER_LEN: usize = field::OPTIONAL;

    /// Wrap `buffer`: a GTP version 1 header (PT = 1) with its optional part
    /// and extension headers inside the buffer.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < Self::HEADER_LEN {
            return Err(Malformed::TruncatedGtp);
        }
        let flags = b[field::FLAGS];
        if flags >> 5 != 1 || flags & 0x10 == 0 {
            return Err(Malformed::BadGtp);
        }
        let mut len = Self::HEADER_LEN;
        if flags & 0x07 != 0 {
            len = field::NEXT_EXT + 1;
            if b.len() < len {
                return Err(Malformed::TruncatedGtp);
            }
            let mut next = b[field::NEXT_EXT];
            let mut n = 0;
            // Each extension header: its length in 4-byte units, content, next type.
            while flags & 0x04 != 0 && next != 0 {
                n += 1;
                let units = *b.get(len).ok_or(Malformed::TruncatedGtp)? as usize;
                if units == 0 || n > MAX_EXTENSIONS {
                    return Err(Malformed::BadGtp);
                }
                len += units * 4;
                next = *b.get(len - 1).ok_or(Malformed::TruncatedGtp)?;
            }
        }
        Ok(Self { buffer, header_len: len })
    }

    /// Message type (255 for a G-PDU).
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::MSG_TYPE]
    }

    /// Bytes after the mandatory 8-byte header, as the header declares them.
    pub fn length(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The tunnel endpoint identifier of the receiving end.
    pub fn teid(&self) -> u32 {
        be32(self.buffer.as_ref(), field::TEID)
    }

    /// Header bytes, optional part and extension headers included.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// What follows the headers (the user's IP packet in a G-PDU).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_g_pdu_with_and_without_extension_headers() {
        // Version 1, PT 1, no optional fields; G-PDU; length 1; TEID 0x01020304.
        let d = [0x30u8, 0xff, 0x00, 0x01, 1, 2, 3, 4, 0x45];
        let g = GtpPacket::new_checked(&d[..]).unwrap();
        assert_eq!((g.msg_type(), g.length(), g.teid(), g.header_len()), (G_PDU, 1, 0x0102_0304, 8));
        assert_eq!(g.payload(), &[0x45]);
        // E set: sequence, N-PDU, next type 0x85 (PDU session container, 1 unit), then none.
        let d = [0x34u8, 0xff, 0, 9, 0, 0, 0, 7, 0, 0, 0, 0x85, 1, 0x10, 0x05, 0x00, 0x60];
        let g = GtpPacket::new_checked(&d[..]).unwrap();
        assert_eq!((g.teid(), g.header_len()), (7, 16));
        assert_eq!(g.payload(), &[0x60]);
        // S set only: the optional part is there, no extensions.
        let d = [0x32u8, 0xff, 0, 5, 0, 0, 0, 7, 0, 1, 0, 0, 0x45];
        assert_eq!(GtpPacket::new_checked(&d[..]).unwrap().header_len(), 12);
    }

    #[test]
    fn rejects_other_versions_and_broken_extensions() {
        assert_eq!(GtpPacket::new_checked(&[0x30u8, 0xff, 0][..]).unwrap_err(), Malformed::TruncatedGtp);
        // GTPv2 (version 2) and GTP' (PT 0) are not GTP-U.
        assert_eq!(GtpPacket::new_checked(&[0x48u8, 0xff, 0, 0, 0, 0, 0, 0][..]).unwrap_err(), Malformed::BadGtp);
        assert_eq!(GtpPacket::new_checked(&[0x20u8, 0xff, 0, 0, 0, 0, 0, 0][..]).unwrap_err(), Malformed::BadGtp);
        // An extension header of length 0 would never end.
        let d = [0x34u8, 0xff, 0, 8, 0, 0, 0, 7, 0, 0, 0, 0x85, 0, 0, 0, 0];
        assert_eq!(GtpPacket::new_checked(&d[..]).unwrap_err(), Malformed::BadGtp);
        // Optional part cut short, extension cut short.
        assert_eq!(
            GtpPacket::new_checked(&[0x34u8, 0xff, 0, 8, 0, 0, 0, 7, 0][..]).unwrap_err(),
            Malformed::TruncatedGtp
        );
        let d = [0x34u8, 0xff, 0, 8, 0, 0, 0, 7, 0, 0, 0, 0x85, 2, 0, 0, 0];
        assert_eq!(GtpPacket::new_checked(&d[..]).unwrap_err(), Malformed::TruncatedGtp);
    }
}
