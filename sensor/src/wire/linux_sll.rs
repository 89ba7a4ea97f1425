//! Linux "cooked" capture headers: SLL (DLT_LINUX_SLL, 16 bytes) and SLL2
//! (DLT_LINUX_SLL2, 20 bytes). Both carry the EtherType of the payload.
use super::{be16, be32, EtherType, Malformed, Result};

/// A view over a 16-byte SLL header.
#[derive(Debug, Clone, Copy)]
pub struct SllHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SllHeader<T> {
    /// Header length.
    pub const LEN: usize = 16;

    /// Wrap `buffer`, checking that the header fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::LEN {
            return Err(Malformed::TruncatedLink);
        }
        Ok(Self { buffer })
    }

    /// Packet type (0 to us, 1 broadcast, 2 multicast, 3 other host, 4 outgoing).
    pub fn packet_type(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// ARPHRD type of the device.
    pub fn hatype(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> EtherType {
        EtherType::from(be16(self.buffer.as_ref(), 14))
    }
}

/// A view over a 20-byte SLL2 header.
#[derive(Debug, Clone, Copy)]
pub struct Sll2Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Sll2Header<T> {
    /// Header length.
    pub const LEN: usize = 20;

    /// Wrap `buffer`, checking that the header fits.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < Self::LEN {
            return Err(Malformed::TruncatedLink);
        }
        Ok(Self { buffer })
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> EtherType {
        EtherType::from(be16(self.buffer.as_ref(), 0))
    }

    /// Interface index the packet was seen on.
    pub fn ifindex(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }

    /// Packet type (as in SLL).
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[10]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sll_fields() {
        let mut h = [0u8; 16];
        h[1] = 4; // outgoing
        h[3] = 1; // ARPHRD_ETHER
        h[14] = 0x86;
        h[15] = 0xdd;
        let s = SllHeader::new_checked(&h[..]).unwrap();
        assert_eq!(s.packet_type(), 4);
        assert_eq!(s.hatype(), 1);
        assert_eq!(s.protocol(), EtherType::Ipv6);
        assert_eq!(SllHeader::new_checked(&h[..15]).unwrap_err(), Malformed::TruncatedLink);
    }

    #[test]
    fn sll2_fields() {
        let mut h = [0u8; 20];
        h[0] = 0x08;
        h[7] = 3; // ifindex 3
        h[10] = 0; // to us
        let s = Sll2Header::new_checked(&h[..]).unwrap();
        assert_eq!(s.protocol(), EtherType::Ipv4);
        assert_eq!(s.ifindex(), 3);
        assert_eq!(s.packet_type(), 0);
        assert_eq!(Sll2Header::new_checked(&h[..19]).unwrap_err(), Malformed::TruncatedLink);
    }
}
