//! Zero-copy views over packet headers, in the style of smoltcp's `wire`.
//!
//! # Contract
//! * A `XxxPacket<T: AsRef<[u8]>>` is a view over a borrowed buffer. It owns
//!   nothing and copies nothing.
//! * `XxxPacket::new_checked(buf)` verifies that every fixed field (and, where a
//!   header carries its own length, the whole header) lies inside the buffer.
//!   After it returns `Ok`, **no accessor can panic**.
//! * Errors are a tiny `Copy` value, [`Malformed`], whose variant names the
//!   reason; the decoder counts them. Nothing on the parse path allocates.
//! * Protocol numbers that this module does not know are kept, not lost, so
//!   they can be counted ([`EtherType::Unknown`], [`IpProtocol::Unknown`]).
//!
//! [`decode`] stacks these views into the full link → IP → transport walk,
//! with VLAN/QinQ, MPLS, PPPoE and tunnel (GRE, VXLAN, Geneve, GTP-U, IP-in-IP)
//! decapsulation, and fills a fixed-size [`PacketMeta`].
#![forbid(unsafe_code)]

pub mod decode;
pub mod ethernet;
pub mod geneve;
pub mod gre;
pub mod gtp;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod linux_sll;
pub mod null;
pub mod tcp;
pub mod udp;
pub mod vxlan;

pub use decode::{DecodeStats, Decoder, PacketMeta, Skipped, TunnelKind, MAX_VLANS};
pub use ethernet::{EtherType, EthernetFrame, VlanTag};
pub use geneve::GenevePacket;
pub use gre::GrePacket;
pub use gtp::GtpPacket;
pub use icmp::IcmpPacket;
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet};
pub use linux_sll::{Sll2Header, SllHeader};
pub use null::NullHeader;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;
pub use vxlan::VxlanPacket;

/// Why a packet could not be decoded. Each variant is one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Malformed {
    /// Shorter than the link-layer header.
    TruncatedLink,
    /// A VLAN tag is cut short.
    TruncatedVlan,
    /// An MPLS label stack is cut short or has no bottom of stack.
    TruncatedMpls,
    /// A PPPoE or PPP header is cut short.
    TruncatedPpp,
    /// Shorter than the fixed IPv4 header.
    TruncatedIpv4,
    /// IPv4 version nibble is not 4.
    BadIpv4Version,
    /// IPv4 header length below 20 bytes or beyond the captured data.
    BadIpv4HeaderLen,
    /// IPv4 total length smaller than its header or larger than the frame.
    BadIpv4TotalLen,
    /// Shorter than the fixed IPv6 header.
    TruncatedIpv6,
    /// IPv6 version nibble is not 6.
    BadIpv6Version,
    /// IPv6 payload length larger than the frame.
    BadIpv6PayloadLen,
    /// An IPv6 extension header is cut short, or there are too many.
    BadIpv6ExtHeader,
    /// A fragment header whose offset and length make no sense.
    BadFragment,
    /// Shorter than the fixed TCP header.
    TruncatedTcp,
    /// TCP data offset below 5 words or beyond the captured data.
    BadTcpDataOffset,
    /// Shorter than the UDP header.
    TruncatedUdp,
    /// Shorter than the ICMP/ICMPv6 header.
    TruncatedIcmp,
    /// A GRE header is cut short, or uses the routing bit.
    BadGre,
    /// A VXLAN header is cut short.
    TruncatedVxlan,
    /// A GTP-U header (with its optional part and extension headers) is cut short.
    TruncatedGtp,
    /// A datagram to the GTP-U port that is not GTP version 1 (PT 1), or
    /// whose extension headers have length 0 or nest too deep.
    BadGtp,
    /// A Geneve header or its options are cut short.
    TruncatedGeneve,
    /// A Geneve header whose version is not 0.
    BadGeneve,
    /// More nested tunnels than the decoder follows.
    TunnelTooDeep,
}

impl Malformed {
    /// Number of variants (the size of a counter array).
    pub const COUNT: usize = 24;
    /// All variants, in counter order.
    pub const ALL: [Malformed; Self::COUNT] = [
        Self::TruncatedLink,
        Self::TruncatedVlan,
        Self::TruncatedMpls,
        Self::TruncatedPpp,
        Self::TruncatedIpv4,
        Self::BadIpv4Version,
        Self::BadIpv4HeaderLen,
        Self::BadIpv4TotalLen,
        Self::TruncatedIpv6,
        Self::BadIpv6Version,
        Self::BadIpv6PayloadLen,
        Self::BadIpv6ExtHeader,
        Self::BadFragment,
        Self::TruncatedTcp,
        Self::BadTcpDataOffset,
        Self::TruncatedUdp,
        Self::TruncatedIcmp,
        Self::BadGre,
        Self::TruncatedVxlan,
        Self::TruncatedGtp,
        Self::BadGtp,
        Self::TruncatedGeneve,
        Self::BadGeneve,
        Self::TunnelTooDeep,
    ];

    /// The stable snake_case name used in summaries and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::TruncatedLink => "truncated_link",
            Self::TruncatedVlan => "truncated_vlan",
            Self::TruncatedMpls => "truncated_mpls",
            Self::TruncatedPpp => "truncated_ppp",
            Self::TruncatedIpv4 => "truncated_ipv4",
            Self::BadIpv4Version => "bad_ipv4_version",
            Self::BadIpv4HeaderLen => "bad_ipv4_header_len",
            Self::BadIpv4TotalLen => "bad_ipv4_total_len",
            Self::TruncatedIpv6 => "truncated_ipv6",
            Self::BadIpv6Version => "bad_ipv6_version",
            Self::BadIpv6PayloadLen => "bad_ipv6_payload_len",
            Self::BadIpv6ExtHeader => "bad_ipv6_ext_header",
            Self::BadFragment => "bad_fragment",
            Self::TruncatedTcp => "truncated_tcp",
            Self::BadTcpDataOffset => "bad_tcp_data_offset",
            Self::TruncatedUdp => "truncated_udp",
            Self::TruncatedIcmp => "truncated_icmp",
            Self::BadGre => "bad_gre",
            Self::TruncatedVxlan => "truncated_vxlan",
            Self::TruncatedGtp => "truncated_gtp",
            Self::BadGtp => "bad_gtp",
            Self::TruncatedGeneve => "truncated_geneve",
            Self::BadGeneve => "bad_geneve",
            Self::TunnelTooDeep => "tunnel_too_deep",
        }
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Result of a header check.
pub type Result<T> = core::result::Result<T, Malformed>;

/// IP protocol numbers the decoder acts on; everything else is kept as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpProtocol {
    /// 1
    Icmp,
    /// 4 (IPv4 in IP)
    IpIp,
    /// 6
    Tcp,
    /// 17
    Udp,
    /// 41 (IPv6 in IP)
    Ipv6InIp,
    /// 47
    Gre,
    /// 58
    Icmpv6,
    /// 132
    Sctp,
    /// Any other protocol number.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::Icmp,
            4 => Self::IpIp,
            6 => Self::Tcp,
            17 => Self::Udp,
            41 => Self::Ipv6InIp,
            47 => Self::Gre,
            58 => Self::Icmpv6,
            132 => Self::Sctp,
            other => Self::Unknown(other),
        }
    }
}

#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
