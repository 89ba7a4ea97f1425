//! Community ID flow hashing, version 1
//! (<https://github.com/corelight/community-id-spec>).
//!
//! The ID is `"1:"` followed by the base64 of the SHA-1 of
//! `seed (u16 BE) · src addr · dst addr · proto (u8) · 0 (u8) · src port (u16 BE) · dst port (u16 BE)`,
//! with the endpoints put in order first (lower address, then lower port,
//! goes first). Ports are hashed only for TCP, UDP, SCTP, ICMP and ICMPv6.
//! For ICMP/ICMPv6 the "ports" are the message type and code: a type that has
//! a counterpart (echo ↔ echo reply, …) uses the counterpart *type* as the
//! destination port so that both directions get one ID; any other type is
//! "one-way": its code is the destination port and the tuple is never swapped.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::util::{reasons, BoundedStr};

/// A Community ID string: `"1:"` + 28 base64 characters.
pub type CommunityIdStr = BoundedStr<30>;

/// IANA protocol numbers that the spec treats specially.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

reasons! {
    /// Why no Community ID could be computed.
    pub enum CommunityIdError {
        /// The addresses are not both 4 bytes (IPv4) or both 16 bytes (IPv6).
        BadAddressLength => "bad_address_length",
    }
}

/// One flow's key, in the direction the first packet was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTuple<'a> {
    /// IP protocol number.
    pub proto: u8,
    /// Source address: 4 bytes (IPv4) or 16 bytes (IPv6).
    pub src: &'a [u8],
    /// Destination address, same length as `src`.
    pub dst: &'a [u8],
    /// Source port; for ICMP/ICMPv6 the message type. Ignored for other protocols.
    pub src_port: u16,
    /// Destination port; for ICMP/ICMPv6 the message code. Ignored for other protocols.
    pub dst_port: u16,
}

/// The ICMP type that answers `t`, if `t` is part of a request/reply pair.
fn icmp_counterpart(t: u8, v6: bool) -> Option<u8> {
    let pairs: &[(u8, u8)] = if v6 {
        &[(128, 129), (130, 131), (133, 134), (135, 136), (139, 140), (144, 145)]
    } else {
        &[(8, 0), (13, 14), (15, 16), (10, 9), (17, 18)]
    };
    pairs.iter().find_map(|&(a, b)| {
        if a == t {
            Some(b)
        } else if b == t {
            Some(a)
        } else {
            None
        }
    })
}

/// Computes the v1 Community ID of `t` with `seed` (the spec's default is 0).
pub fn community_id(seed: u16, t: &FlowTuple<'_>) -> Result<CommunityIdStr, CommunityIdError> {
    match (t.src.len(), t.dst.len()) {
        (4, 4) | (16, 16) => {}
        _ => return Err(CommunityIdError::BadAddressLength),
    }
    let is_icmp = t.proto == proto::ICMP || t.proto == proto::ICMPV6;
    let has_ports = matches!(t.proto, proto::TCP | proto::UDP | proto::SCTP) || is_icmp;
    let (mut sport, mut dport, mut one_way) = (t.src_port, t.dst_port, false);
    if is_icmp {
        let ty = (t.src_port & 0xff) as u8;
        let code = t.dst_port;
        match icmp_counterpart(ty, t.proto == proto::ICMPV6) {
            Some(other) => dport = u16::from(other),
            None => {
                dport = code;
                one_way = true;
            }
        }
        sport = u16::from(ty);
    }
    let ordered = one_way || (t.src, sport) <= (t.dst, dport);
    let (a, b, pa, pb) = if ordered { (t.src, t.dst, sport, dport) } else { (t.dst, t.src, dport, sport) };
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(a);
    h.update(b);
    h.update([t.proto, 0]);
    if has_ports {
        h.update(pa.to_be_bytes());
        h.update(pb.to_be_bytes());
    }
    let digest = h.finalize();
    let mut b64 = [0u8; 28];
    let n = STANDARD.encode_slice(digest, &mut b64).unwrap_or(0);
    let mut out = CommunityIdStr::new();
    // 2 + 28 bytes always fit in 30.
    let _ = out.push_str("1:");
    let _ = out.push_bytes(b64.get(..n).unwrap_or(&[]));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(proto: u8, src: &str, dst: &str, sp: u16, dp: u16) -> String {
        let a: std::net::IpAddr = src.parse().unwrap();
        let b: std::net::IpAddr = dst.parse().unwrap();
        let bytes = |x: std::net::IpAddr| match x {
            std::net::IpAddr::V4(v) => v.octets().to_vec(),
            std::net::IpAddr::V6(v) => v.octets().to_vec(),
        };
        let (a, b) = (bytes(a), bytes(b));
        let t = FlowTuple { proto, src: &a, dst: &b, src_port: sp, dst_port: dp };
        community_id(0, &t).unwrap().as_str().to_owned()
    }

    /// Expected values produced with tshark 4.0.17 on captures in
    /// `sensor/tests/pcaps/`: `tshark -r FILE --enable-protocol communityid
    /// -T fields -e ip.src -e ipv6.src ... -e communityid -E occurrence=f`.
    #[test]
    fn matches_tshark() {
        let cases: &[(u8, &str, &str, u16, u16, &str, &str)] = &[
            (6, "10.0.2.15", "192.150.187.43", 55085, 80, "1:3U/oYcKaKLRQg0M75HufOXcPfLY=", "zeek__http__bro.org"),
            (1, "172.16.133.2", "172.217.11.78", 8, 0, "1:gp8b/PCBmrLjQ2f9cKsFjc1+900=", "zeek__icmp__5-pings"),
            (132, "192.168.170.8", "192.168.170.56", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "zeek__communityid__sctp"),
            (
                58,
                "2001:db8:0:1:c000:54ff:fef5:0",
                "ff02::1",
                136,
                0,
                "1:4WeDWVSZbUBqvAwUpRaNHzPlLjY=",
                "icmp6-nd-options",
            ),
            (58, "fe80::c000:54ff:fef5:0", "ff02::1", 134, 0, "1:A9i86ErAFJvgCeuMr1TCGkxnazI=", "icmp6-nd-options"),
            (
                58,
                "fe80::20c:29ff:fe0e:4c67",
                "ff02::1:ff10:782e",
                131,
                0,
                "1:IaBHXJj3D/RsjbnMBlvPwlgvv5g=",
                "icmp6-nd-options",
            ),
            (
                6,
                "2001:470:1f11:81f:c999:d94:aa7c:2e3e",
                "2001:470:4867:99::21",
                49185,
                21,
                "1:2nWXgxcx9GW54wPXtQmjQEThuB0=",
                "zeek__ftp__ipv6",
            ),
            (
                6,
                "2001:470:4867:99::21",
                "2001:470:1f11:81f:c999:d94:aa7c:2e3e",
                55785,
                49189,
                "1:NOk7cBiX/1QyqYYgMAHYz93RqO8=",
                "zeek__ftp__ipv6",
            ),
            (
                17,
                "164.1.123.163",
                "164.1.123.61",
                123,
                137,
                "1:XH/ssrzfRt0Ut3Ex/05P6H6/KOI=",
                "zeek__ipv4__fragmented-1",
            ),
        ];
        for &(p, s, d, sp, dp, want, file) in cases {
            assert_eq!(id(p, s, d, sp, dp), want, "{file}");
        }
        // Both directions of a port-based flow share one ID.
        assert_eq!(id(6, "192.150.187.43", "10.0.2.15", 80, 55085), "1:3U/oYcKaKLRQg0M75HufOXcPfLY=");
        // An echo reply maps back to the echo request's ID.
        assert_eq!(id(1, "172.217.11.78", "172.16.133.2", 0, 0), "1:gp8b/PCBmrLjQ2f9cKsFjc1+900=");
    }

    #[test]
    fn bad_lengths() {
        let r = community_id(0, &FlowTuple { proto: 6, src: &[1, 2, 3, 4], dst: &[0; 16], src_port: 1, dst_port: 2 });
        assert_eq!(r, Err(CommunityIdError::BadAddressLength));
    }
}
