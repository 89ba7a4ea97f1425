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
    /// The tunnel's identifier on the first packet: the VNI of VXLAN and
    /// Geneve, the TEID of GTP-U (absent for GRE and IP-in-IP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_id: Option<u32>,
    /// Community ID v1 of the flow (its inner flow when tunnelled), as Zeek
    /// and Suricata compute it; seed `--community-id-seed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    /// One label from inspection: `tls`, `quic`, `dns`, `http`, `ssh` or `unknown`.
    pub app: &'static str,
    /// TLS/QUIC server name (ClientHello server_name).
    #[serde(rename = "tls_sni", skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// First ALPN protocol offered.
    #[serde(rename = "tls_alpn", skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    /// Highest TLS version the client offered (`TLSv1.3`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_version: Option<&'static str>,
    /// TLS version the server selected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'static str>,
    /// Cipher suite the server selected, `0x1301` style.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cipher: Option<String>,
    /// JA4 TLS client fingerprint (`t…` TCP, `q…` QUIC).
    #[serde(rename = "tls_ja4", skip_serializing_if = "Option::is_none")]
    pub ja4: Option<String>,
    /// JA3 (MD5).
    #[serde(rename = "tls_ja3", skip_serializing_if = "Option::is_none")]
    pub ja3: Option<String>,
    /// JA3S (MD5).
    #[serde(rename = "tls_ja3s", skip_serializing_if = "Option::is_none")]
    pub ja3s: Option<String>,
    /// QUIC version of the client's Initial (1, or 0x6b3343cf for v2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quic_version: Option<u32>,
    /// First DNS question's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_qname: Option<String>,
    /// Its QTYPE (1 A, 28 AAAA, 16 TXT, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_qtype: Option<u16>,
    /// RCODE of the first response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_rcode: Option<u8>,
    /// ANCOUNT of the first response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_answers: Option<u16>,
    /// HTTP request method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_method: Option<String>,
    /// HTTP Host header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_host: Option<String>,
    /// Length of the request target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_uri_len: Option<u32>,
    /// HTTP User-Agent header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_user_agent: Option<String>,
    /// Status code of the first HTTP response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The client's SSH banner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_client: Option<String>,
    /// The server's SSH banner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_server: Option<String>,
    /// The connection's first packets: IP bytes, negative from the responder (at most 8).
    #[serde(rename = "splt_sizes")]
    pub splt: Vec<i16>,
    /// Milliseconds from the previous of those packets to each (the first: 0).
    pub splt_iat_ms: Vec<f32>,
    /// Shannon entropy (bits per byte) of the client's first payload bytes (at most 256), when any were seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwd_payload_entropy: Option<f32>,
    /// The same for the server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rev_payload_entropy: Option<f32>,
    /// Share of printable bytes among the client's first payload bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwd_payload_printable: Option<f32>,
    /// The same for the server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rev_payload_printable: Option<f32>,
    /// Bigram histogram of the client's first payload bytes: 16 bucket counts (FNV-1a of each byte pair, mod 16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fwd_payload_sketch: Option<[u16; 16]>,
    /// The same for the server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rev_payload_sketch: Option<[u16; 16]>,
    /// Distinct responders the initiator contacted over the host-context window (estimate).
    pub src_fanout_hosts: u16,
    /// Distinct responder ports the initiator contacted over the window (estimate).
    pub src_fanout_ports: u16,
    /// Distinct initiators the responder heard from over the window (estimate).
    pub dst_fanin_hosts: u16,
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
        let o = k.oriented(f.initiator_is_lo);
        let (src, sport, dst, dport) = (&o.src, o.sport, &o.dst, o.dport);
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
            tunnel_id: matches!(f.tunnel, TunnelKind::Vxlan | TunnelKind::Geneve | TunnelKind::GtpU)
                .then_some(f.tunnel_id),
            community_id: community_id(ff, src, sport, dst, dport),
            app: ff.meta.as_deref().map_or("unknown", |m| m.app.0.name()),
            sni: None,
            alpn: None,
            tls_client_version: None,
            tls_version: None,
            tls_cipher: None,
            ja4: None,
            ja3: None,
            ja3s: None,
            quic_version: None,
            dns_qname: None,
            dns_qtype: None,
            dns_rcode: None,
            dns_answers: None,
            http_method: None,
            http_host: None,
            http_uri_len: None,
            http_user_agent: None,
            http_status: None,
            ssh_client: None,
            ssh_server: None,
            splt: f.splt_bytes[..(f.splt_n as usize).min(f.splt_bytes.len())].to_vec(),
            splt_iat_ms: (0..(f.splt_n as usize).min(f.splt_bytes.len()))
                .map(|i| (f.splt_gap_ms(i) * 1000.0).round() / 1000.0)
                .collect(),
            fwd_payload_entropy: None,
            rev_payload_entropy: None,
            fwd_payload_printable: None,
            rev_payload_printable: None,
            fwd_payload_sketch: None,
            rev_payload_sketch: None,
            src_fanout_hosts: f.host.src_peers,
            src_fanout_ports: f.host.src_ports,
            dst_fanin_hosts: f.host.dst_peers,
            end_reason: ff.reason.name(),
            score: None,
            embedding: None,
        }
        .with_meta(ff.meta.as_deref())
    }
}

fn some_str(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl FlowRecord {
    fn with_meta(mut self, m: Option<&wirefold_inspect::session::FlowMeta>) -> Self {
        use wirefold_inspect::tls::version_name;
        let Some(m) = m else { return self };
        if let Some(t) = &m.tls {
            self.sni = some_str(t.sni.as_str());
            self.alpn = some_str(t.alpn.as_str());
            self.tls_client_version = Some(version_name(t.max_version));
            self.ja4 = some_str(t.ja4.as_str());
            self.ja3 = some_str(t.ja3.as_str());
        }
        if let Some(t) = &m.tls_server {
            self.tls_version = Some(version_name(t.version));
            self.tls_cipher = Some(format!("0x{:04x}", t.cipher));
            self.ja3s = some_str(t.ja3s.as_str());
        }
        self.quic_version = m.quic_version;
        if let Some(d) = &m.dns {
            self.dns_qname = Some(d.qname.as_str().to_string());
            self.dns_qtype = Some(d.qtype);
            self.dns_rcode = d.rcode;
            self.dns_answers = d.answers;
        }
        if let Some(h) = &m.http {
            self.http_method = some_str(h.method.as_str());
            self.http_host = some_str(h.host.as_str());
            self.http_uri_len = (!h.method.is_empty()).then_some(h.uri_len);
            self.http_user_agent = some_str(h.user_agent.as_str());
            self.http_status = h.status;
        }
        let stats = m.sketch_stats();
        let seen = |d: usize| !m.sketch[d].is_empty();
        let sketch = |d: usize| (m.sketch[d].len() >= 2).then(|| m.sketch[d].bigram_counts());
        (self.fwd_payload_entropy, self.rev_payload_entropy) =
            (seen(0).then_some(stats[0][0]), seen(1).then_some(stats[1][0]));
        (self.fwd_payload_printable, self.rev_payload_printable) =
            (seen(0).then_some(stats[0][1]), seen(1).then_some(stats[1][1]));
        (self.fwd_payload_sketch, self.rev_payload_sketch) = (sketch(0), sketch(1));
        self.ssh_client = m.ssh_client.map(|b| b.as_str().to_string());
        self.ssh_server = m.ssh_server.map(|b| b.as_str().to_string());
        self
    }
}
