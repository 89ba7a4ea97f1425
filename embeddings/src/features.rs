//! The flow feature vector: what the model sees of a flow.
//!
//! Every feature is a finite number by construction: counts, sizes and times
//! go through `ln(1 + x)` (x ≥ 0), ratios have guarded denominators, flags
//! are 0 or 1. [`FEATURES`] documents each one (name, unit, transform); the
//! model card records the standardisation (mean, std) learned in training.

/// Number of features.
pub const F: usize = 26;

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
];

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
    let packets = (s.fwd_packets + s.rev_packets) as f64;
    *out = [
        l(s.duration_s),
        l(s.fwd_packets as f64),
        l(s.rev_packets as f64),
        l(s.fwd_bytes as f64),
        l(s.rev_bytes as f64),
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
        l(s.syn as f64),
        l(s.fin as f64),
        l(s.rst as f64),
        l(s.psh as f64),
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
    fn names_are_unique_and_documented() {
        let mut names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), F);
        assert!(FEATURES.iter().all(|f| !f.unit.is_empty() && !f.transform.is_empty()));
        assert_eq!(csv_header().split(',').count(), F);
    }
}
