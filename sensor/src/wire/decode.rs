//! The full decode walk: link layer → (VLAN/QinQ, MPLS, PPPoE, PBB) → IP →
//! (tunnel → inner IP)* → transport, into a fixed-size [`PacketMeta`].
//!
//! Nothing here allocates after [`Decoder::new`]; every failure is a
//! [`Malformed`] reason that [`DecodeStats`] counts.

use super::ethernet::{EtherType, EthernetFrame, VlanTag};
use super::geneve::{self, GenevePacket};
use super::gre::GrePacket;
use super::gtp::{self, GtpPacket};
use super::icmp::{self, IcmpPacket};
use super::ipv4::Ipv4Packet;
use super::ipv6::{is_extension, Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet};
use super::linux_sll::{Sll2Header, SllHeader};
use super::null::{NullFamily, NullHeader};
use super::tcp::TcpPacket;
use super::udp::UdpPacket;
use super::vxlan::{self, VxlanPacket};
use super::{be16, IpProtocol, Malformed};

/// VLAN ids kept per packet (outermost first); deeper tags are parsed but not kept.
pub const MAX_VLANS: usize = 4;
/// Nested tunnels followed before a packet is called malformed.
pub const MAX_TUNNEL_DEPTH: u8 = 4;
const MAX_IPV6_EXT: usize = 8;
const FRAG_SLOTS: usize = 4096;

/// Link-layer header types (pcap `LINKTYPE_*` values) the decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// 1: Ethernet II.
    Ethernet,
    /// 0: BSD loopback, family in host order.
    Null,
    /// 108: OpenBSD loopback, family in network order.
    Loop,
    /// 101 (and 12/14 on some systems): raw IPv4 or IPv6.
    Raw,
    /// 228: raw IPv4.
    Ipv4,
    /// 229: raw IPv6.
    Ipv6,
    /// 113: Linux cooked capture v1.
    LinuxSll,
    /// 276: Linux cooked capture v2.
    LinuxSll2,
    /// 10: FDDI with LLC/SNAP.
    Fddi,
    /// Anything else (counted as skipped).
    Other(u32),
}

impl LinkType {
    /// Map a pcap LINKTYPE value.
    pub fn from_pcap(v: u32) -> Self {
        match v {
            1 => Self::Ethernet,
            0 => Self::Null,
            108 => Self::Loop,
            101 | 12 | 14 => Self::Raw,
            228 => Self::Ipv4,
            229 => Self::Ipv6,
            113 => Self::LinuxSll,
            276 => Self::LinuxSll2,
            10 => Self::Fddi,
            other => Self::Other(other),
        }
    }
}

/// The encapsulation a flow was found inside (the outermost one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum TunnelKind {
    /// Not tunnelled.
    #[default]
    None,
    /// GRE (including ERSPAN and PPTP).
    Gre,
    /// VXLAN over UDP.
    Vxlan,
    /// IPv4 or IPv6 directly inside IP (protocols 4 and 41).
    IpInIp,
    /// GTP-U (a mobile network's user plane) over UDP.
    GtpU,
    /// Geneve over UDP.
    Geneve,
}

impl TunnelKind {
    /// Name used in flow records.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gre => "gre",
            Self::Vxlan => "vxlan",
            Self::IpInIp => "ipip",
            Self::GtpU => "gtpu",
            Self::Geneve => "geneve",
        }
    }
}

/// Where a packet sits in a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Frag {
    /// Not a fragment.
    #[default]
    None,
    /// The first fragment: it carries the transport header.
    First,
    /// A later fragment: ports come from the first fragment, when it was seen.
    Later,
}

/// Why a well-formed packet does not make a flow. Not an error; counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Skipped {
    /// The payload is not IP (ARP, LLDP, STP, ...).
    NotIp,
    /// The capture's link type is not one the decoder reads.
    UnsupportedLinkType,
    /// MPLS or PPP carrying something other than IP.
    UnsupportedEncapsulation,
}

impl Skipped {
    /// Number of variants.
    pub const COUNT: usize = 3;
    /// All variants, in counter order.
    pub const ALL: [Skipped; Self::COUNT] = [Self::NotIp, Self::UnsupportedLinkType, Self::UnsupportedEncapsulation];

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::NotIp => "not_ip",
            Self::UnsupportedLinkType => "unsupported_link_type",
            Self::UnsupportedEncapsulation => "unsupported_encapsulation",
        }
    }
}

/// Everything the flow tracker needs from one packet. Fixed size, `Copy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Packet time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Source address (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// 4 or 6.
    pub ip_version: u8,
    /// IP protocol number of the (inner) transport.
    pub proto: u8,
    /// Source port; for ICMP queries the identifier, else 0.
    pub src_port: u16,
    /// Destination port; for ICMP queries the identifier, for other ICMP
    /// messages `type << 8 | code`.
    pub dst_port: u16,
    /// Bytes at the IP layer (from the IP length fields, not the capture).
    pub ip_len: u32,
    /// Transport payload bytes (IP length minus IP and transport headers).
    pub payload_len: u32,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// ICMP type (ICMP and ICMPv6 only).
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// Fragment position.
    pub frag: Frag,
    /// Offset of the (inner) TCP or UDP payload in the captured frame; with
    /// `payload_cap` it locates the bytes inspection reads. 0 with
    /// `payload_cap` 0 when there are none (fragments, other protocols).
    pub payload_off: u16,
    /// Captured payload bytes at `payload_off` (at most `payload_len`: no
    /// Ethernet padding; less when the capture was cut by the snap length).
    pub payload_cap: u16,
    /// TCP sequence number (0 for other protocols).
    pub tcp_seq: u32,
    /// VLAN ids, outermost first.
    pub vlans: [u16; MAX_VLANS],
    /// How many of `vlans` are set.
    pub vlan_count: u8,
    /// The outermost tunnel, if any.
    pub tunnel: TunnelKind,
    /// Outer IP version of the tunnel (4 or 6).
    pub outer_version: u8,
    /// Outer source address of the tunnel.
    pub outer_src: [u8; 16],
    /// Outer destination address of the tunnel.
    pub outer_dst: [u8; 16],
    /// The outermost tunnel's identifier: VXLAN or Geneve VNI, GTP-U TEID
    /// (0 for tunnels without one).
    pub tunnel_id: u32,
}

/// Per-decoder counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Packets handed to the decoder.
    pub packets: u64,
    /// Captured bytes handed to the decoder.
    pub bytes: u64,
    /// Malformed packets by [`Malformed`] reason.
    pub malformed: [u64; Malformed::COUNT],
    /// Skipped packets by [`Skipped`] reason.
    pub skipped: [u64; Skipped::COUNT],
    /// Later fragments whose first fragment was not seen (ports unknown).
    pub frag_unmatched: u64,
}

impl DecodeStats {
    /// Total malformed packets.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }

    /// Add another decoder's counters.
    pub fn merge(&mut self, o: &DecodeStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        for (a, b) in self.malformed.iter_mut().zip(o.malformed.iter()) {
            *a += b;
        }
        for (a, b) in self.skipped.iter_mut().zip(o.skipped.iter()) {
            *a += b;
        }
        self.frag_unmatched += o.frag_unmatched;
    }
}

#[derive(Clone, Copy, Default)]
struct FragSlot {
    src: [u8; 16],
    dst: [u8; 16],
    ident: u32,
    proto: u8,
    used: bool,
    src_port: u16,
    dst_port: u16,
}

enum Outcome {
    Flow,
    Skip(Skipped),
}

type Step = Result<Outcome, Malformed>;

/// A stateful decoder: counters, and a small direct-mapped table that gives
/// later IP fragments the ports of their first fragment.
pub struct Decoder {
    frags: Box<[FragSlot]>,
    /// Address of the frame being decoded (payload offsets are taken from it).
    base: usize,
    /// Counters.
    pub stats: DecodeStats,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("stats", &self.stats).finish()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with empty counters.
    pub fn new() -> Self {
        Self { frags: vec![FragSlot::default(); FRAG_SLOTS].into_boxed_slice(), base: 0, stats: DecodeStats::default() }
    }

    /// Decode one captured packet. Returns `true` when `meta` describes an IP
    /// packet for the flow tracker; otherwise the packet was counted as
    /// malformed or skipped. Never panics, whatever the bytes.
    pub fn decode(&mut self, link: LinkType, data: &[u8], wire_len: u32, ts_ns: u64, meta: &mut PacketMeta) -> bool {
        self.stats.packets += 1;
        self.stats.bytes += data.len() as u64;
        *meta = PacketMeta { ts_ns, ..PacketMeta::default() };
        self.base = data.as_ptr() as usize;
        let extra = (wire_len as usize).saturating_sub(data.len());
        match self.link(link, data, extra, meta) {
            Ok(Outcome::Flow) => true,
            Ok(Outcome::Skip(s)) => {
                self.stats.skipped[s as usize] += 1;
                false
            }
            Err(m) => {
                self.stats.malformed[m as usize] += 1;
                false
            }
        }
    }

    fn link(&mut self, link: LinkType, b: &[u8], extra: usize, m: &mut PacketMeta) -> Step {
        match link {
            LinkType::Ethernet => self.ether(b, extra, m, 0),
            LinkType::Null | LinkType::Loop => {
                let h = NullHeader::new_checked(b)?;
                match h.family() {
                    NullFamily::Ipv4 => self.ipv4(&b[NullHeader::<&[u8]>::LEN..], extra, m, 0),
                    NullFamily::Ipv6 => self.ipv6(&b[NullHeader::<&[u8]>::LEN..], extra, m, 0),
                    NullFamily::Unknown(_) => Ok(Outcome::Skip(Skipped::NotIp)),
                }
            }
            LinkType::Raw => match b.first().map(|v| v >> 4) {
                Some(4) => self.ipv4(b, extra, m, 0),
                Some(6) => self.ipv6(b, extra, m, 0),
                Some(_) => Ok(Outcome::Skip(Skipped::NotIp)),
                None => Err(Malformed::TruncatedLink),
            },
            LinkType::Ipv4 => self.ipv4(b, extra, m, 0),
            LinkType::Ipv6 => self.ipv6(b, extra, m, 0),
            LinkType::LinuxSll => {
                let h = SllHeader::new_checked(b)?;
                self.ethertype(h.protocol(), &b[SllHeader::<&[u8]>::LEN..], extra, m, 0)
            }
            LinkType::LinuxSll2 => {
                let h = Sll2Header::new_checked(b)?;
                self.ethertype(h.protocol(), &b[Sll2Header::<&[u8]>::LEN..], extra, m, 0)
            }
            LinkType::Fddi => {
                // Frame control, two MAC addresses, then LLC/SNAP (8 bytes).
                if b.len() < 21 {
                    return Err(Malformed::TruncatedLink);
                }
                if b[13..16] != [0xAA, 0xAA, 0x03] {
                    return Ok(Outcome::Skip(Skipped::NotIp));
                }
                self.ethertype(EtherType::from(be16(b, 19)), &b[21..], extra, m, 0)
            }
            LinkType::Other(_) => Ok(Outcome::Skip(Skipped::UnsupportedLinkType)),
        }
    }

    fn ether(&mut self, b: &[u8], extra: usize, m: &mut PacketMeta, depth: u8) -> Step {
        let f = EthernetFrame::new_checked(b)?;
        let (et, off) = f.ethertype_and_offset();
        self.ethertype(et, &b[off..], extra, m, depth)
    }

    fn ethertype(&mut self, mut et: EtherType, mut b: &[u8], extra: usize, m: &mut PacketMeta, depth: u8) -> Step {
        loop {
            match et {
                EtherType::Vlan => {
                    let tag = VlanTag::new_checked(b)?;
                    if (m.vlan_count as usize) < MAX_VLANS {
                        m.vlans[m.vlan_count as usize] = tag.vid();
                        m.vlan_count += 1;
                    }
                    et = tag.ethertype();
                    b = &b[VlanTag::<&[u8]>::LEN..];
                }
                EtherType::Ipv4 => return self.ipv4(b, extra, m, depth),
                EtherType::Ipv6 => return self.ipv6(b, extra, m, depth),
                EtherType::Mpls => return self.mpls(b, extra, m, depth),
                EtherType::PppoeSession => {
                    // 6-byte PPPoE header, then the 2-byte PPP protocol.
                    if b.len() < 8 {
                        return Err(Malformed::TruncatedPpp);
                    }
                    return match be16(b, 6) {
                        0x0021 => self.ipv4(&b[8..], extra, m, depth),
                        0x0057 => self.ipv6(&b[8..], extra, m, depth),
                        _ => Ok(Outcome::Skip(Skipped::UnsupportedEncapsulation)),
                    };
                }
                EtherType::Pbb => {
                    // 4-byte I-tag, then a customer Ethernet header.
                    if b.len() < 4 {
                        return Err(Malformed::TruncatedLink);
                    }
                    return self.ether(&b[4..], extra, m, depth);
                }
                EtherType::TransparentEthernet => return self.ether(b, extra, m, depth),
                EtherType::Unknown(_) => return Ok(Outcome::Skip(Skipped::NotIp)),
            }
        }
    }

    fn mpls(&mut self, b: &[u8], extra: usize, m: &mut PacketMeta, depth: u8) -> Step {
        let mut off = 0;
        loop {
            if b.len() < off + 4 {
                return Err(Malformed::TruncatedMpls);
            }
            let bottom = b[off + 2] & 0x01 != 0;
            off += 4;
            if bottom {
                break;
            }
        }
        match b.get(off).map(|v| v >> 4) {
            Some(4) => self.ipv4(&b[off..], extra, m, depth),
            Some(6) => self.ipv6(&b[off..], extra, m, depth),
            Some(_) => Ok(Outcome::Skip(Skipped::UnsupportedEncapsulation)),
            None => Err(Malformed::TruncatedMpls),
        }
    }

    fn ipv4(&mut self, b: &[u8], extra: usize, m: &mut PacketMeta, depth: u8) -> Step {
        let p = Ipv4Packet::new_checked(b)?;
        let hl = p.header_len();
        let tl = p.total_len() as usize;
        let wire = b.len() + extra;
        if tl > wire {
            return Err(Malformed::BadIpv4TotalLen);
        }
        // Total length 0: a TSO/GSO super-packet; the wire length is the truth.
        let ip_len = if tl == 0 { wire } else { tl };
        m.ip_version = 4;
        m.src = [0; 16];
        m.dst = [0; 16];
        m.src[..4].copy_from_slice(&p.src_addr());
        m.dst[..4].copy_from_slice(&p.dst_addr());
        m.proto = p.protocol_raw();
        m.ip_len = ip_len as u32;
        let l4_len = ip_len - hl;
        let offset = p.frag_offset();
        let more = p.more_frags();
        if offset != 0 {
            m.frag = Frag::Later;
            m.payload_len = l4_len as u32;
            self.frag_lookup(p.ident() as u32, m);
            return Ok(Outcome::Flow);
        }
        m.frag = if more { Frag::First } else { Frag::None };
        let payload = p.payload();
        let r = self.transport(IpProtocol::from(m.proto), payload, l4_len, extra, m, depth)?;
        if m.frag == Frag::First {
            self.frag_store(p.ident() as u32, m);
        }
        Ok(r)
    }

    fn ipv6(&mut self, b: &[u8], extra: usize, m: &mut PacketMeta, depth: u8) -> Step {
        let p = Ipv6Packet::new_checked(b)?;
        let pl = p.payload_len() as usize;
        let wire = b.len() + extra;
        if Ipv6Packet::<&[u8]>::HEADER_LEN + pl > wire {
            return Err(Malformed::BadIpv6PayloadLen);
        }
        // Payload length 0: a jumbogram or a GSO super-packet; use the wire.
        let ip_len = if pl == 0 { wire } else { Ipv6Packet::<&[u8]>::HEADER_LEN + pl };
        m.ip_version = 6;
        m.src = p.src_addr();
        m.dst = p.dst_addr();
        m.ip_len = ip_len as u32;
        let mut nh = p.next_header();
        let mut rest = p.payload();
        let mut l4_len = ip_len - Ipv6Packet::<&[u8]>::HEADER_LEN;
        let mut frag: Option<(u32, bool, u32)> = None;
        let mut n = 0;
        while is_extension(nh) {
            n += 1;
            if n > MAX_IPV6_EXT {
                return Err(Malformed::BadIpv6ExtHeader);
            }
            let h = Ipv6ExtHeader::new_checked(rest, nh)?;
            let hl = h.header_len();
            if hl > l4_len {
                return Err(Malformed::BadIpv6ExtHeader);
            }
            if nh == 44 {
                let f = Ipv6FragmentHeader::new_checked(rest)?;
                frag = Some((f.frag_offset(), f.more_frags(), f.ident()));
            }
            nh = h.next_header();
            rest = &rest[hl..];
            l4_len -= hl;
        }
        m.proto = nh;
        if let Some((offset, more, ident)) = frag {
            if offset != 0 {
                m.frag = Frag::Later;
                m.payload_len = l4_len as u32;
                self.frag_lookup(ident, m);
                return Ok(Outcome::Flow);
            }
            if !more {
                // An "atomic" fragment (offset 0, no more): a whole datagram.
                m.frag = Frag::None;
            } else {
                m.frag = Frag::First;
                let r = self.transport(IpProtocol::from(nh), rest, l4_len, extra, m, depth)?;
                self.frag_store(ident, m);
                return Ok(r);
            }
        }
        self.transport(IpProtocol::from(nh), rest, l4_len, extra, m, depth)
    }

    /// Parse the transport header in `b` (captured bytes) whose IP-declared
    /// length is `l4_len`; follow tunnels.
    fn transport(
        &mut self,
        proto: IpProtocol,
        b: &[u8],
        l4_len: usize,
        extra: usize,
        m: &mut PacketMeta,
        depth: u8,
    ) -> Step {
        let fragment = m.frag != Frag::None;
        match proto {
            IpProtocol::Tcp => {
                let t = TcpPacket::new_checked(b)?;
                m.src_port = t.src_port();
                m.dst_port = t.dst_port();
                m.tcp_flags = t.flags();
                m.tcp_seq = t.seq_number();
                m.payload_len = l4_len.saturating_sub(t.header_len()) as u32;
                if m.frag != Frag::Later {
                    self.locate(b.get(t.header_len()..).unwrap_or(&[]), m);
                }
            }
            IpProtocol::Udp => {
                let u = UdpPacket::new_checked(b)?;
                m.src_port = u.src_port();
                m.dst_port = u.dst_port();
                m.payload_len = l4_len.saturating_sub(UdpPacket::<&[u8]>::HEADER_LEN) as u32;
                if m.frag != Frag::Later {
                    // A first fragment's payload is the start of the datagram (a DNS header and question fit).
                    self.locate(u.payload(), m);
                }
                // A tunnel is known by its UDP port, the destination's or
                // else the source's (as tshark decodes). A header that does
                // not parse is malformed when it was sent to the tunnel's
                // port; from it only, the datagram stays an ordinary UDP flow.
                let port = match (m.dst_port, m.src_port) {
                    (d @ (vxlan::PORT | geneve::PORT | gtp::PORT), _) => Some((d, true)),
                    (_, s @ (vxlan::PORT | geneve::PORT | gtp::PORT)) => Some((s, false)),
                    _ => None,
                };
                if let (false, Some((port, to_it))) = (fragment, port) {
                    match port {
                        vxlan::PORT => {
                            let v = tunnel_header(VxlanPacket::new_checked(u.payload()), to_it)?;
                            if let Some(v) =
                                v.filter(|v| v.vni_valid() && v.payload().len() >= EthernetFrame::<&[u8]>::HEADER_LEN)
                            {
                                let (inner, id) = (v.payload(), v.vni());
                                return self.tunnel(TunnelKind::Vxlan, id, m, depth, |d, m, depth| {
                                    d.ether(inner, extra, m, depth)
                                });
                            }
                        }
                        geneve::PORT => {
                            let Some(g) = tunnel_header(GenevePacket::new_checked(u.payload()), to_it)? else {
                                return Ok(Outcome::Flow);
                            };
                            let target = match g.protocol() {
                                0x6558 => Some(Inner::Ether(g.payload())),
                                0x0800 => Some(Inner::Ipv4(g.payload())),
                                0x86DD => Some(Inner::Ipv6(g.payload())),
                                _ => None,
                            };
                            if let Some(t) = target {
                                let id = g.vni();
                                return self.tunnel(TunnelKind::Geneve, id, m, depth, |d, m, depth| {
                                    t.decode(d, extra, m, depth)
                                });
                            }
                        }
                        gtp::PORT => {
                            let Some(g) = tunnel_header(GtpPacket::new_checked(u.payload()), to_it)? else {
                                return Ok(Outcome::Flow);
                            };
                            let inner = g.payload();
                            let target = match (g.msg_type(), inner.first().map(|b| b >> 4)) {
                                (gtp::G_PDU, Some(4)) => Some(Inner::Ipv4(inner)),
                                (gtp::G_PDU, Some(6)) => Some(Inner::Ipv6(inner)),
                                _ => None,
                            };
                            if let Some(t) = target {
                                let id = g.teid();
                                return self.tunnel(TunnelKind::GtpU, id, m, depth, |d, m, depth| {
                                    t.decode(d, extra, m, depth)
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
            IpProtocol::Sctp => {
                // SCTP's common header starts with the two ports, like UDP.
                let u = UdpPacket::new_checked(b).map_err(|_| Malformed::TruncatedUdp)?;
                m.src_port = u.src_port();
                m.dst_port = u.dst_port();
                m.payload_len = l4_len.saturating_sub(12) as u32;
            }
            IpProtocol::Icmp | IpProtocol::Icmpv6 => {
                let i = IcmpPacket::new_checked(b)?;
                let (t, c) = (i.msg_type(), i.msg_code());
                m.icmp_type = t;
                m.icmp_code = c;
                let query = if proto == IpProtocol::Icmp { icmp::v4_is_query(t) } else { icmp::v6_is_query(t) };
                if query {
                    m.src_port = i.echo_ident();
                    m.dst_port = i.echo_ident();
                } else {
                    m.src_port = 0;
                    m.dst_port = (t as u16) << 8 | c as u16;
                }
                m.payload_len = l4_len.saturating_sub(IcmpPacket::<&[u8]>::HEADER_LEN) as u32;
            }
            IpProtocol::Gre if !fragment => {
                let g = GrePacket::new_checked(b)?;
                let inner = g.payload();
                let proto = g.protocol_raw();
                let target = match (g.version(), proto) {
                    (0, 0x0800) => Some(Inner::Ipv4(inner)),
                    (0, 0x86DD) => Some(Inner::Ipv6(inner)),
                    (0, 0x6558) => Some(Inner::Ether(inner)),
                    (0, 0x8847) => Some(Inner::Mpls(inner)),
                    // ERSPAN type II (8-byte header); without a sequence number, type I (none).
                    (0, 0x88BE) => {
                        let skip = if g.has_seq() { 8 } else { 0 };
                        inner.get(skip..).map(Inner::Ether)
                    }
                    // ERSPAN type III: 12 bytes, plus an 8-byte subheader when O is set.
                    (0, 0x22EB) => match inner.get(11) {
                        Some(&last) => inner.get(if last & 1 != 0 { 20 } else { 12 }..).map(Inner::Ether),
                        None => None,
                    },
                    (1, 0x880B) => ppp_payload(inner),
                    _ => None,
                };
                m.payload_len = l4_len.saturating_sub(g.header_len()) as u32;
                if let Some(t) = target {
                    return self.tunnel(TunnelKind::Gre, 0, m, depth, |d, m, depth| t.decode(d, extra, m, depth));
                }
            }
            IpProtocol::IpIp if !fragment => {
                return self.tunnel(TunnelKind::IpInIp, 0, m, depth, |d, m, depth| d.ipv4(b, extra, m, depth));
            }
            IpProtocol::Ipv6InIp if !fragment => {
                return self.tunnel(TunnelKind::IpInIp, 0, m, depth, |d, m, depth| d.ipv6(b, extra, m, depth));
            }
            _ => {
                m.payload_len = l4_len as u32;
            }
        }
        Ok(Outcome::Flow)
    }

    /// Record where the transport payload `p` (a slice of the frame) lies.
    fn locate(&self, p: &[u8], m: &mut PacketMeta) {
        let off = (p.as_ptr() as usize).wrapping_sub(self.base);
        let cap = p.len().min(m.payload_len as usize);
        match (u16::try_from(off), u16::try_from(cap)) {
            (Ok(o), Ok(c)) => (m.payload_off, m.payload_cap) = (o, c),
            (Ok(o), Err(_)) => (m.payload_off, m.payload_cap) = (o, u16::MAX),
            _ => (m.payload_off, m.payload_cap) = (0, 0),
        }
    }

    /// The payload bytes of a packet decoded from `frame` into `m`.
    pub fn payload<'f>(frame: &'f [u8], m: &PacketMeta) -> &'f [u8] {
        let start = usize::from(m.payload_off);
        frame.get(start..start + usize::from(m.payload_cap)).unwrap_or(&[])
    }

    fn tunnel(
        &mut self,
        kind: TunnelKind,
        id: u32,
        m: &mut PacketMeta,
        depth: u8,
        inner: impl FnOnce(&mut Self, &mut PacketMeta, u8) -> Step,
    ) -> Step {
        if depth + 1 > MAX_TUNNEL_DEPTH {
            return Err(Malformed::TunnelTooDeep);
        }
        if m.tunnel == TunnelKind::None {
            m.tunnel = kind;
            m.outer_version = m.ip_version;
            m.outer_src = m.src;
            m.outer_dst = m.dst;
            m.tunnel_id = id;
        }
        // The inner packet starts afresh at the transport fields.
        m.src_port = 0;
        m.dst_port = 0;
        m.tcp_flags = 0;
        m.tcp_seq = 0;
        (m.payload_off, m.payload_cap) = (0, 0);
        m.frag = Frag::None;
        inner(self, m, depth + 1)
    }

    fn frag_slot(src: &[u8; 16], dst: &[u8; 16], ident: u32, proto: u8) -> usize {
        let mut h: u32 = ident ^ (proto as u32) << 24;
        for c in src.chunks_exact(4).chain(dst.chunks_exact(4)) {
            h = (h ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]])).wrapping_mul(0x9E37_79B1);
        }
        (h >> 20) as usize % FRAG_SLOTS
    }

    fn frag_store(&mut self, ident: u32, m: &PacketMeta) {
        let i = Self::frag_slot(&m.src, &m.dst, ident, m.proto);
        self.frags[i] = FragSlot {
            src: m.src,
            dst: m.dst,
            ident,
            proto: m.proto,
            used: true,
            src_port: m.src_port,
            dst_port: m.dst_port,
        };
    }

    fn frag_lookup(&mut self, ident: u32, m: &mut PacketMeta) {
        let s = &self.frags[Self::frag_slot(&m.src, &m.dst, ident, m.proto)];
        if s.used && s.ident == ident && s.proto == m.proto && s.src == m.src && s.dst == m.dst {
            m.src_port = s.src_port;
            m.dst_port = s.dst_port;
        } else {
            self.stats.frag_unmatched += 1;
        }
    }
}

/// A tunnel header's check: its error stands when the datagram was sent to
/// the tunnel's port (`to_it`), else the datagram is not a tunnel (`None`).
fn tunnel_header<H>(r: Result<H, Malformed>, to_it: bool) -> Result<Option<H>, Malformed> {
    match r {
        Ok(h) => Ok(Some(h)),
        Err(e) if to_it => Err(e),
        Err(_) => Ok(None),
    }
}

enum Inner<'a> {
    Ipv4(&'a [u8]),
    Ipv6(&'a [u8]),
    Ether(&'a [u8]),
    Mpls(&'a [u8]),
}

impl Inner<'_> {
    fn decode(self, d: &mut Decoder, extra: usize, m: &mut PacketMeta, depth: u8) -> Step {
        match self {
            Inner::Ipv4(b) => d.ipv4(b, extra, m, depth),
            Inner::Ipv6(b) => d.ipv6(b, extra, m, depth),
            Inner::Ether(b) => d.ether(b, extra, m, depth),
            Inner::Mpls(b) => d.mpls(b, extra, m, depth),
        }
    }
}

/// The IP payload of a PPP frame (inside PPTP's GRE), if it carries IP
/// uncompressed; compressed or encrypted PPP stays with the outer flow.
fn ppp_payload(b: &[u8]) -> Option<Inner<'_>> {
    let b = if b.starts_with(&[0xff, 0x03]) { &b[2..] } else { b };
    let (proto, rest) = match b.first()? {
        p if p & 1 == 1 => (*p as u16, &b[1..]),
        _ if b.len() >= 2 => (be16(b, 0), &b[2..]),
        _ => return None,
    };
    match proto {
        0x21 => Some(Inner::Ipv4(rest)),
        0x57 => Some(Inner::Ipv6(rest)),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Build an Ethernet frame: tags (TPID, VID) then an EtherType and payload.
    pub fn ether(tags: &[(u16, u16)], et: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        for &(tpid, vid) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Build an IPv4 header + payload.
    pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, ident: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
        let tl = (20 + payload.len()) as u16;
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&tl.to_be_bytes());
        h.extend_from_slice(&ident.to_be_bytes());
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend_from_slice(payload);
        h
    }

    /// Build an IPv6 header + payload.
    pub fn ipv6(src_last: u8, dst_last: u8, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        let mut a = [0u8; 16];
        a[0] = 0x20;
        a[1] = 0x01;
        a[15] = src_last;
        h.extend_from_slice(&a);
        a[15] = dst_last;
        h.extend_from_slice(&a);
        h.extend_from_slice(payload);
        h
    }

    /// Build a TCP header with flags and payload.
    pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        t
    }

    /// Build a UDP header + payload.
    pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    fn run(link: LinkType, f: &[u8]) -> (bool, PacketMeta, Decoder) {
        let mut d = Decoder::new();
        let mut m = PacketMeta::default();
        let ok = d.decode(link, f, f.len() as u32, 7, &mut m);
        (ok, m, d)
    }

    #[test]
    fn tcp_over_qinq() {
        let f = ether(
            &[(0x88A8, 10), (0x8100, 20)],
            0x0800,
            &ipv4([10, 0, 0, 1], [10, 0, 0, 2], 6, 1, 0, &tcp(1234, 80, 0x02, b"")),
        );
        let (ok, m, _) = run(LinkType::Ethernet, &f);
        assert!(ok);
        assert_eq!(m.ts_ns, 7);
        assert_eq!(&m.vlans[..m.vlan_count as usize], &[10, 20]);
        assert_eq!(m.proto, 6);
        assert_eq!((m.src_port, m.dst_port, m.tcp_flags), (1234, 80, 0x02));
        assert_eq!(m.ip_len, 40);
        assert_eq!(m.payload_len, 0);
        assert_eq!(&m.src[..4], &[10, 0, 0, 1]);
    }

    #[test]
    fn ipv6_with_extension_headers() {
        // hop-by-hop (8 bytes) -> destination options (8 bytes) -> UDP
        let mut p = vec![60u8, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
        p.extend_from_slice(&udp(5353, 53, b"abcd"));
        let f = ether(&[], 0x86DD, &ipv6(1, 2, 0, &p));
        let (ok, m, _) = run(LinkType::Ethernet, &f);
        assert!(ok);
        assert_eq!((m.ip_version, m.proto, m.src_port, m.dst_port), (6, 17, 5353, 53));
        assert_eq!(m.ip_len, 40 + 16 + 12);
        assert_eq!(m.payload_len, 4);
    }

    #[test]
    fn ipv4_fragments_borrow_ports_from_the_first() {
        let mut d = Decoder::new();
        let mut m = PacketMeta::default();
        let first = ether(&[], 0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 17, 99, 0x2000, &udp(1000, 2000, &[0; 16])));
        assert!(d.decode(LinkType::Ethernet, &first, first.len() as u32, 1, &mut m));
        assert_eq!((m.frag, m.src_port, m.dst_port), (Frag::First, 1000, 2000));
        let later = ether(&[], 0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 17, 99, 3, &[0; 24]));
        assert!(d.decode(LinkType::Ethernet, &later, later.len() as u32, 2, &mut m));
        assert_eq!((m.frag, m.src_port, m.dst_port, m.payload_len), (Frag::Later, 1000, 2000, 24));
        let orphan = ether(&[], 0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 17, 100, 3, &[0; 24]));
        assert!(d.decode(LinkType::Ethernet, &orphan, orphan.len() as u32, 3, &mut m));
        assert_eq!((m.src_port, m.dst_port), (0, 0));
        assert_eq!(d.stats.frag_unmatched, 1);
    }

    #[test]
    fn gre_and_vxlan_are_decapsulated() {
        let inner = ipv4([192, 168, 0, 1], [192, 168, 0, 2], 6, 1, 0, &tcp(40000, 443, 0x18, b"hello"));
        let gre = [&[0u8, 0, 0x08, 0x00][..], &inner].concat();
        let f = ether(&[], 0x0800, &ipv4([10, 0, 0, 1], [10, 0, 0, 2], 47, 1, 0, &gre));
        let (ok, m, _) = run(LinkType::Ethernet, &f);
        assert!(ok);
        assert_eq!(m.tunnel, TunnelKind::Gre);
        assert_eq!(&m.outer_src[..4], &[10, 0, 0, 1]);
        assert_eq!(&m.src[..4], &[192, 168, 0, 1]);
        assert_eq!((m.proto, m.src_port, m.dst_port, m.payload_len), (6, 40000, 443, 5));

        let vx = [&[0x08u8, 0, 0, 0, 0, 0, 42, 0][..], &ether(&[(0x8100, 7)], 0x0800, &inner)].concat();
        let f = ether(&[], 0x0800, &ipv4([10, 0, 0, 1], [10, 0, 0, 3], 17, 1, 0, &udp(5555, 4789, &vx)));
        let (ok, m, _) = run(LinkType::Ethernet, &f);
        assert!(ok);
        assert_eq!(m.tunnel, TunnelKind::Vxlan);
        assert_eq!(&m.outer_dst[..4], &[10, 0, 0, 3]);
        assert_eq!(&m.vlans[..m.vlan_count as usize], &[7]);
        assert_eq!((m.src_port, m.dst_port), (40000, 443));
    }

    #[test]
    fn geneve_and_gtp_u_are_decapsulated_with_their_ids() {
        let inner = ipv4([192, 168, 0, 1], [192, 168, 0, 2], 6, 1, 0, &tcp(40000, 443, 0x18, b"hello"));
        // Geneve with one option word, Ethernet inside, VNI 0x0abcde.
        let gen = [&[0x01u8, 0, 0x65, 0x58, 0x0a, 0xbc, 0xde, 0, 1, 2, 3, 4][..], &ether(&[], 0x0800, &inner)].concat();
        let f = ether(&[], 0x0800, &ipv4([10, 0, 0, 1], [10, 0, 0, 3], 17, 1, 0, &udp(5555, 6081, &gen)));
        let (ok, m, _) = run(LinkType::Ethernet, &f);
        assert!(ok);
        assert_eq!((m.tunnel, m.tunnel_id), (TunnelKind::Geneve, 0x0abcde));
        assert_eq!((&m.outer_dst[..4], &m.src[..4]), (&[10u8, 0, 0, 3][..], &[192u8, 168, 0, 1][..]));
        assert_eq!((m.proto, m.src_port, m.dst_port, m.payload_len), (6, 40000, 443, 5));
        // A GTP-U G-PDU with a sequence number: IP directly inside; TEID 0xdeadbeef.
        let gtp = [&[0x32u8, 0xff, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0, 1, 0, 0][..], &inner].concat();
        let f = ether(&[], 0x0800, &ipv4([10, 0, 0, 1], [10, 0, 0, 4], 17, 1, 0, &udp(2152, 2152, &gtp)));
        let (ok, m, _) = run(LinkType::Ethernet, &f);
        assert!(ok);
        assert_eq!((m.tunnel, m.tunnel_id), (TunnelKind::GtpU, 0xdead_beef));
        assert_eq!((m.proto, m.src_port, m.dst_port), (6, 40000, 443));
        // A GTP-U echo request stays the outer UDP flow.
        let echo = [0x32u8, 0x01, 0, 4, 0, 0, 0, 0, 0, 1, 0, 0];
        let f = ether(&[], 0x0800, &ipv4([10, 0, 0, 1], [10, 0, 0, 4], 17, 1, 0, &udp(2152, 2152, &echo)));
        let (ok, m, _) = run(LinkType::Ethernet, &f);
        assert!(ok);
        assert_eq!((m.tunnel, m.proto, m.dst_port), (TunnelKind::None, 17, 2152));
    }

    #[test]
    fn a_bad_tunnel_header_is_malformed_only_when_sent_to_the_tunnel_port() {
        // GTPv2 (version 2) to the GTP-U port: counted.
        let v2 = [0x48u8, 0xff, 0, 4, 0, 0, 0, 0];
        let f = ether(&[], 0x0800, &ipv4([10, 0, 0, 1], [10, 0, 0, 4], 17, 1, 0, &udp(3000, 2152, &v2)));
        let (ok, _, d) = run(LinkType::Ethernet, &f);
        assert!(!ok);
        assert_eq!(d.stats.malformed[Malformed::BadGtp as usize], 1);
        // The same bytes from port 2152 to an ephemeral port: an ordinary UDP flow.
        let f = ether(&[], 0x0800, &ipv4([10, 0, 0, 1], [10, 0, 0, 4], 17, 1, 0, &udp(2152, 3000, &v2)));
        let (ok, m, d) = run(LinkType::Ethernet, &f);
        assert!(ok);
        assert_eq!((m.tunnel, m.dst_port, d.stats.malformed_total()), (TunnelKind::None, 3000, 0));
        // Geneve version 1, and a cut option area.
        let f = ether(
            &[],
            0x0800,
            &ipv4([10, 0, 0, 1], [10, 0, 0, 4], 17, 1, 0, &udp(1, 6081, &[0x40, 0, 0x65, 0x58, 0, 0, 0, 0])),
        );
        let (_, _, d) = run(LinkType::Ethernet, &f);
        assert_eq!(d.stats.malformed[Malformed::BadGeneve as usize], 1);
        let f = ether(
            &[],
            0x0800,
            &ipv4([10, 0, 0, 1], [10, 0, 0, 4], 17, 1, 0, &udp(1, 6081, &[0x03, 0, 0x65, 0x58, 0, 0, 0, 0])),
        );
        let (_, _, d) = run(LinkType::Ethernet, &f);
        assert_eq!(d.stats.malformed[Malformed::TruncatedGeneve as usize], 1);
    }

    #[test]
    fn icmp_echo_keys_on_identifier() {
        let f = ether(&[], 0x0800, &ipv4([1, 0, 0, 1], [1, 0, 0, 2], 1, 1, 0, &[8, 0, 0, 0, 0x12, 0x34, 0, 1]));
        let (ok, m, _) = run(LinkType::Ethernet, &f);
        assert!(ok);
        assert_eq!((m.icmp_type, m.src_port, m.dst_port), (8, 0x1234, 0x1234));
        let f = ether(&[], 0x0800, &ipv4([1, 0, 0, 1], [1, 0, 0, 2], 1, 1, 0, &[3, 3, 0, 0, 0, 0, 0, 0]));
        let (_, m, _) = run(LinkType::Ethernet, &f);
        assert_eq!((m.src_port, m.dst_port), (0, 0x0303));
    }

    #[test]
    fn other_link_types() {
        let ip = ipv4([1, 0, 0, 1], [1, 0, 0, 2], 17, 1, 0, &udp(1, 2, b""));
        assert!(run(LinkType::Raw, &ip).0);
        assert!(run(LinkType::Null, &[&[2u8, 0, 0, 0][..], &ip].concat()).0);
        let mut sll = [0u8; 16];
        sll[14] = 8;
        assert!(run(LinkType::LinuxSll, &[&sll[..], &ip].concat()).0);
        let mut sll2 = [0u8; 20];
        sll2[0] = 8;
        assert!(run(LinkType::LinuxSll2, &[&sll2[..], &ip].concat()).0);
        let fddi = [&[0x50u8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0xAA, 0xAA, 3, 0, 0, 0, 8, 0][..], &ip].concat();
        let (ok, m, _) = run(LinkType::from_pcap(10), &fddi);
        assert!(ok && m.src_port == 1);
        let (ok, _, d) = run(LinkType::from_pcap(10), &fddi[..20]);
        assert!(!ok && d.stats.malformed[Malformed::TruncatedLink as usize] == 1);
        let (ok, _, d) = run(LinkType::Other(105), &ip);
        assert!(!ok);
        assert_eq!(d.stats.skipped[Skipped::UnsupportedLinkType as usize], 1);
        let (ok, _, d) = run(LinkType::Ethernet, &ether(&[], 0x0806, &[0; 28]));
        assert!(!ok);
        assert_eq!(d.stats.skipped[Skipped::NotIp as usize], 1);
    }

    #[test]
    fn malformed_is_counted_by_reason() {
        let good = ether(&[], 0x0800, &ipv4([1, 0, 0, 1], [1, 0, 0, 2], 6, 1, 0, &tcp(1, 2, 0x10, b"")));
        let (ok, _, d) = run(LinkType::Ethernet, &good[..14 + 20 + 10]);
        assert!(!ok);
        // total length 40 > 30 bytes on the wire
        assert_eq!(d.stats.malformed[Malformed::BadIpv4TotalLen as usize], 1);
        let mut d = Decoder::new();
        let mut m = PacketMeta::default();
        // Cut by snap length: the wire length says the rest existed.
        assert!(!d.decode(LinkType::Ethernet, &good[..14 + 20 + 10], good.len() as u32, 0, &mut m));
        assert_eq!(d.stats.malformed[Malformed::TruncatedTcp as usize], 1);
        assert_eq!(d.stats.malformed_total(), 1);
    }

    #[test]
    fn nested_tunnels_stop() {
        let mut p = ipv4([9, 9, 9, 9], [8, 8, 8, 8], 17, 1, 0, &udp(1, 2, b""));
        for _ in 0..6 {
            p = ipv4([1, 1, 1, 1], [2, 2, 2, 2], 4, 1, 0, &p);
        }
        let (ok, _, d) = run(LinkType::Raw, &p);
        assert!(!ok);
        assert_eq!(d.stats.malformed[Malformed::TunnelTooDeep as usize], 1);
    }
}
