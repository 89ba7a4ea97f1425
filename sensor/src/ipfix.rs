//! IPFIX export (RFC 7011) of finished flows as RFC 5103 biflows.
//!
//! The export thread hands every flow (with its embedding and score) to an
//! [`IpfixSink`]; the sink encodes one data record per flow and packs the
//! records into messages for each collector:
//!
//! * UDP: messages never larger than `--ipfix-mtu` minus the IP and UDP
//!   headers, sent from the export thread; templates before the first data
//!   and again every `--ipfix-template-refresh`; send errors are counted.
//! * TCP: messages (up to 16 KiB) go into a bounded queue of
//!   [`TCP_QUEUE`] messages drained by a sender thread, which connects with
//!   backoff and sends the templates first on every connection. A full
//!   queue drops (and counts) the message: a collector that is away never
//!   stalls the export thread.
//!
//! The encoding half ([`Encoder`], [`Packer`], [`stamp`]) does no I/O and is
//! tested byte by byte in `tests/ipfix.rs`; every element is listed in
//! `docs/ipfix.md`.
use crate::flow::{EndReason, FinishedFlow};
use crossbeam::channel::{bounded, Receiver, Sender, TrySendError};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wirefold_core::telemetry::Exposition;
use wirefold_inspect::community_id::{community_id, CommunityIdStr, FlowTuple};

/// IPFIX version number in the message header.
pub const VERSION: u16 = 10;
/// The largest path MTU `--ipfix-mtu auto` uses (jumbo frames; loopback's
/// 65,536 would make datagrams some collectors truncate).
pub const AUTO_MTU_MAX: usize = 9000;
/// The path MTU assumed when the kernel does not say.
pub const FALLBACK_MTU: usize = 1400;
/// Message header length.
pub const HEADER_LEN: usize = 16;
/// Set header length.
pub const SET_HEADER_LEN: usize = 4;
/// Set id of a Template Set.
pub const TEMPLATE_SET_ID: u16 = 2;
/// Template id of IPv4 flows (258: the layout with the inspection fields;
/// 256 was the layout without them, so a collector never mixes the two).
pub const TEMPLATE_V4: u16 = 258;
/// Template id of IPv6 flows (259; 257 before the inspection fields).
pub const TEMPLATE_V6: u16 = 259;
/// RFC 5103 reverse information element PEN.
pub const REVERSE_PEN: u32 = 29305;
/// Default private enterprise number (RFC 5612's documentation PEN).
pub const DEFAULT_PEN: u32 = 32473;
/// Field length meaning "variable length" (RFC 7011 §7).
pub const VARIABLE: u16 = 0xffff;
/// Messages queued per TCP collector.
pub const TCP_QUEUE: usize = 1024;
/// Largest message sent over TCP.
pub const TCP_MESSAGE_MAX: usize = 16 * 1024;

/// IANA information element ids used here.
pub mod ie {
    /// octetDeltaCount.
    pub const OCTET_DELTA_COUNT: u16 = 1;
    /// packetDeltaCount.
    pub const PACKET_DELTA_COUNT: u16 = 2;
    /// protocolIdentifier.
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    /// tcpControlBits.
    pub const TCP_CONTROL_BITS: u16 = 6;
    /// sourceTransportPort.
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    /// sourceIPv4Address.
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    /// destinationTransportPort.
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    /// destinationIPv4Address.
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    /// sourceIPv6Address.
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    /// destinationIPv6Address.
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    /// icmpTypeCodeIPv4.
    pub const ICMP_TYPE_CODE_IPV4: u16 = 32;
    /// vlanId.
    pub const VLAN_ID: u16 = 58;
    /// flowEndReason.
    pub const FLOW_END_REASON: u16 = 136;
    /// icmpTypeCodeIPv6.
    pub const ICMP_TYPE_CODE_IPV6: u16 = 139;
    /// flowStartMilliseconds.
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    /// flowEndMilliseconds.
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    /// dot1qCustomerVlanId.
    pub const DOT1Q_CUSTOMER_VLAN_ID: u16 = 245;
    /// applicationName (string): the flow's `app` label.
    pub const APPLICATION_NAME: u16 = 96;
}

/// Wirefold's enterprise-specific element ids (under the configured PEN).
pub mod wf {
    /// `wirefoldEmbedding`: octetArray, 32 bytes, the int8 embedding.
    pub const EMBEDDING: u16 = 1;
    /// `wirefoldScore`: float32, the model's anomaly score.
    pub const SCORE: u16 = 2;
    /// `wirefoldCommunityId`: string, variable length, Community ID v1 (seed 0).
    pub const COMMUNITY_ID: u16 = 3;
    /// `wirefoldServerName`: string, variable length, the TLS/QUIC server name (empty when none).
    pub const SERVER_NAME: u16 = 4;
    /// `wirefoldJa4`: string, variable length, the JA4 client fingerprint (empty when none).
    pub const JA4: u16 = 5;
    /// `wirefoldDnsQueryName`: string, variable length, the first DNS question's name (empty when none).
    pub const DNS_QNAME: u16 = 6;
}

/// One field specifier of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Element id (without the enterprise bit).
    pub id: u16,
    /// Length in bytes, or [`VARIABLE`].
    pub len: u16,
    /// Enterprise number; 0 for IANA elements.
    pub pen: u32,
}

const fn iana(id: u16, len: u16) -> Field {
    Field { id, len, pen: 0 }
}

const fn rev(id: u16, len: u16) -> Field {
    Field { id, len, pen: REVERSE_PEN }
}

/// RFC 7011 flowEndReason of an end reason.
pub fn end_reason_code(r: EndReason) -> u8 {
    match r {
        EndReason::Idle => 1,
        EndReason::Active => 2,
        EndReason::Fin | EndReason::Rst => 3,
        EndReason::Eof | EndReason::Shutdown => 4,
        EndReason::Evicted => 5,
    }
}

/// One flow as the encoder sees it: initiator is the source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IpfixFlow {
    /// IPv6 (else IPv4, in the first 4 bytes of the addresses).
    pub v6: bool,
    /// Initiator address.
    pub src: [u8; 16],
    /// Responder address.
    pub dst: [u8; 16],
    /// Initiator port (0 for ICMP).
    pub src_port: u16,
    /// Responder port (0 for ICMP).
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Outermost VLAN id (0: none).
    pub vlan: u16,
    /// Second VLAN id (0: none).
    pub inner_vlan: u16,
    /// First packet, ms since the epoch.
    pub start_ms: u64,
    /// Last packet, ms since the epoch.
    pub end_ms: u64,
    /// Packets forward.
    pub fwd_packets: u64,
    /// IP bytes forward.
    pub fwd_bytes: u64,
    /// Packets reverse.
    pub rev_packets: u64,
    /// IP bytes reverse.
    pub rev_bytes: u64,
    /// TCP flags sent by the initiator.
    pub fwd_flags: u8,
    /// TCP flags sent by the responder.
    pub rev_flags: u8,
    /// flowEndReason.
    pub end_reason: u8,
    /// ICMP type << 8 | code of the first packet (ICMP only, else 0).
    pub icmp_type_code: u16,
    /// The int8 embedding.
    pub embedding: [i8; 32],
    /// The anomaly score.
    pub score: f32,
    /// Community ID with the flow table's seed (empty if it could not be computed).
    pub community_id: CommunityIdStr,
    /// The `app` label (applicationName).
    pub app: &'static str,
    /// TLS/QUIC server name (empty when none).
    pub server_name: wirefold_inspect::dns::DnsName,
    /// JA4 (empty when none).
    pub ja4: wirefold_inspect::tls::Ja4,
    /// DNS query name (empty when none).
    pub dns_qname: wirefold_inspect::dns::DnsName,
}

impl IpfixFlow {
    /// From a finished flow and its embedding and score.
    pub fn new(ff: &FinishedFlow, embedding: [i8; 32], score: f32) -> Self {
        let k = &ff.key;
        let f = &ff.flow;
        let o = k.oriented(f.initiator_is_lo);
        let (src, sport, dst, dport) = (o.src, o.sport, o.dst, o.dport);
        let icmp = k.proto == 1 || k.proto == 58;
        let (sport, dport) = if icmp { (0, 0) } else { (sport, dport) };
        let v6 = k.ip_version == 6;
        let alen = if v6 { 16 } else { 4 };
        let (cs, cd) = if icmp { (u16::from(f.icmp_type), u16::from(f.icmp_code)) } else { (sport, dport) };
        let tuple = FlowTuple { proto: k.proto, src: &src[..alen], dst: &dst[..alen], src_port: cs, dst_port: cd };
        let n = k.vlan_count as usize;
        IpfixFlow {
            v6,
            src,
            dst,
            src_port: sport,
            dst_port: dport,
            proto: k.proto,
            vlan: if n > 0 { k.vlans[0] } else { 0 },
            inner_vlan: if n > 1 { k.vlans[1] } else { 0 },
            start_ms: f.first_ns / 1_000_000,
            end_ms: f.last_ns / 1_000_000,
            fwd_packets: f.fwd.packets,
            fwd_bytes: f.fwd.bytes,
            rev_packets: f.rev.packets,
            rev_bytes: f.rev.bytes,
            fwd_flags: f.tcp.fwd_flags,
            rev_flags: f.tcp.rev_flags,
            end_reason: end_reason_code(ff.reason),
            icmp_type_code: if icmp { u16::from(f.icmp_type) << 8 | u16::from(f.icmp_code) } else { 0 },
            embedding,
            score,
            community_id: community_id(ff.community_id_seed, &tuple).unwrap_or_else(|_| CommunityIdStr::new()),
            app: ff.meta.as_deref().map_or("unknown", |m| m.app.0.name()),
            server_name: ff.meta.as_deref().and_then(|m| m.tls).map(|t| t.sni).unwrap_or_default(),
            ja4: ff.meta.as_deref().and_then(|m| m.tls).map(|t| t.ja4).unwrap_or_default(),
            dns_qname: ff.meta.as_deref().and_then(|m| m.dns).map(|d| d.qname).unwrap_or_default(),
        }
    }
}

/// Append a variable-length value (RFC 7011 §7): a 1-byte length below 255,
/// else 255 and a 2-byte length. Values longer than 65535 bytes are cut.
pub fn put_varlen(out: &mut Vec<u8>, v: &[u8]) {
    let v = &v[..v.len().min(0xffff)];
    if v.len() < 255 {
        out.push(v.len() as u8);
    } else {
        out.push(255);
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(v);
}

/// Builds templates and data records.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// PEN of the wirefold elements.
    pub pen: u32,
    /// Whether records carry the embedding and the score.
    pub embedding: bool,
}

impl Encoder {
    /// The fields of the IPv4 or IPv6 template, in record order.
    pub fn fields(&self, v6: bool) -> Vec<Field> {
        let (sa, da, alen, icmp) = if v6 {
            (ie::SOURCE_IPV6_ADDRESS, ie::DESTINATION_IPV6_ADDRESS, 16, ie::ICMP_TYPE_CODE_IPV6)
        } else {
            (ie::SOURCE_IPV4_ADDRESS, ie::DESTINATION_IPV4_ADDRESS, 4, ie::ICMP_TYPE_CODE_IPV4)
        };
        let mut v = vec![
            iana(sa, alen),
            iana(da, alen),
            iana(ie::SOURCE_TRANSPORT_PORT, 2),
            iana(ie::DESTINATION_TRANSPORT_PORT, 2),
            iana(ie::PROTOCOL_IDENTIFIER, 1),
            iana(ie::VLAN_ID, 2),
            iana(ie::DOT1Q_CUSTOMER_VLAN_ID, 2),
            iana(ie::FLOW_START_MILLISECONDS, 8),
            iana(ie::FLOW_END_MILLISECONDS, 8),
            iana(ie::PACKET_DELTA_COUNT, 8),
            iana(ie::OCTET_DELTA_COUNT, 8),
            rev(ie::PACKET_DELTA_COUNT, 8),
            rev(ie::OCTET_DELTA_COUNT, 8),
            iana(ie::TCP_CONTROL_BITS, 2),
            rev(ie::TCP_CONTROL_BITS, 2),
            iana(ie::FLOW_END_REASON, 1),
            iana(icmp, 2),
        ];
        if self.embedding {
            v.push(Field { id: wf::EMBEDDING, len: 32, pen: self.pen });
            v.push(Field { id: wf::SCORE, len: 4, pen: self.pen });
        }
        v.push(Field { id: wf::COMMUNITY_ID, len: VARIABLE, pen: self.pen });
        v.push(iana(ie::APPLICATION_NAME, VARIABLE));
        v.push(Field { id: wf::SERVER_NAME, len: VARIABLE, pen: self.pen });
        v.push(Field { id: wf::JA4, len: VARIABLE, pen: self.pen });
        v.push(Field { id: wf::DNS_QNAME, len: VARIABLE, pen: self.pen });
        v
    }

    /// A Template Set with both templates.
    pub fn template_set(&self) -> Vec<u8> {
        let mut out = vec![0u8; SET_HEADER_LEN];
        out[..2].copy_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
        for (tid, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
            let fields = self.fields(v6);
            out.extend_from_slice(&tid.to_be_bytes());
            out.extend_from_slice(&(fields.len() as u16).to_be_bytes());
            for f in fields {
                let id = if f.pen != 0 { f.id | 0x8000 } else { f.id };
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&f.len.to_be_bytes());
                if f.pen != 0 {
                    out.extend_from_slice(&f.pen.to_be_bytes());
                }
            }
        }
        let len = out.len() as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        out
    }

    /// A whole message carrying the templates (sequence number and export
    /// time to be set with [`stamp`]).
    pub fn template_message(&self, domain: u32) -> Vec<u8> {
        let mut m = header(domain);
        m.extend_from_slice(&self.template_set());
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m
    }

    /// Append `f`'s data record to `out`; returns its template id.
    pub fn record(&self, f: &IpfixFlow, out: &mut Vec<u8>) -> u16 {
        let alen = if f.v6 { 16 } else { 4 };
        out.extend_from_slice(&f.src[..alen]);
        out.extend_from_slice(&f.dst[..alen]);
        out.extend_from_slice(&f.src_port.to_be_bytes());
        out.extend_from_slice(&f.dst_port.to_be_bytes());
        out.push(f.proto);
        out.extend_from_slice(&f.vlan.to_be_bytes());
        out.extend_from_slice(&f.inner_vlan.to_be_bytes());
        for v in [f.start_ms, f.end_ms, f.fwd_packets, f.fwd_bytes, f.rev_packets, f.rev_bytes] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&u16::from(f.fwd_flags).to_be_bytes());
        out.extend_from_slice(&u16::from(f.rev_flags).to_be_bytes());
        out.push(f.end_reason);
        out.extend_from_slice(&f.icmp_type_code.to_be_bytes());
        if self.embedding {
            out.extend(f.embedding.iter().map(|&b| b as u8));
            out.extend_from_slice(&f.score.to_be_bytes());
        }
        put_varlen(out, f.community_id.as_bytes());
        put_varlen(out, f.app.as_bytes());
        put_varlen(out, f.server_name.as_bytes());
        put_varlen(out, f.ja4.as_bytes());
        put_varlen(out, f.dns_qname.as_bytes());
        if f.v6 {
            TEMPLATE_V6
        } else {
            TEMPLATE_V4
        }
    }
}

fn header(domain: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(1500);
    m.extend_from_slice(&VERSION.to_be_bytes());
    m.extend_from_slice(&[0; 10]);
    m.extend_from_slice(&domain.to_be_bytes());
    m
}

/// Set a message's export time (seconds since the epoch) and sequence number.
pub fn stamp(msg: &mut [u8], export_secs: u32, seq: u32) {
    if msg.len() >= HEADER_LEN {
        msg[4..8].copy_from_slice(&export_secs.to_be_bytes());
        msg[8..12].copy_from_slice(&seq.to_be_bytes());
    }
}

/// A packed message and how many data records it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message (length set; export time and sequence number not yet).
    pub bytes: Vec<u8>,
    /// Data records in it.
    pub records: u32,
}

/// Packs data records into messages of at most `max` bytes, one Data Set
/// per run of records of the same template.
#[derive(Debug)]
pub struct Packer {
    max: usize,
    domain: u32,
    buf: Vec<u8>,
    set: Option<(u16, usize)>,
    records: u32,
}

impl Packer {
    /// A packer for messages of at most `max` bytes.
    pub fn new(max: usize, domain: u32) -> Self {
        Packer { max, domain, buf: Vec::new(), set: None, records: 0 }
    }

    /// Add one record of template `tid`; returns the previous message when
    /// this record did not fit in it.
    pub fn push(&mut self, tid: u16, rec: &[u8]) -> Option<Message> {
        let same_set = matches!(self.set, Some((t, _)) if t == tid);
        let need = rec.len() + if same_set { 0 } else { SET_HEADER_LEN };
        let mut done = None;
        if !self.buf.is_empty() && self.buf.len() + need > self.max {
            done = self.finish();
        }
        if self.buf.is_empty() {
            self.buf = header(self.domain);
        }
        if !matches!(self.set, Some((t, _)) if t == tid) {
            self.close_set();
            self.set = Some((tid, self.buf.len()));
            self.buf.extend_from_slice(&tid.to_be_bytes());
            self.buf.extend_from_slice(&[0, 0]);
        }
        self.buf.extend_from_slice(rec);
        self.records += 1;
        done
    }

    fn close_set(&mut self) {
        if let Some((_, at)) = self.set.take() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    /// The message being filled, if it has records.
    pub fn finish(&mut self) -> Option<Message> {
        if self.records == 0 {
            return None;
        }
        self.close_set();
        let len = self.buf.len() as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let records = std::mem::replace(&mut self.records, 0);
        Some(Message { bytes: std::mem::take(&mut self.buf), records })
    }
}

/// Where to send: `udp://HOST:PORT` or `tcp://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorUrl {
    /// TCP (else UDP).
    pub tcp: bool,
    /// `HOST:PORT`.
    pub addr: String,
}

impl std::str::FromStr for CollectorUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (tcp, rest) = if let Some(r) = s.strip_prefix("udp://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (true, r)
        } else {
            return Err(format!("{s:?}: expected udp://HOST:PORT or tcp://HOST:PORT"));
        };
        let rest = rest.trim_end_matches('/');
        let port_ok = rest.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !h.contains(['/', ',', ' ']) && p.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(format!("{s:?}: expected udp://HOST:PORT or tcp://HOST:PORT"));
        }
        Ok(CollectorUrl { tcp, addr: rest.to_string() })
    }
}

/// One or more collector URLs separated by commas (one `--ipfix` value, or a
/// configuration file's array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorList(pub Vec<CollectorUrl>);

impl std::str::FromStr for CollectorList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',').map(|u| u.trim().parse()).collect::<Result<Vec<_>, _>>().map(CollectorList)
    }
}

impl std::fmt::Display for CollectorUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", if self.tcp { "tcp" } else { "udp" }, self.addr)
    }
}

/// IPFIX export settings.
#[derive(Debug, Clone)]
pub struct IpfixConfig {
    /// The collectors.
    pub collectors: Vec<CollectorUrl>,
    /// Observation domain id.
    pub domain: u32,
    /// PEN of the wirefold elements.
    pub pen: u32,
    /// UDP template re-send interval.
    pub template_refresh: Duration,
    /// Path MTU for UDP: IP packets never exceed it. `None`: the kernel's
    /// path MTU of the route to each collector, at most [`AUTO_MTU_MAX`].
    pub mtu: Option<usize>,
    /// Whether records carry the embedding and score (the model is loaded).
    pub embedding: bool,
}

/// One collector's counters.
#[derive(Debug, Default)]
pub struct CollectorCounters {
    /// The collector URL (the metrics label).
    pub collector: String,
    /// Messages sent (data and template).
    pub messages: AtomicU64,
    /// Bytes of messages sent.
    pub bytes: AtomicU64,
    /// Data records sent.
    pub records: AtomicU64,
    /// Template messages sent.
    pub templates: AtomicU64,
    /// Records dropped because the TCP queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Records dropped because sending failed (UDP).
    pub dropped_send_error: AtomicU64,
    /// Records still queued when the sensor stopped and the collector was away.
    pub dropped_shutdown: AtomicU64,
    /// Failed sends and failed connection attempts.
    pub send_errors: AtomicU64,
    /// TCP connections established after the first.
    pub reconnects: AtomicU64,
    /// UDP: the path MTU the messages are sized to.
    pub mtu: AtomicU64,
}

/// What one collector got, for the run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IpfixReport {
    /// The collector URL.
    pub collector: String,
    /// Messages sent.
    pub messages: u64,
    /// Data records sent.
    pub records: u64,
    /// Records dropped (queue full, send errors, shutdown).
    pub dropped: u64,
    /// Failed sends and connection attempts.
    pub send_errors: u64,
    /// UDP: the path MTU messages were sized to (0 for TCP).
    pub mtu: u64,
}

impl CollectorCounters {
    fn report(&self) -> IpfixReport {
        IpfixReport {
            collector: self.collector.clone(),
            messages: self.messages.load(Relaxed),
            records: self.records.load(Relaxed),
            dropped: self.dropped_queue_full.load(Relaxed)
                + self.dropped_send_error.load(Relaxed)
                + self.dropped_shutdown.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            mtu: self.mtu.load(Relaxed),
        }
    }
}

/// Add the IPFIX families (one series per collector).
pub fn exposition(cs: &[Arc<CollectorCounters>], e: &mut Exposition) {
    for c in cs {
        let l = [("collector", c.collector.as_str())];
        let v = |a: &AtomicU64| a.load(Relaxed) as f64;
        e.counter("wirefold_ipfix_messages_total", "IPFIX messages sent (data and template).", &l, v(&c.messages));
        e.counter("wirefold_ipfix_bytes_total", "Bytes of IPFIX messages sent.", &l, v(&c.bytes));
        e.counter("wirefold_ipfix_records_total", "IPFIX data records (flows) sent.", &l, v(&c.records));
        e.counter("wirefold_ipfix_templates_total", "IPFIX template messages sent.", &l, v(&c.templates));
        if c.mtu.load(Relaxed) > 0 {
            e.gauge("wirefold_ipfix_path_mtu_bytes", "UDP: the path MTU IPFIX messages are sized to.", &l, v(&c.mtu));
        }
        for (reason, a) in [
            ("queue_full", &c.dropped_queue_full),
            ("send_error", &c.dropped_send_error),
            ("shutdown", &c.dropped_shutdown),
        ] {
            e.counter(
                "wirefold_ipfix_dropped_total",
                "IPFIX data records dropped, by reason (queue_full: TCP collector away or slow; send_error: UDP send failed; shutdown: still queued at exit).",
                &[("collector", c.collector.as_str()), ("reason", reason)],
                v(a),
            );
        }
        e.counter(
            "wirefold_ipfix_send_errors_total",
            "Failed IPFIX sends and TCP connection attempts.",
            &l,
            v(&c.send_errors),
        );
        e.counter(
            "wirefold_ipfix_reconnects_total",
            "TCP connections to the collector re-established.",
            &l,
            v(&c.reconnects),
        );
    }
}

/// The kernel's path MTU towards a connected socket's peer, within
/// 576..=[`AUTO_MTU_MAX`]; [`FALLBACK_MTU`] when it cannot be read.
pub fn path_mtu(sock: &UdpSocket, v6: bool) -> usize {
    let m = if v6 { rustix::net::sockopt::ipv6_mtu(sock) } else { rustix::net::sockopt::ip_mtu(sock) };
    m.map_or(FALLBACK_MTU, |m| (m as usize).clamp(576, AUTO_MTU_MAX))
}

fn export_secs() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}

enum Link {
    Udp { sock: UdpSocket, last_template: Option<Instant>, seq: u32 },
    Tcp { tx: Option<Sender<Message>>, handle: Option<JoinHandle<()>>, closing: Arc<AtomicBool> },
}

struct Collector {
    packer: Packer,
    link: Link,
    counters: Arc<CollectorCounters>,
}

/// The IPFIX sink of the export thread.
pub struct IpfixSink {
    enc: Encoder,
    templates: Vec<u8>,
    refresh: Duration,
    collectors: Vec<Collector>,
    rec: Vec<u8>,
}

impl std::fmt::Debug for IpfixSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpfixSink").field("collectors", &self.collectors.len()).finish()
    }
}

/// Why IPFIX export could not start, with the collector it concerns.
#[derive(Debug, thiserror::Error)]
pub enum IpfixError {
    /// A UDP collector's address does not resolve.
    #[error("--ipfix {collector}: {source}")]
    Resolve {
        /// The collector, as given.
        collector: String,
        /// Why.
        source: std::io::Error,
    },
    /// A UDP collector's name resolves to no address.
    #[error("--ipfix {collector}: no address")]
    NoAddress {
        /// The collector, as given.
        collector: String,
    },
    /// The UDP socket cannot be opened or connected.
    #[error("--ipfix {collector}: {source}")]
    Socket {
        /// The collector, as given.
        collector: String,
        /// Why.
        source: std::io::Error,
    },
    /// A TCP collector's sender thread cannot start.
    #[error("--ipfix {collector}: cannot start the sender thread: {source}")]
    Thread {
        /// The collector, as given.
        collector: String,
        /// Why.
        source: std::io::Error,
    },
}

impl IpfixSink {
    /// Open the UDP sockets and start one sender thread per TCP collector.
    /// A UDP collector whose address does not resolve is an error.
    pub fn start(cfg: IpfixConfig) -> Result<Self, IpfixError> {
        let enc = Encoder { pen: cfg.pen, embedding: cfg.embedding };
        let templates = enc.template_message(cfg.domain);
        let mut collectors = Vec::new();
        for url in &cfg.collectors {
            let counters = Arc::new(CollectorCounters { collector: url.to_string(), ..Default::default() });
            let c = if url.tcp {
                let (tx, rx) = bounded::<Message>(TCP_QUEUE);
                let closing = Arc::new(AtomicBool::new(false));
                let (addr, t, c2, cl) = (url.addr.clone(), templates.clone(), counters.clone(), closing.clone());
                let handle = std::thread::Builder::new()
                    .name("wirefold-ipfix".into())
                    .spawn(move || tcp_sender(&addr, &rx, t, &c2, &cl))
                    .map_err(|source| IpfixError::Thread { collector: url.to_string(), source })?;
                Collector {
                    packer: Packer::new(TCP_MESSAGE_MAX, cfg.domain),
                    link: Link::Tcp { tx: Some(tx), handle: Some(handle), closing },
                    counters,
                }
            } else {
                let addr: SocketAddr = url
                    .addr
                    .to_socket_addrs()
                    .map_err(|source| IpfixError::Resolve { collector: url.to_string(), source })?
                    .next()
                    .ok_or_else(|| IpfixError::NoAddress { collector: url.to_string() })?;
                let bind: SocketAddr =
                    if addr.is_ipv6() { "[::]:0".parse().expect("addr") } else { "0.0.0.0:0".parse().expect("addr") };
                let socket = |source| IpfixError::Socket { collector: url.to_string(), source };
                let sock = UdpSocket::bind(bind).map_err(socket)?;
                sock.connect(addr).map_err(socket)?;
                // A full socket buffer must not hold the export thread for long.
                let _ = sock.set_write_timeout(Some(Duration::from_millis(10)));
                let overhead = if addr.is_ipv6() { 48 } else { 28 };
                let mtu = cfg.mtu.unwrap_or_else(|| path_mtu(&sock, addr.is_ipv6()));
                counters.mtu.store(mtu as u64, Relaxed);
                Collector {
                    packer: Packer::new(mtu.saturating_sub(overhead).max(256), cfg.domain),
                    link: Link::Udp { sock, last_template: None, seq: 0 },
                    counters,
                }
            };
            collectors.push(c);
        }
        Ok(IpfixSink { enc, templates, refresh: cfg.template_refresh, collectors, rec: Vec::with_capacity(256) })
    }

    /// The collectors' counters, for `/metrics`.
    pub fn counters(&self) -> Vec<Arc<CollectorCounters>> {
        self.collectors.iter().map(|c| c.counters.clone()).collect()
    }

    /// Export one flow (with its inspection fields, when it has them).
    pub fn push(&mut self, f: &FinishedFlow, embedding: [i8; 32], score: f32) {
        let flow = IpfixFlow::new(f, embedding, score);
        self.rec.clear();
        let tid = self.enc.record(&flow, &mut self.rec);
        for i in 0..self.collectors.len() {
            if let Some(m) = self.collectors[i].packer.push(tid, &self.rec) {
                self.send(i, m);
            }
        }
    }

    /// Send the partly filled messages (end of a batch of flows).
    pub fn flush(&mut self) {
        for i in 0..self.collectors.len() {
            if let Some(m) = self.collectors[i].packer.finish() {
                self.send(i, m);
            }
        }
    }

    fn send(&mut self, i: usize, mut m: Message) {
        let refresh = self.refresh;
        let c = &mut self.collectors[i];
        let k = &c.counters;
        match &mut c.link {
            Link::Udp { sock, last_template, seq } => {
                let now = Instant::now();
                if last_template.is_none_or(|t| now.duration_since(t) >= refresh) {
                    stamp(&mut self.templates, export_secs(), *seq);
                    match sock.send(&self.templates) {
                        Ok(_) => {
                            *last_template = Some(now);
                            k.templates.fetch_add(1, Relaxed);
                            k.messages.fetch_add(1, Relaxed);
                            k.bytes.fetch_add(self.templates.len() as u64, Relaxed);
                        }
                        Err(_) => {
                            k.send_errors.fetch_add(1, Relaxed);
                        }
                    }
                }
                stamp(&mut m.bytes, export_secs(), *seq);
                // Counted as sent either way: a gap tells the collector records were lost.
                *seq = seq.wrapping_add(m.records);
                match sock.send(&m.bytes) {
                    Ok(_) => {
                        k.messages.fetch_add(1, Relaxed);
                        k.records.fetch_add(u64::from(m.records), Relaxed);
                        k.bytes.fetch_add(m.bytes.len() as u64, Relaxed);
                    }
                    Err(_) => {
                        k.send_errors.fetch_add(1, Relaxed);
                        k.dropped_send_error.fetch_add(u64::from(m.records), Relaxed);
                    }
                }
            }
            Link::Tcp { tx, .. } => {
                if let Some(tx) = tx {
                    match tx.try_send(m) {
                        Ok(()) => {}
                        Err(TrySendError::Full(m)) | Err(TrySendError::Disconnected(m)) => {
                            k.dropped_queue_full.fetch_add(u64::from(m.records), Relaxed);
                        }
                    }
                }
            }
        }
    }

    /// Send what is left, let the TCP senders drain (a few seconds at most
    /// for a collector that is away), and report.
    pub fn finish(mut self) -> Vec<IpfixReport> {
        self.flush();
        for c in &mut self.collectors {
            if let Link::Tcp { tx, handle, closing } = &mut c.link {
                closing.store(true, Relaxed);
                drop(tx.take());
                if let Some(h) = handle.take() {
                    let _ = h.join();
                }
            }
        }
        self.collectors.iter().map(|c| c.counters.report()).collect()
    }
}

/// How long a sender keeps delivering its queue once the sensor is stopping
/// (an absent or stalled collector must not hold the exit for long).
const DRAIN: Duration = Duration::from_secs(5);

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("no address");
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn tcp_sender(addr: &str, rx: &Receiver<Message>, mut templates: Vec<u8>, k: &CollectorCounters, closing: &AtomicBool) {
    let mut conn: Option<TcpStream> = None;
    let mut seq = 0u32;
    let mut connected_before = false;
    let mut backoff = Duration::from_millis(100);
    let mut closing_since: Option<Instant> = None;
    'msgs: while let Ok(mut m) = rx.recv() {
        loop {
            if closing.load(Relaxed) && closing_since.get_or_insert_with(Instant::now).elapsed() >= DRAIN {
                k.dropped_shutdown.fetch_add(u64::from(m.records), Relaxed);
                while let Ok(m) = rx.recv() {
                    k.dropped_shutdown.fetch_add(u64::from(m.records), Relaxed);
                }
                return;
            }
            if conn.is_none() {
                match connect(addr) {
                    Ok(mut s) => {
                        let _ = s.set_nodelay(true);
                        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                        seq = 0;
                        stamp(&mut templates, export_secs(), seq);
                        if s.write_all(&templates).is_ok() {
                            k.templates.fetch_add(1, Relaxed);
                            k.messages.fetch_add(1, Relaxed);
                            k.bytes.fetch_add(templates.len() as u64, Relaxed);
                            if connected_before {
                                k.reconnects.fetch_add(1, Relaxed);
                            }
                            connected_before = true;
                            backoff = Duration::from_millis(100);
                            conn = Some(s);
                        } else {
                            k.send_errors.fetch_add(1, Relaxed);
                        }
                    }
                    Err(_) => {
                        k.send_errors.fetch_add(1, Relaxed);
                    }
                }
            }
            if let Some(s) = conn.as_mut() {
                stamp(&mut m.bytes, export_secs(), seq);
                if s.write_all(&m.bytes).is_ok() {
                    seq = seq.wrapping_add(m.records);
                    k.messages.fetch_add(1, Relaxed);
                    k.records.fetch_add(u64::from(m.records), Relaxed);
                    k.bytes.fetch_add(m.bytes.len() as u64, Relaxed);
                    continue 'msgs;
                }
                // The message goes again, first on the next connection.
                k.send_errors.fetch_add(1, Relaxed);
                conn = None;
                continue;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
            if closing.load(Relaxed) {
                backoff = backoff.min(Duration::from_millis(500));
            }
        }
    }
    if let Some(mut s) = conn {
        let _ = s.flush();
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
}
