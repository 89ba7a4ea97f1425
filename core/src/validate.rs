//! Semantic validation of every flow before it is stored. The FlatBuffers
//! verifier proves a batch is well-formed; these rules prove its values make
//! sense. A batch with one invalid flow is refused whole, naming the flow's
//! index and the rule it broke (see `docs/operations.md`).
use wirefold_schema::FlowRec;

/// Largest end-reason value (0 idle ... 6 shutdown).
pub const MAX_END_REASON: u8 = 6;
/// How far past the core's clock a flow's last packet may be (clock skew).
pub const MAX_FUTURE_NS: u64 = 86_400 * 1_000_000_000;
/// Smallest IP packet (an IPv4 header without options).
pub const MIN_IP_PACKET: u64 = 20;
/// Largest finite half-precision value: the score's upper bound on the wire.
pub const MAX_SCORE: f32 = 65504.0;

/// A rule a flow broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `ip_version` is 4 or 6.
    IpVersion,
    /// The last packet is not before the first.
    TimeOrder,
    /// The last packet is not more than a day after the core's clock.
    TimeFuture,
    /// At least one packet.
    NoPackets,
    /// Each direction has at least 20 IP bytes per packet, and no bytes without packets.
    BytesPerPacket,
    /// The end reason is one of the known values.
    EndReason,
    /// TCP flags only on TCP flows.
    TcpFlags,
    /// A VLAN id fits 12 bits.
    Vlan,
    /// The score is a finite number in [0, 65504].
    Score,
}

impl Rule {
    /// The rule's name, as reasons and metrics show it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::IpVersion => "ip_version",
            Rule::TimeOrder => "time_order",
            Rule::TimeFuture => "time_future",
            Rule::NoPackets => "no_packets",
            Rule::BytesPerPacket => "bytes_per_packet",
            Rule::EndReason => "end_reason",
            Rule::TcpFlags => "tcp_flags",
            Rule::Vlan => "vlan",
            Rule::Score => "score",
        }
    }

    /// Every rule.
    pub const ALL: [Rule; 9] = [
        Rule::IpVersion,
        Rule::TimeOrder,
        Rule::TimeFuture,
        Rule::NoPackets,
        Rule::BytesPerPacket,
        Rule::EndReason,
        Rule::TcpFlags,
        Rule::Vlan,
        Rule::Score,
    ];
}

/// Why a batch was refused: the first invalid flow.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("flow {index} breaks rule '{}': {detail}", rule.name())]
pub struct Invalid {
    /// Index of the flow in the batch (IPv4 flows first, then IPv6).
    pub index: usize,
    /// The rule.
    pub rule: Rule,
    /// The offending values.
    pub detail: String,
}

fn check(f: &FlowRec, now_ns: u64) -> Result<(), (Rule, String)> {
    if f.ip_version != 4 && f.ip_version != 6 {
        return Err((Rule::IpVersion, format!("ip_version {}", f.ip_version)));
    }
    if f.last_ns < f.first_ns {
        return Err((Rule::TimeOrder, format!("last {} ns is before first {} ns", f.last_ns, f.first_ns)));
    }
    if f.last_ns > now_ns.saturating_add(MAX_FUTURE_NS) {
        return Err((Rule::TimeFuture, format!("last {} ns is more than a day after the core's clock", f.last_ns)));
    }
    if f.fwd_packets as u64 + f.rev_packets as u64 == 0 {
        return Err((Rule::NoPackets, "0 packets either way".into()));
    }
    for (dir, p, b) in [("fwd", f.fwd_packets, f.fwd_bytes), ("rev", f.rev_packets, f.rev_bytes)] {
        if (b as u128) < p as u128 * MIN_IP_PACKET as u128 || (p == 0 && b != 0) {
            return Err((Rule::BytesPerPacket, format!("{dir}: {b} bytes in {p} packets")));
        }
    }
    if f.end_reason > MAX_END_REASON {
        return Err((Rule::EndReason, format!("end reason {}", f.end_reason)));
    }
    if f.tcp_flags != 0 && f.proto != 6 {
        return Err((Rule::TcpFlags, format!("flags {:#04x} on protocol {}", f.tcp_flags, f.proto)));
    }
    if f.vlan.is_some_and(|v| v > 4095) {
        return Err((Rule::Vlan, format!("vlan {}", f.vlan.unwrap_or(0))));
    }
    if !(f.score.is_finite() && (0.0..=MAX_SCORE).contains(&f.score)) {
        return Err((Rule::Score, format!("score {}", f.score)));
    }
    Ok(())
}

/// Check every flow of a batch against the rules, at the core's time `now_ns`.
pub fn validate(flows: &[FlowRec], now_ns: u64) -> Result<(), Invalid> {
    for (index, f) in flows.iter().enumerate() {
        check(f, now_ns).map_err(|(rule, detail)| Invalid { index, rule, detail })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000_000_000;

    fn good() -> FlowRec {
        FlowRec {
            ip_version: 4,
            proto: 6,
            first_ns: NOW - 5_000,
            last_ns: NOW - 1_000,
            fwd_packets: 3,
            fwd_bytes: 180,
            rev_packets: 2,
            rev_bytes: 120,
            tcp_flags: 0x12,
            end_reason: 2,
            score: 0.5,
            ..Default::default()
        }
    }

    #[test]
    fn every_rule_refuses_a_hand_built_flow() {
        assert_eq!(validate(&[good(), good()], NOW), Ok(()));
        type Spoil = fn(&mut FlowRec);
        let cases: [(Rule, Spoil); 13] = [
            (Rule::IpVersion, |f| f.ip_version = 5),
            (Rule::TimeOrder, |f| f.last_ns = f.first_ns - 1),
            (Rule::TimeFuture, |f| f.last_ns = NOW + MAX_FUTURE_NS + 1),
            (Rule::TimeFuture, |f| f.last_ns = 1 << 63),
            (Rule::NoPackets, |f| (f.fwd_packets, f.rev_packets, f.fwd_bytes, f.rev_bytes) = (0, 0, 0, 0)),
            (Rule::BytesPerPacket, |f| f.fwd_bytes = 59),
            (Rule::BytesPerPacket, |f| (f.rev_packets, f.rev_bytes) = (0, 40)),
            (Rule::EndReason, |f| f.end_reason = 255),
            (Rule::TcpFlags, |f| f.proto = 17),
            (Rule::Vlan, |f| f.vlan = Some(4096)),
            (Rule::Score, |f| f.score = f32::INFINITY),
            (Rule::Score, |f| f.score = f32::NAN),
            (Rule::Score, |f| f.score = -0.1),
        ];
        for (rule, spoil) in cases {
            let mut bad = good();
            spoil(&mut bad);
            let e = validate(&[good(), good(), bad], NOW).unwrap_err();
            assert_eq!((e.index, e.rule), (2, rule), "{e}");
            assert!(e.to_string().contains(rule.name()), "{e}");
        }
    }

    #[test]
    fn edges_that_are_valid() {
        let mut f = good();
        f.last_ns = f.first_ns; // one packet: first = last
        f.fwd_bytes = 60; // exactly 20 per packet
        f.rev_packets = 0;
        f.rev_bytes = 0;
        f.score = MAX_SCORE;
        f.vlan = Some(4095);
        f.end_reason = MAX_END_REASON;
        assert_eq!(validate(&[f], NOW), Ok(()));
        // A continuation record may carry only the responder's packets.
        let mut g = good();
        (g.fwd_packets, g.fwd_bytes) = (0, 0);
        assert_eq!(validate(&[g], NOW), Ok(()));
    }
}
