//! Flow records as Wirefold exports them (one JSON object per line).
//!
//! Field reference (also in `docs/flow-records.md`): times in seconds since
//! the Unix epoch, sizes in bytes at the IP layer, "fwd" is initiator →
//! responder, "rev" the other way.
use crate::flow::{tcp::flag_letters, FinishedFlow};
use crate::wire::TunnelKind;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Format an address stored in 16 bytes (IPv4 in the first four).
pub fn addr(b: &[u8; 16], version: u8) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*b))
    }
}

/// One exported flow.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowRecord {
    /// First packet time (s).
    pub first_ts: f64,
    /// Last packet time (s).
    pub last_ts: f64,
    /// `last_ts - first_ts` (s).
    pub duration: f64,
    /// VLAN ids, outermost first.
    pub vlan: Vec<u16>,
    /// 4 or 6.
    pub ip_version: u8,
    /// IP protocol number.
    pub proto: u8,
    /// Initiator address.
    pub src_ip: IpAddr,
    /// Initiator port (0 where the protocol has none).
    pub src_port: u16,
    /// Responder address.
    pub dst_ip: IpAddr,
    /// Responder port.
    pub dst_port: u16,
    /// Initiator → responder packets.
    pub fwd_packets: u64,
    /// Initiator → responder IP bytes.
    pub fwd_bytes: u64,
    /// Responder → initiator packets.
    pub rev_packets: u64,
    /// Responder → initiator IP bytes.
    pub rev_bytes: u64,
    /// Transport payload bytes, forward.
    pub fwd_payload_bytes: u64,
    /// Transport payload bytes, reverse.
    pub rev_payload_bytes: u64,
    /// Packet size min / max / mean / std, forward.
    pub fwd_size: [f64; 4],
    /// Packet size min / max / mean / std, reverse.
    pub rev_size: [f64; 4],
    /// Inter-arrival min / max / mean / std (s), forward.
    pub fwd_iat: [f64; 4],
    /// Inter-arrival min / max / mean / std (s), reverse.
    pub rev_iat: [f64; 4],
    /// TCP flags seen either way, letters in the order `SAPFRUEC`.
    pub tcp_flags: String,
    /// TCP flags sent by the initiator.
    pub fwd_tcp_flags: String,
    /// TCP flags sent by the responder.
    pub rev_tcp_flags: String,
    /// Packets carrying SYN, ACK, PSH, FIN, RST, URG, ECE, CWR (TCP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flag_counts: Option<[u32; 8]>,
    /// Final TCP state (TCP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_state: Option<&'static str>,
    /// ICMP type of the first packet (ICMP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP code of the first packet (ICMP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Outermost tunnel, if the flow was found inside one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<&'static str>,
    /// Tunnel's outer source address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_src_ip: Option<IpAddr>,
    /// Tunnel's outer destination address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_dst_ip: Option<IpAddr>,
    /// Community ID v1 of the flow (its inner flow when tunnelled), as Zeek
    /// and Suricata compute it; seed `--community-id-seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    /// Why the record was exported.
    pub end_reason: &'static str,
    /// The model's anomaly score (reconstruction error), when embedding is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// The int8 embedding (32 values), when embedding is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<i8>>,
}

/// The flow's Community ID v1: the initiator's tuple as seen in its first
/// packet (for ICMP the first packet's type and code), hashed with the
/// table's seed. Tunnelled flows hash the inner flow.
fn community_id(ff: &FinishedFlow, src: &[u8; 16], sport: u16, dst: &[u8; 16], dport: u16) -> Option<String> {
    use wirefold_inspect::community_id::{community_id, FlowTuple};
    let k = &ff.key;
    let n = if k.ip_version == 4 { 4 } else { 16 };
    let (sp, dp) = match k.proto {
        1 | 58 => (ff.flow.icmp_type as u16, ff.flow.icmp_code as u16),
        _ => (sport, dport),
    };
    let t = FlowTuple { proto: k.proto, src: &src[..n], dst: &dst[..n], src_port: sp, dst_port: dp };
    community_id(ff.community_id_seed, &t).ok().map(|c| c.as_str().to_string())
}

fn s4(s: crate::flow::Summary) -> [f64; 4] {
    [s.min, s.max, s.mean, s.std]
}

// The flag-count order in records: SYN, ACK, PSH, FIN, RST, URG, ECE, CWR.
const COUNT_BITS: [usize; 8] = [1, 4, 3, 0, 2, 5, 6, 7];

impl From<&FinishedFlow> for FlowRecord {
    fn from(ff: &FinishedFlow) -> Self {
        let k = &ff.key;
        let f = &ff.flow;
        let (src, sport, dst, dport) = if f.initiator_is_lo {
            (&k.lo_addr, k.lo_port, &k.hi_addr, k.hi_port)
        } else {
            (&k.hi_addr, k.hi_port, &k.lo_addr, k.lo_port)
        };
        let icmp = k.proto == 1 || k.proto == 58;
        let tcp = k.proto == 6;
        let (sport, dport) = if icmp { (0, 0) } else { (sport, dport) };
        let tunnel = f.tunnel != TunnelKind::None;
        FlowRecord {
            first_ts: f.first_ns as f64 / 1e9,
            last_ts: f.last_ns as f64 / 1e9,
            duration: f.last_ns.saturating_sub(f.first_ns) as f64 / 1e9,
            vlan: k.vlans[..k.vlan_count as usize].to_vec(),
            ip_version: k.ip_version,
            proto: k.proto,
            src_ip: addr(src, k.ip_version),
            src_port: sport,
            dst_ip: addr(dst, k.ip_version),
            dst_port: dport,
            fwd_packets: f.fwd.packets,
            fwd_bytes: f.fwd.bytes,
            rev_packets: f.rev.packets,
            rev_bytes: f.rev.bytes,
            fwd_payload_bytes: f.fwd.payload_bytes,
            rev_payload_bytes: f.rev.payload_bytes,
            fwd_size: s4(f.fwd.size()),
            rev_size: s4(f.rev.size()),
            fwd_iat: s4(f.fwd.iat()),
            rev_iat: s4(f.rev.iat()),
            tcp_flags: flag_letters(f.tcp.fwd_flags | f.tcp.rev_flags),
            fwd_tcp_flags: flag_letters(f.tcp.fwd_flags),
            rev_tcp_flags: flag_letters(f.tcp.rev_flags),
            tcp_flag_counts: tcp.then(|| COUNT_BITS.map(|b| f.tcp.flag_counts[b])),
            tcp_state: tcp.then(|| f.tcp.state.name()),
            icmp_type: icmp.then_some(f.icmp_type),
            icmp_code: icmp.then_some(f.icmp_code),
            tunnel: tunnel.then(|| f.tunnel.name()),
            tunnel_src_ip: tunnel.then(|| addr(&f.outer_src, f.outer_version)),
            tunnel_dst_ip: tunnel.then(|| addr(&f.outer_dst, f.outer_version)),
            community_id: community_id(ff, src, sport, dst, dport),
            end_reason: ff.reason.name(),
            score: None,
            embedding: None,
        }
    }
}
