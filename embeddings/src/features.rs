//! The flow feature vector: what the model sees of a flow.
//!
//! Every feature is a finite number by construction: counts, sizes and times
//! go through `ln(1 + x)` (x ≥ 0), ratios have guarded denominators, flags
//! are 0 or 1. [`FEATURES`] documents each one (name, unit, transform); the
//! model card records the standardisation (mean, std) learned in training.
//!
//! Columns 0–25 are the flow's counters and statistics; 26–63 come from the
//! first packets (sizes and gaps), inspection (payload sketch, `app`, DNS,
//! TLS and HTTP facts) and the two hosts' recent activity (host context).
//! Without inspection (`--no-inspect`) the inspection columns are 0.

/// Number of features.
pub const F: usize = 64;

/// Packets of the first-packets sequence.
pub const SPLT: usize = 8;

/// A feature's documentation.
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    /// Column name (also in the training CSV and the model card).
    pub name: &'static str,
    /// Unit of the raw value.
    pub unit: &'static str,
    /// Transform applied before standardisation.
    pub transform: &'static str,
}

const fn f(name: &'static str, unit: &'static str, transform: &'static str) -> Feature {
    Feature { name, unit, transform }
}

/// The features, in vector order.
pub const FEATURES: [Feature; F] = [
    f("duration", "s", "log1p"),
    f("fwd_packets", "packets", "log1p"),
    f("rev_packets", "packets", "log1p"),
    f("fwd_bytes", "bytes", "log1p"),
    f("rev_bytes", "bytes", "log1p"),
    f("fwd_size_mean", "bytes", "log1p"),
    f("rev_size_mean", "bytes", "log1p"),
    f("fwd_size_std", "bytes", "log1p"),
    f("rev_size_std", "bytes", "log1p"),
    f("fwd_size_max", "bytes", "log1p"),
    f("rev_size_max", "bytes", "log1p"),
    f("fwd_iat_mean", "ms", "log1p"),
    f("rev_iat_mean", "ms", "log1p"),
    f("fwd_iat_std", "ms", "log1p"),
    f("rev_iat_std", "ms", "log1p"),
    f("fwd_payload_fraction", "ratio", "payload bytes / IP bytes, 0 when no bytes"),
    f("rev_payload_fraction", "ratio", "payload bytes / IP bytes, 0 when no bytes"),
    f("syn_count", "packets", "log1p"),
    f("fin_count", "packets", "log1p"),
    f("rst_count", "packets", "log1p"),
    f("psh_count", "packets", "log1p"),
    f("ack_fraction", "ratio", "ACK packets / packets"),
    f("proto_tcp", "flag", "1 if TCP"),
    f("proto_udp", "flag", "1 if UDP"),
    f("proto_icmp", "flag", "1 if ICMP or ICMPv6"),
    f("dst_port_class", "class", "0 no port, 1 well-known (<1024), 2 registered (<49152), 3 dynamic"),
    f("splt_1", "bytes", "packet 1's IP bytes, log1p, negative from the responder; 0 when absent"),
    f("splt_2", "bytes", "as splt_1, packet 2"),
    f("splt_3", "bytes", "as splt_1, packet 3"),
    f("splt_4", "bytes", "as splt_1, packet 4"),
    f("splt_5", "bytes", "as splt_1, packet 5"),
    f("splt_6", "bytes", "as splt_1, packet 6"),
    f("splt_7", "bytes", "as splt_1, packet 7"),
    f("splt_8", "bytes", "as splt_1, packet 8"),
    f("spliat_2", "ms", "gap before packet 2, log1p; 0 when absent"),
    f("spliat_3", "ms", "gap before packet 3, log1p"),
    f("spliat_4", "ms", "gap before packet 4, log1p"),
    f("spliat_5", "ms", "gap before packet 5, log1p"),
    f("spliat_6", "ms", "gap before packet 6, log1p"),
    f("spliat_7", "ms", "gap before packet 7, log1p"),
    f("spliat_8", "ms", "gap before packet 8, log1p"),
    f("fwd_entropy", "bits/8", "entropy of the first 256 payload bytes initiator → responder, divided by 8"),
    f("fwd_printable", "ratio", "printable ASCII fraction of those bytes"),
    f("rev_entropy", "bits/8", "as fwd_entropy, responder → initiator"),
    f("rev_printable", "ratio", "as fwd_printable, responder → initiator"),
    f("app_tls", "flag", "1 if app is tls"),
    f("app_quic", "flag", "1 if app is quic"),
    f("app_dns", "flag", "1 if app is dns"),
    f("app_http", "flag", "1 if app is http"),
    f("app_ssh", "flag", "1 if app is ssh"),
    f("dns_qname_len", "bytes", "first question's name length, log1p"),
    f("dns_label_max", "bytes", "its longest label, log1p"),
    f("dns_qname_entropy", "bits/8", "character entropy of the name, divided by 8"),
    f("dns_qtype_rare", "flag", "1 if the question type is not A, AAAA, PTR, HTTPS, SVCB, SRV, MX, NS or SOA"),
    f("dns_error", "flag", "1 if the first response's rcode is not 0"),
    f("tls_sni", "flag", "1 if the ClientHello named a server"),
    f("tls_13", "flag", "1 if the client offered TLS 1.3"),
    f("http_status_class", "class", "first response status / 100 (0 when none)"),
    f("http_error", "flag", "1 if that status is 400 or above"),
    f("src_flows", "flows", "flows the initiator started in the last 10-20 s, log1p"),
    f("src_peers", "hosts", "distinct responders of those flows (estimate), log1p"),
    f("src_ports", "ports", "distinct responder ports of those flows (estimate), log1p"),
    f("dst_flows", "flows", "flows the responder received in the last 10-20 s, log1p"),
    f("dst_peers", "hosts", "distinct initiators of those flows (estimate), log1p"),
];

/// What inspection and the flow table add to a flow's counters. All zero
/// (the default) when inspection is off or found nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FlowContext {
    /// The first packets: IP bytes, negative from the responder; 0 past the end.
    pub splt_bytes: [i32; SPLT],
    /// Gap before each of the first packets, milliseconds (index 0 unused).
    pub splt_gap_ms: [f32; SPLT],
    /// Payload entropy (bits per byte, 0–8) and printable fraction, forward then reverse.
    pub sketch: [[f32; 2]; 2],
    /// App flags: tls, quic, dns, http, ssh.
    pub app: [bool; 5],
    /// DNS first question's name (empty when none).
    pub dns_qname_len: u32,
    /// Longest label of that name.
    pub dns_label_max: u32,
    /// Character entropy of the name, bits (0–8).
    pub dns_qname_entropy: f32,
    /// The question type, 0 when none.
    pub dns_qtype: u16,
    /// The first response's rcode, if any.
    pub dns_rcode: Option<u8>,
    /// The ClientHello named a server.
    pub tls_sni: bool,
    /// The client offered TLS 1.3.
    pub tls_13: bool,
    /// First HTTP response status (0 when none).
    pub http_status: u16,
    /// Host context: initiator's flows, peers, ports; responder's flows, peers.
    pub host: [f32; 5],
}

/// Character entropy of a byte string in bits (0 when empty).
pub fn byte_entropy(b: &[u8]) -> f32 {
    if b.is_empty() {
        return 0.0;
    }
    let mut counts = [0u16; 256];
    for &c in b {
        counts[c as usize] = counts[c as usize].saturating_add(1);
    }
    let n = b.len() as f32;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f32 / n;
            -p * p.log2()
        })
        .sum()
}

/// The raw numbers of one flow that the features are computed from. The
/// sensor fills it from its flow record; nothing here knows about packets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FlowSummary {
    /// Seconds between first and last packet.
    pub duration_s: f64,
    /// Packets, bytes and payload bytes, initiator → responder.
    pub fwd_packets: u64,
    /// IP bytes forward.
    pub fwd_bytes: u64,
    /// Payload bytes forward.
    pub fwd_payload: u64,
    /// Packets reverse.
    pub rev_packets: u64,
    /// IP bytes reverse.
    pub rev_bytes: u64,
    /// Payload bytes reverse.
    pub rev_payload: u64,
    /// Packet size mean, std, max forward (bytes).
    pub fwd_size: [f64; 3],
    /// Packet size mean, std, max reverse.
    pub rev_size: [f64; 3],
    /// Inter-arrival mean, std forward (seconds).
    pub fwd_iat: [f64; 2],
    /// Inter-arrival mean, std reverse (seconds).
    pub rev_iat: [f64; 2],
    /// Packets with SYN, FIN, RST, PSH, ACK.
    pub syn: u32,
    /// FIN packets.
    pub fin: u32,
    /// RST packets.
    pub rst: u32,
    /// PSH packets.
    pub psh: u32,
    /// ACK packets.
    pub ack: u32,
    /// IP protocol.
    pub proto: u8,
    /// Responder port (0 where none).
    pub dst_port: u16,
}

#[inline]
fn l(x: f64) -> f32 {
    // Negative or non-finite inputs cannot come from a flow; clamp anyway.
    // Single precision is all the model uses, and `log1pf` is much cheaper.
    let x = x as f32;
    if x.is_finite() && x > 0.0 {
        x.ln_1p()
    } else {
        0.0
    }
}

/// `ln(1 + n)` of the small counts most features are, from a table built
/// with the same `log1pf` (so the values are bit-identical to [`l`]): about
/// half of a flow's logarithms are counts below this bound.
const LN1P_TABLE: usize = 4096;

static LN1P: std::sync::LazyLock<Box<[f32; LN1P_TABLE]>> = std::sync::LazyLock::new(|| {
    let mut t = Box::new([0f32; LN1P_TABLE]);
    for (n, v) in t.iter_mut().enumerate() {
        *v = (n as f32).ln_1p();
    }
    t
});

/// [`l`] of a count.
#[inline]
fn li(n: u64) -> f32 {
    match LN1P.get(n as usize) {
        Some(&v) if n < LN1P_TABLE as u64 => v,
        _ => l(n as f64),
    }
}

#[inline]
fn ratio(a: f64, b: f64) -> f32 {
    if b > 0.0 && a.is_finite() {
        (a / b).clamp(0.0, 1.0) as f32
    } else {
        0.0
    }
}

/// Compute the (unstandardised) feature vector of a flow.
pub fn extract(s: &FlowSummary, out: &mut [f32; F]) {
    extract_with(s, &FlowContext::default(), out)
}

fn signed_log(x: i32) -> f32 {
    let m = li(x.unsigned_abs() as u64);
    if x < 0 {
        -m
    } else {
        m
    }
}

fn unit(x: f32) -> f32 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Compute the (unstandardised) feature vector of a flow with its context.
pub fn extract_with(s: &FlowSummary, c: &FlowContext, out: &mut [f32; F]) {
    let packets = (s.fwd_packets + s.rev_packets) as f64;
    let base: [f32; 26] = [
        l(s.duration_s),
        li(s.fwd_packets),
        li(s.rev_packets),
        li(s.fwd_bytes),
        li(s.rev_bytes),
        l(s.fwd_size[0]),
        l(s.rev_size[0]),
        l(s.fwd_size[1]),
        l(s.rev_size[1]),
        l(s.fwd_size[2]),
        l(s.rev_size[2]),
        l(s.fwd_iat[0] * 1e3),
        l(s.rev_iat[0] * 1e3),
        l(s.fwd_iat[1] * 1e3),
        l(s.rev_iat[1] * 1e3),
        ratio(s.fwd_payload as f64, s.fwd_bytes as f64),
        ratio(s.rev_payload as f64, s.rev_bytes as f64),
        li(s.syn as u64),
        li(s.fin as u64),
        li(s.rst as u64),
        li(s.psh as u64),
        ratio(s.ack as f64, packets),
        (s.proto == 6) as u8 as f32,
        (s.proto == 17) as u8 as f32,
        (s.proto == 1 || s.proto == 58) as u8 as f32,
        match (s.proto, s.dst_port) {
            (6 | 17 | 132, 0) | (1 | 58, _) => 0.0,
            (6 | 17 | 132, p) if p < 1024 => 1.0,
            (6 | 17 | 132, p) if p < 49152 => 2.0,
            (6 | 17 | 132, _) => 3.0,
            _ => 0.0,
        },
    ];
    out[..26].copy_from_slice(&base);
    let mut i = 26;
    let mut put = |v: f32| {
        out[i] = if v.is_finite() { v } else { 0.0 };
        i += 1;
    };
    for &b in &c.splt_bytes {
        put(signed_log(b));
    }
    for &g in &c.splt_gap_ms[1..] {
        put(l(g as f64));
    }
    for d in c.sketch {
        put(unit(d[0] / 8.0));
        put(unit(d[1]));
    }
    for a in c.app {
        put(a as u8 as f32);
    }
    put(li(c.dns_qname_len as u64));
    put(li(c.dns_label_max as u64));
    put(unit(c.dns_qname_entropy / 8.0));
    put((c.dns_qtype != 0 && !matches!(c.dns_qtype, 1 | 28 | 12 | 65 | 64 | 33 | 15 | 2 | 6)) as u8 as f32);
    put(c.dns_rcode.is_some_and(|r| r != 0) as u8 as f32);
    put(c.tls_sni as u8 as f32);
    put(c.tls_13 as u8 as f32);
    put((c.http_status / 100).min(9) as f32);
    put((c.http_status >= 400) as u8 as f32);
    for h in c.host {
        put(l(h as f64));
    }
    debug_assert_eq!(i, F);
}

/// The CSV header line for `--features-out`.
pub fn csv_header() -> String {
    FEATURES.iter().map(|f| f.name).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_flows_give_finite_features() {
        let mut v = [f32::NAN; F];
        // One packet, zero duration, nothing the other way.
        let one = FlowSummary {
            fwd_packets: 1,
            fwd_bytes: 40,
            fwd_size: [40.0, 0.0, 40.0],
            proto: 6,
            dst_port: 80,
            syn: 1,
            ..Default::default()
        };
        extract(&one, &mut v);
        assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
        assert_eq!(v[0], 0.0, "zero duration");
        assert_eq!(v[2], 0.0, "no reverse packets");
        assert_eq!(v[16], 0.0, "no reverse bytes: fraction 0, not NaN");
        assert_eq!(v[25], 1.0);
        assert!(v[26..].iter().all(|&x| x == 0.0), "no context: zeros");
        let ctx = FlowContext {
            splt_bytes: [60, -60, 52, 0, 0, 0, 0, 0],
            splt_gap_ms: [0.0, 1.0, f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0],
            sketch: [[9.0, 0.5], [-1.0, f32::INFINITY]],
            app: [true, false, false, false, false],
            dns_qtype: 16,
            dns_rcode: Some(3),
            http_status: 404,
            host: [3.0, 1.0, 1000.0, 0.0, 0.0],
            ..Default::default()
        };
        extract_with(&one, &ctx, &mut v);
        assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
        assert!(v[26] > 4.0 && v[27] < -4.0 && v[29] == 0.0);
        assert_eq!(v[41], 1.0, "entropy clamped to 1");
        let at = |n: &str| FEATURES.iter().position(|f| f.name == n).unwrap();
        assert_eq!(v[at("dns_qtype_rare")], 1.0);
        assert_eq!(v[at("dns_error")], 1.0);
        assert_eq!(v[at("http_status_class")], 4.0);
        assert_eq!(v[at("app_tls")], 1.0);
        assert!((byte_entropy(b"abab") - 1.0).abs() < 1e-6);
        // An all-zero summary, and one with hostile values.
        extract(&FlowSummary::default(), &mut v);
        assert!(v.iter().all(|x| x.is_finite()));
        let bad = FlowSummary {
            duration_s: f64::NAN,
            fwd_size: [f64::INFINITY, -1.0, f64::NAN],
            fwd_iat: [-5.0, f64::NEG_INFINITY],
            ..Default::default()
        };
        extract(&bad, &mut v);
        assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
    }

    #[test]
    fn the_count_table_equals_log1p_bit_for_bit() {
        for n in (0..LN1P_TABLE as u64 + 10).chain([65_535, 1 << 20, u32::MAX as u64]) {
            assert_eq!(li(n).to_bits(), l(n as f64).to_bits(), "{n}");
        }
        assert_eq!(signed_log(-1500).to_bits(), (-(1500f32.ln_1p())).to_bits());
    }

    #[test]
    fn names_are_unique_and_documented() {
        let mut names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), F);
        assert!(FEATURES.iter().all(|f| !f.unit.is_empty() && !f.transform.is_empty()));
        assert_eq!(csv_header().split(',').count(), F);
    }
}
