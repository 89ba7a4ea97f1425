//! The direction-agnostic flow key.
use crate::wire::{PacketMeta, MAX_VLANS};
use std::hash::{Hash, Hasher};

/// A bidirectional flow key: VLAN ids, protocol and the canonical
/// (lower, higher) endpoint pair. Both directions of a flow give the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct FlowKey {
    /// The lower (address, port) endpoint's address.
    pub lo_addr: [u8; 16],
    /// The higher endpoint's address.
    pub hi_addr: [u8; 16],
    /// The lower endpoint's port (or ICMP key part).
    pub lo_port: u16,
    /// The higher endpoint's port (or ICMP key part).
    pub hi_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// How many of `vlans` are set.
    pub vlan_count: u8,
    /// VLAN ids, outermost first.
    pub vlans: [u16; MAX_VLANS],
}

/// A flow's endpoints oriented by who initiated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oriented {
    /// Initiator address.
    pub src: [u8; 16],
    /// Initiator port.
    pub sport: u16,
    /// Responder address.
    pub dst: [u8; 16],
    /// Responder port.
    pub dport: u16,
}

impl FlowKey {
    /// The endpoints as initiator and responder: the one place that turns
    /// the (lower, higher) key and the flow's `initiator_is_lo` into a direction.
    pub fn oriented(&self, initiator_is_lo: bool) -> Oriented {
        if initiator_is_lo {
            Oriented { src: self.lo_addr, sport: self.lo_port, dst: self.hi_addr, dport: self.hi_port }
        } else {
            Oriented { src: self.hi_addr, sport: self.hi_port, dst: self.lo_addr, dport: self.lo_port }
        }
    }

    /// The key of a packet, and whether its sender is the lower endpoint.
    #[inline]
    pub fn from_meta(m: &PacketMeta) -> (FlowKey, bool) {
        let sender_lo = (m.src, m.src_port) <= (m.dst, m.dst_port);
        let (lo_addr, lo_port, hi_addr, hi_port) =
            if sender_lo { (m.src, m.src_port, m.dst, m.dst_port) } else { (m.dst, m.dst_port, m.src, m.src_port) };
        (
            FlowKey {
                lo_addr,
                hi_addr,
                lo_port,
                hi_port,
                proto: m.proto,
                ip_version: m.ip_version,
                vlan_count: m.vlan_count,
                vlans: m.vlans,
            },
            sender_lo,
        )
    }
}

#[inline(always)]
fn word(b: &[u8; 16], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i * 8..i * 8 + 8]);
    u64::from_ne_bytes(w)
}

impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Six machine words instead of a byte-slice walk: this runs per packet.
        h.write_u64(word(&self.lo_addr, 0));
        h.write_u64(word(&self.lo_addr, 1));
        h.write_u64(word(&self.hi_addr, 0));
        h.write_u64(word(&self.hi_addr, 1));
        h.write_u64(
            (self.lo_port as u64)
                | (self.hi_port as u64) << 16
                | (self.proto as u64) << 32
                | (self.vlan_count as u64) << 40,
        );
        let mut v = 0u64;
        for (i, id) in self.vlans.iter().enumerate() {
            v |= (*id as u64) << (16 * i);
        }
        h.write_u64(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_share_a_key() {
        let mut a = PacketMeta { proto: 6, ip_version: 4, src_port: 5000, dst_port: 80, ..Default::default() };
        a.src[..4].copy_from_slice(&[10, 0, 0, 2]);
        a.dst[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut b = a;
        std::mem::swap(&mut b.src, &mut b.dst);
        std::mem::swap(&mut b.src_port, &mut b.dst_port);
        let (ka, lo_a) = FlowKey::from_meta(&a);
        let (kb, lo_b) = FlowKey::from_meta(&b);
        assert_eq!(ka, kb);
        assert_ne!(lo_a, lo_b);
        assert_eq!(&ka.lo_addr[..4], &[10, 0, 0, 1]);
        assert_eq!(ka.lo_port, 80);
        let mut c = a;
        c.vlan_count = 1;
        c.vlans[0] = 5;
        assert_ne!(FlowKey::from_meta(&c).0, ka, "VLAN is part of the key");
    }
}
