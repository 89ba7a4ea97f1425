//! IPFIX export (docs/ipfix.md): the encoding byte by byte, then whole
//! replays of corpus captures checked against real collectors and decoders:
//! nfdump's nfcapd (UDP), pmacct's nfacctd (UDP), tshark's cflow dissector
//! (UDP, and TCP on a tcpdump capture of the stream: neither nfcapd 1.7 nor
//! nfacctd 1.7 accepts IPFIX over TCP), and a decoder written here that
//! checks every field, sequence number and message size.
mod common;
use common::*;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wirefold_inspect::community_id::{community_id, FlowTuple};
use wirefold_sensor::ipfix::*;

const CAPS: &[&str] = &[
    "zeek__http__bro.org.pcap",
    "zeek__dns-edns-ecs.pcap",
    "zeek__ftp__ipv6.pcap",
    "zeek__ssh__sshguess.pcap",
    "zeek__http-vlan-0.pcap",
    "tcpdump__802.1ad_QinQ.pcap",
    "zeek__icmp__5-pings.pcap",
    "ja4__ipv6.pcap",
    "zeek__dns__mdns.pcap",
];

fn caps() -> Vec<String> {
    CAPS.iter().map(|c| pcap(c).to_str().unwrap().to_string()).collect()
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn embed_args() -> Vec<&'static str> {
    if ort_lib().is_some() {
        vec![]
    } else {
        vec!["--no-embed"]
    }
}

// ---------------------------------------------------------------- encoding

fn hand_flow() -> IpfixFlow {
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&[192, 0, 2, 1]);
    dst[..4].copy_from_slice(&[198, 51, 100, 7]);
    let cid = community_id(0, &FlowTuple { proto: 6, src: &src[..4], dst: &dst[..4], src_port: 40000, dst_port: 443 })
        .unwrap();
    let mut embedding = [0i8; 32];
    for (i, e) in embedding.iter_mut().enumerate() {
        *e = i as i8 - 16;
    }
    IpfixFlow {
        v6: false,
        src,
        dst,
        src_port: 40000,
        dst_port: 443,
        proto: 6,
        vlan: 100,
        inner_vlan: 200,
        start_ms: 1_700_000_000_123,
        end_ms: 1_700_000_005_456,
        fwd_packets: 10,
        fwd_bytes: 1500,
        rev_packets: 8,
        rev_bytes: 9000,
        fwd_flags: 0x1b,
        rev_flags: 0x12,
        end_reason: 3,
        icmp_type_code: 0,
        embedding,
        score: 0.25,
        community_id: cid,
        app: "tls",
        server_name: bounded("www.example.com"),
        ja4: bounded("t13d1516h2_8daaf6152771_e5627efa2ab1"),
        dns_qname: bounded(""),
    }
}

fn bounded<const N: usize>(s: &str) -> wirefold_inspect::util::BoundedStr<N> {
    let mut b = wirefold_inspect::util::BoundedStr::new();
    b.push_str(s).unwrap();
    b
}

#[test]
fn template_set_bytes() {
    let enc = Encoder { pen: 32473, embedding: true };
    let t = enc.template_set();
    assert_eq!(u16::from_be_bytes([t[0], t[1]]), 2, "template set id");
    assert_eq!(u16::from_be_bytes([t[2], t[3]]) as usize, t.len(), "set length");
    // First template: id 258, 24 fields.
    assert_eq!(&t[4..8], &[0x01, 0x02, 0, 24]);
    // sourceIPv4Address/4, destinationIPv4Address/4, ports, protocol.
    assert_eq!(&t[8..28], &[0, 8, 0, 4, 0, 12, 0, 4, 0, 7, 0, 2, 0, 11, 0, 2, 0, 4, 0, 1]);
    // vlanId 58/2, dot1qCustomerVlanId 245/2, flowStart/EndMilliseconds 152,153/8.
    assert_eq!(&t[28..44], &[0, 58, 0, 2, 0, 245, 0, 2, 0, 152, 0, 8, 0, 153, 0, 8]);
    // packetDeltaCount 2/8, octetDeltaCount 1/8, then the reverse ones: enterprise bit, PEN 29305.
    assert_eq!(&t[44..52], &[0, 2, 0, 8, 0, 1, 0, 8]);
    assert_eq!(&t[52..64], &[0x80, 2, 0, 8, 0, 0, 0x72, 0x79, 0x80, 1, 0, 8]);
    assert_eq!(&t[64..68], &29305u32.to_be_bytes());
    // tcpControlBits 6/2 forward and reverse, flowEndReason 136/1, icmpTypeCodeIPv4 32/2.
    assert_eq!(&t[68..86], &[0, 6, 0, 2, 0x80, 6, 0, 2, 0, 0, 0x72, 0x79, 0, 136, 0, 1, 0, 32]);
    assert_eq!(&t[86..88], &[0, 2]);
    // wirefoldEmbedding 1/32, wirefoldScore 2/4, wirefoldCommunityId 3/variable, PEN 32473.
    assert_eq!(&t[88..96], &[0x80, 1, 0, 32, 0, 0, 0x7e, 0xd9]);
    assert_eq!(&t[96..104], &[0x80, 2, 0, 4, 0, 0, 0x7e, 0xd9]);
    assert_eq!(&t[104..112], &[0x80, 3, 0xff, 0xff, 0, 0, 0x7e, 0xd9]);
    // applicationName 96/variable, then wirefoldServerName 4, wirefoldJa4 5, wirefoldDnsQueryName 6 (variable, PEN).
    assert_eq!(&t[112..116], &[0, 96, 0xff, 0xff]);
    assert_eq!(&t[116..124], &[0x80, 4, 0xff, 0xff, 0, 0, 0x7e, 0xd9]);
    assert_eq!(&t[124..132], &[0x80, 5, 0xff, 0xff, 0, 0, 0x7e, 0xd9]);
    assert_eq!(&t[132..140], &[0x80, 6, 0xff, 0xff, 0, 0, 0x7e, 0xd9]);
    // Second template: id 259, IPv6 addresses, icmpTypeCodeIPv6.
    assert_eq!(&t[140..152], &[0x01, 0x03, 0, 24, 0, 27, 0, 16, 0, 28, 0, 16]);
    assert_eq!(t.len(), 140 + 136);
    // Without the model: no embedding or score.
    let t = Encoder { pen: 32473, embedding: false }.template_set();
    assert_eq!(&t[4..8], &[0x01, 0x02, 0, 22]);
    assert_eq!(t.len(), 4 + 2 * (4 + 22 * 4 + 7 * 4));
    // The message wrapper.
    let m = Encoder { pen: 32473, embedding: false }.template_message(7);
    assert_eq!(&m[..4], &[0, 10, (m.len() >> 8) as u8, m.len() as u8]);
    assert_eq!(&m[12..16], &[0, 0, 0, 7]);
}

#[test]
fn data_record_bytes() {
    let f = hand_flow();
    let enc = Encoder { pen: 32473, embedding: true };
    let mut r = Vec::new();
    assert_eq!(enc.record(&f, &mut r), TEMPLATE_V4);
    assert_eq!(&r[0..4], &[192, 0, 2, 1]);
    assert_eq!(&r[4..8], &[198, 51, 100, 7]);
    assert_eq!(&r[8..10], &40000u16.to_be_bytes());
    assert_eq!(&r[10..12], &443u16.to_be_bytes());
    assert_eq!(r[12], 6);
    assert_eq!(&r[13..17], &[0, 100, 0, 200]);
    assert_eq!(&r[17..25], &1_700_000_000_123u64.to_be_bytes());
    assert_eq!(&r[25..33], &1_700_000_005_456u64.to_be_bytes());
    assert_eq!(&r[33..41], &10u64.to_be_bytes());
    assert_eq!(&r[41..49], &1500u64.to_be_bytes());
    assert_eq!(&r[49..57], &8u64.to_be_bytes());
    assert_eq!(&r[57..65], &9000u64.to_be_bytes());
    assert_eq!(&r[65..69], &[0, 0x1b, 0, 0x12]);
    assert_eq!(r[69], 3);
    assert_eq!(&r[70..72], &[0, 0]);
    assert_eq!(r[72], (-16i8) as u8);
    assert_eq!(r[103], 15);
    assert_eq!(&r[104..108], &0.25f32.to_be_bytes());
    assert_eq!(r[108], 30, "community id: 1-byte length");
    assert_eq!(&r[109..139], f.community_id.as_bytes());
    assert!(f.community_id.as_str().starts_with("1:"));
    assert_eq!(&r[139..143], b"\x03tls");
    assert_eq!(r[143], 15);
    assert_eq!(&r[144..159], b"www.example.com");
    assert_eq!(r[159], 36);
    assert_eq!(&r[160..196], f.ja4.as_bytes());
    assert_eq!(&r[196..], &[0], "an absent DNS name is a zero-length value");
    // The record is exactly what the template says.
    let fixed: usize = enc.fields(false).iter().filter(|x| x.len != VARIABLE).map(|x| x.len as usize).sum();
    let var = 1 + 30 + 1 + 3 + 1 + 15 + 1 + 36 + 1;
    assert_eq!(r.len(), fixed + var);
    // IPv6: 16-byte addresses, template 259.
    let mut g = f;
    g.v6 = true;
    g.src = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
    let mut r6 = Vec::new();
    assert_eq!(enc.record(&g, &mut r6), TEMPLATE_V6);
    assert_eq!(r6.len(), r.len() + 24);
    assert_eq!(&r6[..16], &g.src);
    let fixed6: usize = enc.fields(true).iter().filter(|x| x.len != VARIABLE).map(|x| x.len as usize).sum();
    assert_eq!(r6.len(), fixed6 + var);
}

#[test]
fn variable_length_encoding() {
    for n in [0usize, 1, 30, 254] {
        let mut o = Vec::new();
        put_varlen(&mut o, &vec![b'x'; n]);
        assert_eq!(o.len(), 1 + n);
        assert_eq!(o[0] as usize, n);
    }
    for n in [255usize, 256, 300, 65535] {
        let mut o = Vec::new();
        put_varlen(&mut o, &vec![b'y'; n]);
        assert_eq!(o.len(), 3 + n);
        assert_eq!(o[0], 255);
        assert_eq!(u16::from_be_bytes([o[1], o[2]]) as usize, n);
    }
    let mut o = Vec::new();
    put_varlen(&mut o, &vec![b'z'; 70_000]);
    assert_eq!(&o[..3], &[255, 0xff, 0xff]);
    assert_eq!(o.len(), 3 + 65535);
}

#[test]
fn messages_never_exceed_the_limit_and_carry_every_record() {
    let enc = Encoder { pen: 32473, embedding: true };
    for max in [256usize, 576 - 28, 1400 - 28, 9000] {
        let mut p = Packer::new(max, 1);
        let mut msgs = Vec::new();
        let mut pushed = 0u32;
        for i in 0..1000u32 {
            let mut f = hand_flow();
            f.v6 = i % 3 == 0 || i % 7 == 0;
            f.fwd_packets = u64::from(i);
            let mut r = Vec::new();
            let tid = enc.record(&f, &mut r);
            msgs.extend(p.push(tid, &r));
            pushed += 1;
        }
        msgs.extend(p.finish());
        assert!(p.finish().is_none());
        let mut seen = 0u32;
        let mut next = 0u64;
        for m in &msgs {
            assert!(m.bytes.len() <= max, "{} > {max}", m.bytes.len());
            assert_eq!(u16::from_be_bytes([m.bytes[2], m.bytes[3]]) as usize, m.bytes.len());
            let d = decode_message(&m.bytes, &mut templates_of(&enc));
            assert_eq!(d.records.len() as u32, m.records);
            for r in &d.records {
                assert_eq!(r.u(2, 0), next, "records in order");
                next += 1;
            }
            seen += m.records;
        }
        assert_eq!(seen, pushed);
        if max >= 1372 {
            // Several records per message.
            assert!(msgs.len() < 1000 / 5, "{} messages", msgs.len());
        }
    }
}

#[test]
fn stamp_sets_export_time_and_sequence() {
    let mut m = Encoder { pen: 1, embedding: false }.template_message(9);
    stamp(&mut m, 0x0102_0304, 77);
    assert_eq!(&m[4..8], &[1, 2, 3, 4]);
    assert_eq!(&m[8..12], &77u32.to_be_bytes());
    assert_eq!(&m[12..16], &9u32.to_be_bytes());
}

#[test]
fn collector_urls() {
    let u: CollectorUrl = "udp://127.0.0.1:4739".parse().unwrap();
    assert!(!u.tcp);
    assert_eq!(u.to_string(), "udp://127.0.0.1:4739");
    assert!("tcp://[::1]:4739".parse::<CollectorUrl>().unwrap().tcp);
    for bad in
        ["127.0.0.1:4739", "udp://host", "sctp://h:1", "udp://:5", "tcp://h:99999", "udp://a:1,tcp://b:2", "udp://h:0"]
    {
        assert!(bad.parse::<CollectorUrl>().is_err(), "{bad}");
    }
    let out = wirefold(&["replay", "--no-embed", "--ipfix", "http://x:1", &caps()[0]]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("udp://HOST:PORT"));
    // Several collectors from a configuration file: a TOML array.
    let dir = scratch("ipfix-config");
    let conf = dir.join("sensor.toml");
    std::fs::write(&conf, "[export]\nipfix = [\"udp://127.0.0.1:4739\", \"tcp://127.0.0.1:4740\"]\nipfix_mtu = 1200\n")
        .unwrap();
    let out = wirefold(&["check-config", conf.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ipfix = \"udp://127.0.0.1:4739,tcp://127.0.0.1:4740\"  # from the file"), "{text}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[export]\nipfix = [\"udp://127.0.0.1:4739\", \"nope\"]\n").unwrap();
    assert_eq!(wirefold(&["check-config", bad.to_str().unwrap()]).status.code(), Some(2));
}

// ---------------------------------------------------------- a decoder here

type Templates = HashMap<u16, Vec<Field>>;

fn templates_of(enc: &Encoder) -> Templates {
    [(TEMPLATE_V4, enc.fields(false)), (TEMPLATE_V6, enc.fields(true))].into_iter().collect()
}

#[derive(Debug, Default)]
struct Rec {
    tid: u16,
    f: BTreeMap<(u32, u16), Vec<u8>>,
}

impl Rec {
    fn u(&self, id: u16, pen: u32) -> u64 {
        self.f[&(pen, id)].iter().fold(0, |a, &b| a << 8 | u64::from(b))
    }
    fn ip(&self, id4: u16, id6: u16) -> IpAddr {
        match self.f.get(&(0, id4)) {
            Some(b) => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
            None => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&self.f[&(0, id6)][..]).unwrap())),
        }
    }
}

#[derive(Debug, Default)]
struct Decoded {
    export_time: u32,
    seq: u32,
    domain: u32,
    template_sets: usize,
    records: Vec<Rec>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decode one message strictly: every length must add up.
fn decode_message(m: &[u8], t: &mut Templates) -> Decoded {
    assert!(m.len() >= 16);
    assert_eq!(be16(m, 0), 10, "version");
    assert_eq!(be16(m, 2) as usize, m.len(), "message length");
    let mut d = Decoded { export_time: be32(m, 4), seq: be32(m, 8), domain: be32(m, 12), ..Default::default() };
    let mut at = 16;
    while at < m.len() {
        let (sid, slen) = (be16(m, at), be16(m, at + 2) as usize);
        assert!(slen >= 4 && at + slen <= m.len(), "set length");
        let body = &m[at + 4..at + slen];
        if sid == 2 {
            d.template_sets += 1;
            let mut p = 0;
            while p + 4 <= body.len() {
                let (tid, n) = (be16(body, p), be16(body, p + 2));
                p += 4;
                let mut fields = Vec::new();
                for _ in 0..n {
                    let (id, len) = (be16(body, p), be16(body, p + 2));
                    p += 4;
                    let pen = if id & 0x8000 != 0 {
                        p += 4;
                        be32(body, p - 4)
                    } else {
                        0
                    };
                    fields.push(Field { id: id & 0x7fff, len, pen });
                }
                t.insert(tid, fields);
            }
            assert_eq!(p, body.len(), "template set fully used");
        } else {
            assert!(sid >= 256, "data set id {sid}");
            let fields = t.get(&sid).expect("data before its template").clone();
            let mut p = 0;
            while p < body.len() {
                let mut r = Rec { tid: sid, ..Default::default() };
                for f in &fields {
                    let len = if f.len == VARIABLE {
                        let l = body[p] as usize;
                        p += 1;
                        if l == 255 {
                            p += 2;
                            be16(body, p - 2) as usize
                        } else {
                            l
                        }
                    } else {
                        f.len as usize
                    };
                    r.f.insert((f.pen, f.id), body[p..p + len].to_vec());
                    p += len;
                }
                d.records.push(r);
            }
            assert_eq!(p, body.len(), "no padding, records fill the set");
        }
        at += slen;
    }
    d
}

// ------------------------------------------------------- whole-run helpers

/// JSON flow records of a plain replay.
fn json_flows(extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["replay"];
    args.extend_from_slice(extra);
    let c = caps();
    args.extend(c.iter().map(|s| s.as_str()));
    let out = wirefold(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    json_lines(&out.stdout)
}

/// (proto, src, sport, dst, dport, fwd pkts, rev pkts, fwd bytes, rev bytes).
type Row = (u64, IpAddr, u64, IpAddr, u64, u64, u64, u64, u64);

fn json_rows(flows: &[serde_json::Value]) -> Vec<Row> {
    let mut v: Vec<Row> = flows
        .iter()
        .map(|f| {
            (
                f["proto"].as_u64().unwrap(),
                f["src_ip"].as_str().unwrap().parse().unwrap(),
                f["src_port"].as_u64().unwrap(),
                f["dst_ip"].as_str().unwrap().parse().unwrap(),
                f["dst_port"].as_u64().unwrap(),
                f["fwd_packets"].as_u64().unwrap(),
                f["rev_packets"].as_u64().unwrap(),
                f["fwd_bytes"].as_u64().unwrap(),
                f["rev_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Replay CAPS with `--ipfix` and extra arguments; returns the JSON records.
fn replay_to(urls: &[String], extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args: Vec<String> = vec!["replay".into()];
    for u in urls {
        args.push("--ipfix".into());
        args.push(u.clone());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(caps());
    let out = wirefold_cmd().args(&args).output().expect("run wirefold");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for u in urls {
        assert!(err.contains(&format!("ipfix {u}: ")), "summary line for {u} in {err}");
    }
    json_lines(&out.stdout)
}

/// Receive every datagram on `sock` while `run` runs, until it is quiet after.
fn receive_all(
    sock: &UdpSocket,
    run: impl FnOnce() -> Vec<serde_json::Value> + Send,
) -> (Vec<Vec<u8>>, Vec<serde_json::Value>) {
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(run);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => got.push(buf[..n].to_vec()),
                Err(_) if h.is_finished() => break,
                Err(_) => {}
            }
        }
        (got, h.join().unwrap())
    })
}

fn check_against_json(msgs: &[Vec<u8>], json: &[serde_json::Value], mtu_payload: usize, embedded: bool) {
    let mut t = Templates::new();
    let mut seq = 0u32;
    let mut rows = Vec::new();
    let mut templates = 0;
    let mut cids = Vec::new();
    let mut metas = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        assert!(m.len() <= mtu_payload, "message {i}: {} > {mtu_payload}", m.len());
        let d = decode_message(m, &mut t);
        assert_eq!(d.domain, 42);
        assert_eq!(d.seq, seq, "message {i}: sequence = data records before it");
        assert!(d.export_time > 1_600_000_000);
        if i == 0 {
            assert_eq!(d.template_sets, 1, "templates first");
        }
        templates += d.template_sets;
        seq += d.records.len() as u32;
        for r in &d.records {
            if embedded {
                assert_eq!(r.f[&(32473, 1)].len(), 32);
                assert_eq!(r.f[&(32473, 2)].len(), 4);
            } else {
                assert!(!r.f.contains_key(&(32473, 1)));
            }
            assert!(r.tid == TEMPLATE_V4 || r.tid == TEMPLATE_V6);
            let cid = String::from_utf8(r.f[&(32473, 3)].clone()).unwrap();
            assert!(cid.starts_with("1:") && cid.len() == 30, "{cid}");
            let text = |k: (u32, u16)| String::from_utf8(r.f[&k].clone()).unwrap();
            metas.push((cid.clone(), text((0, 96)), text((32473, 4)), text((32473, 5)), text((32473, 6))));
            cids.push(cid);
            rows.push((
                r.u(4, 0),
                r.ip(8, 27),
                r.u(7, 0),
                r.ip(12, 28),
                r.u(11, 0),
                r.u(2, 0),
                r.u(2, 29305),
                r.u(1, 0),
                r.u(1, 29305),
            ));
        }
    }
    assert!(templates >= 1);
    rows.sort();
    assert_eq!(rows, json_rows(json));
    // The same Community IDs as the JSON records, once those carry them.
    if json.iter().all(|f| f["community_id"].is_string()) {
        let mut want: Vec<String> = json.iter().map(|f| f["community_id"].as_str().unwrap().to_string()).collect();
        want.sort();
        cids.sort();
        assert_eq!(cids, want);
        // And the same app, server name, JA4 and DNS name, flow by flow (keyed by Community ID and app).
        let s = |f: &serde_json::Value, k: &str| f[k].as_str().unwrap_or("").to_string();
        let mut want: Vec<_> = json
            .iter()
            .map(|f| (s(f, "community_id"), s(f, "app"), s(f, "tls_sni"), s(f, "tls_ja4"), s(f, "dns_qname")))
            .collect();
        want.sort();
        metas.sort();
        assert_eq!(metas, want);
    }
    // Start/end times and end reasons agree too (one flow checked fully).
    let f = &json[0];
    let mut t2 = Templates::new();
    let first = msgs.iter().flat_map(|m| decode_message(m, &mut t2).records).next().unwrap();
    assert_eq!(first.u(152, 0), (f["first_ts"].as_f64().unwrap() * 1000.0).floor() as u64);
    let reason = match f["end_reason"].as_str().unwrap() {
        "idle" => 1,
        "active" => 2,
        "fin" | "rst" => 3,
        "evicted" => 5,
        _ => 4,
    };
    assert_eq!(first.u(136, 0), reason);
}

#[test]
fn udp_export_decodes_to_the_json_flows_with_sequence_numbers_and_mtu() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("udp://{}", sock.local_addr().unwrap());
    let emb = embed_args();
    let (msgs, json) = receive_all(&sock, || {
        let mut extra = vec!["--ipfix-domain", "42", "--ipfix-mtu", "600"];
        extra.extend_from_slice(&emb);
        replay_to(std::slice::from_ref(&url), &extra)
    });
    assert!(json.len() > 50, "{} flows", json.len());
    assert!(json.iter().any(|f| f["ip_version"] == 6) && json.iter().any(|f| f["ip_version"] == 4));
    assert!(msgs.len() > 10, "{} messages", msgs.len());
    check_against_json(&msgs, &json, 600 - 28, emb.is_empty());
    // The captures hold DNS and TLS: names travel (and were compared flow by flow above).
    assert!(json.iter().any(|f| f["dns_qname"].is_string()), "a DNS name to export");
    // Same flows as a replay without IPFIX.
    assert_eq!(json_rows(&json), json_rows(&json_flows(&emb)));
}

#[test]
fn udp_mtu_auto_sizes_messages_to_the_path_mtu() {
    // Loopback's path MTU is 65,536; auto takes at most 9,000.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.connect("127.0.0.1:9").unwrap();
    assert_eq!(wirefold_sensor::ipfix::path_mtu(&probe, false), wirefold_sensor::ipfix::AUTO_MTU_MAX);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("udp://{}", sock.local_addr().unwrap());
    let (msgs, json) =
        receive_all(&sock, || replay_to(std::slice::from_ref(&url), &["--no-embed", "--ipfix-domain", "42"]));
    check_against_json(&msgs, &json, 9000 - 28, false);
    let largest = msgs.iter().map(|m| m.len()).max().unwrap();
    assert!(largest > 1400 && largest <= 9000 - 28, "largest message {largest} bytes");
}

#[test]
fn tcp_export_decodes_to_the_json_flows() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", l.local_addr().unwrap());
    let (stream, json) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let (mut c, _) = l.accept().unwrap();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut c, &mut v).unwrap();
            v
        });
        let json = replay_to(std::slice::from_ref(&url), &["--no-embed", "--ipfix-domain", "42"]);
        (h.join().unwrap(), json)
    });
    let mut msgs = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let n = be16(&stream, at + 2) as usize;
        msgs.push(stream[at..at + n].to_vec());
        at += n;
    }
    assert_eq!(at, stream.len(), "the stream is whole messages");
    check_against_json(&msgs, &json, TCP_MESSAGE_MAX, false);
}

#[test]
fn tcp_collector_away_never_stalls_the_export() {
    // Nobody listens: the replay still finishes promptly, records are counted as dropped.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = Instant::now();
    let out = wirefold(&["replay", "--no-embed", "--ipfix", &format!("tcp://127.0.0.1:{port}"), &caps()[0]]);
    assert!(out.status.success());
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.starts_with("ipfix tcp://")).expect("summary line");
    assert!(line.contains(" 0 records,") && !line.contains(" 0 dropped"), "{line}");
}

#[test]
fn tcp_collector_that_comes_late_gets_the_templates_then_the_queued_data() {
    // Paced replay (5000 flows over 10 s); the collector listens only from
    // 4 s on: the sender retries with backoff, sends the templates first on
    // the connection, then what was queued and what follows.
    let port = free_tcp_port();
    let dir = scratch("tcp-late");
    let cap = dir.join("spread.pcap");
    write_spread_pcap(&cap, 5000, 2);
    let run = wirefold_cmd()
        .args(["replay", "--no-embed", "--speed", "1", "--idle-timeout", "1s", "--ipfix-domain", "42"])
        .args(["--ipfix", &format!("tcp://127.0.0.1:{port}"), cap.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read its output meanwhile: 5000 JSON lines do not fit in a pipe.
    let (stream, out) = std::thread::scope(|sc| {
        let h = sc.spawn(|| run.wait_with_output().unwrap());
        std::thread::sleep(Duration::from_secs(4));
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut stream = Vec::new();
        std::io::Read::read_to_end(&mut c, &mut stream).unwrap();
        (stream, h.join().unwrap())
    });
    assert!(out.status.success());
    let json = json_lines(&out.stdout);
    let mut msgs = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let n = be16(&stream, at + 2) as usize;
        msgs.push(stream[at..at + n].to_vec());
        at += n;
    }
    // Nothing was dropped (the queue holds it all), so the stream is the whole run.
    check_against_json(&msgs, &json, TCP_MESSAGE_MAX, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(" 0 dropped,") && !err.contains(" 0 send errors"), "{err}");
}

// ------------------------------------------------------ the real collectors

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // Its own process group: nfacctd's plugins go too.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.wait();
    }
}

/// Start a daemon in its own process group.
fn daemon(cmd: &mut Command) -> Daemon {
    use std::os::unix::process::CommandExt;
    Daemon(cmd.stdout(Stdio::null()).stderr(Stdio::null()).process_group(0).spawn().expect("start daemon"))
}

impl Daemon {
    fn term(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if self.0.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not stop on SIGTERM");
    }
}

fn nfcapd(port: u16, dir: &Path) -> Daemon {
    let d =
        daemon(Command::new("nfcapd").args(["-b", "127.0.0.1", "-p", &port.to_string(), "-w", dir.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(700));
    d
}

/// nfdump's rows: biflow reverse counters are its "out" counters.
fn nfdump_rows(dir: &Path) -> Vec<Row> {
    let out = Command::new("nfdump")
        .args(["-R", dir.to_str().unwrap(), "-q", "-N", "-6", "-o", "fmt:%pr|%sa|%sp|%da|%dp|%ipkt|%opkt|%ibyt|%obyt"])
        .output()
        .expect("nfdump");
    assert!(out.status.success(), "nfdump: {}", String::from_utf8_lossy(&out.stderr));
    let proto = |s: &str| match s {
        "TCP" => 6,
        "UDP" => 17,
        "ICMP" => 1,
        "ICMP6" => 58,
        s => s.parse().unwrap_or_else(|_| panic!("protocol {s}")),
    };
    let mut v: Vec<Row> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let p: Vec<&str> = l.split('|').map(str::trim).collect();
            let n = |i: usize| p[i].parse::<u64>().unwrap_or_else(|_| panic!("{l}"));
            let pr = proto(p[0]);
            let icmp = pr == 1 || pr == 58;
            // nfdump shows ICMP type.code where ports are; the record's ports are 0.
            let (sp, dp) = if icmp { (0, 0) } else { (n(2), n(4)) };
            (pr, p[1].parse().unwrap(), sp, p[3].parse().unwrap(), dp, n(5), n(6), n(7), n(8))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn nfcapd_over_udp_sees_the_same_flows_packets_and_bytes() {
    if !have("nfcapd") {
        panic!("nfcapd missing: apt-get install nfdump (deploy/test.sh does)");
    }
    let dir = scratch("nfcapd");
    let port = free_udp_port();
    let d = nfcapd(port, &dir);
    let json = replay_to(&[format!("udp://127.0.0.1:{port}")], &["--no-embed"]);
    std::thread::sleep(Duration::from_millis(500));
    d.term();
    assert_eq!(nfdump_rows(&dir), json_rows(&json));
}

/// A capture of `n` one-packet UDP flows (Ethernet, IPv4), one every `gap_ms`.
fn write_spread_pcap(path: &Path, n: u32, gap_ms: u32) {
    let mut f = pcap_header(1);
    for i in 0..n {
        let mut p = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let ip = udp_ip(&[10, 1, (i >> 8) as u8, i as u8], &[10, 2, 0, 1], 1024 + (i % 60000) as u16, 53, &[0u8; 20]);
        p.extend_from_slice(&ip);
        let t = u64::from(i) * u64::from(gap_ms);
        pcap_packet(&mut f, 1_700_000_000 + (t / 1000) as u32, (t % 1000) as u32 * 1000, &p);
    }
    std::fs::write(path, f).unwrap();
}

#[test]
fn nfcapd_started_after_the_exporter_decodes_data_after_the_template_refresh() {
    // 5000 one-packet flows over 10 s of capture time, replayed at real
    // speed with a 1 s idle timeout: flows leave in batches of 512 from
    // about 3 s on. The collector starts 5 s in, after the first templates
    // and data went out, and must wait for the next template refresh.
    let dir = scratch("nfcapd-late");
    let cap = dir.join("spread.pcap");
    write_spread_pcap(&cap, 5000, 2);
    let port = free_udp_port();
    let url = format!("udp://127.0.0.1:{port}");
    // JSON to a file: a pipe nobody reads yet would hold the export thread.
    let json_path = dir.join("flows.json");
    let run = wirefold_cmd()
        .args(["replay", "--no-embed", "--speed", "1", "--idle-timeout", "1s", "--ipfix", &url])
        .args(["--out", json_path.to_str().unwrap()])
        .args(["--ipfix-template-refresh", "1s", cap.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let out_dir = dir.join("nfcapd");
    std::fs::create_dir_all(&out_dir).unwrap();
    let d = nfcapd(port, &out_dir);
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(500));
    d.term();
    let json = json_rows(&json_lines(&std::fs::read(&json_path).unwrap()));
    assert_eq!(json.len(), 5000);
    let got = nfdump_rows(&out_dir);
    assert!(!got.is_empty(), "the late collector decoded nothing");
    assert!(got.len() < json.len(), "it missed the early flows ({} of {})", got.len(), json.len());
    for r in &got {
        assert!(json.binary_search(r).is_ok(), "{r:?} not in the replay's flows");
    }
}

#[test]
fn nfacctd_totals_agree() {
    if !have("nfacctd") {
        panic!("nfacctd missing: apt-get install pmacct (deploy/test.sh does)");
    }
    let dir = scratch("nfacctd");
    let port = free_udp_port();
    let out_file = dir.join("flows.csv");
    let conf = dir.join("nfacctd.conf");
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\nnfacctd_ip: 127.0.0.1\nnfacctd_port: {port}\nplugins: print\nprint_output: csv\nprint_output_file: {}\nprint_refresh_time: 1\naggregate: src_host,dst_host,src_port,dst_port,proto\n",
            out_file.display()
        ),
    )
    .unwrap();
    // nfacctd does not exit on SIGTERM (its plugins linger): the print
    // plugin writes the file every second; read it, then kill the group.
    let d = daemon(Command::new("nfacctd").args(["-f", conf.to_str().unwrap()]));
    std::thread::sleep(Duration::from_millis(1500));
    let json = replay_to(&[format!("udp://127.0.0.1:{port}")], &["--no-embed"]);
    std::thread::sleep(Duration::from_millis(2500));
    let text = std::fs::read_to_string(&out_file).expect("nfacctd output");
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().expect("csv header").split(',').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap_or_else(|| panic!("{n} in {head:?}"));
    let (pk, by) = (col("PACKETS"), col("BYTES"));
    let (sa, da, sp, dp, pr) = (col("SRC_IP"), col("DST_IP"), col("SRC_PORT"), col("DST_PORT"), col("PROTOCOL"));
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut rows = Vec::new();
    for l in lines {
        let p: Vec<&str> = l.split(',').collect();
        let (n, b) = (p[pk].parse::<u64>().unwrap(), p[by].parse::<u64>().unwrap());
        packets += n;
        bytes += b;
        if p[pr] == "tcp" || p[pr] == "udp" {
            let ip = |s: &str| s.parse::<IpAddr>().unwrap();
            rows.push((ip(p[sa]), p[sp].parse::<u64>().unwrap(), ip(p[da]), p[dp].parse::<u64>().unwrap(), n, b));
        }
    }
    drop(d);
    rows.sort();
    let mut want: Vec<_> = json_rows(&json)
        .into_iter()
        .filter(|r| r.0 == 6 || r.0 == 17)
        .map(|r| (r.1, r.2, r.3, r.4, r.5, r.7))
        .collect();
    want.sort();
    // Aggregated on the 5-tuple: flows split in several records add up.
    let merge = |v: Vec<(IpAddr, u64, IpAddr, u64, u64, u64)>| {
        let mut m: BTreeMap<(IpAddr, u64, IpAddr, u64), (u64, u64)> = BTreeMap::new();
        for (a, b, c, d, n, y) in v {
            let e = m.entry((a, b, c, d)).or_default();
            e.0 += n;
            e.1 += y;
        }
        m
    };
    assert_eq!(merge(rows), merge(want), "nfacctd's TCP/UDP flows (forward direction)");
    let sum = |k: &str| json.iter().map(|f| f[k].as_u64().unwrap()).sum::<u64>();
    let (fp, rp, fb, rb) = (sum("fwd_packets"), sum("rev_packets"), sum("fwd_bytes"), sum("rev_bytes"));
    // nfacctd 1.7.7 counts the forward elements (packetDeltaCount,
    // octetDeltaCount) and ignores the RFC 5103 reverse ones.
    assert_eq!((packets, bytes), (fp, fb), "nfacctd totals; reverse would add {rp} packets {rb} bytes");
}

// ----------------------------------------------------------------- tshark

fn pcap_header(linktype: u32) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&linktype.to_le_bytes());
    f
}

fn pcap_packet(f: &mut Vec<u8>, secs: u32, usecs: u32, p: &[u8]) {
    f.extend_from_slice(&secs.to_le_bytes());
    f.extend_from_slice(&usecs.to_le_bytes());
    f.extend_from_slice(&(p.len() as u32).to_le_bytes());
    f.extend_from_slice(&(p.len() as u32).to_le_bytes());
    f.extend_from_slice(p);
}

/// An IPv4/UDP packet (header checksum set, UDP checksum 0).
fn udp_ip(src: &[u8; 4], dst: &[u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip.extend_from_slice(src);
    ip.extend_from_slice(dst);
    let sum = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum::<u32>();
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&sport.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    ip
}

/// Write datagrams as a pcap of IPv4/UDP packets (LINKTYPE_RAW) to `port`.
fn write_udp_pcap(path: &Path, msgs: &[Vec<u8>], port: u16) {
    let mut f = pcap_header(101);
    for (i, m) in msgs.iter().enumerate() {
        let ip = udp_ip(&[127, 0, 0, 1], &[127, 0, 0, 1], 40000, port, m);
        pcap_packet(&mut f, 1_700_000_000, i as u32, &ip);
    }
    std::fs::write(path, f).unwrap();
}

/// tshark's view: the number of decoded flow records, and the expert infos
/// (warnings and errors) it reports.
fn tshark_check(file: &Path, decode_as: &str, expect_records: usize) {
    let out = Command::new("tshark")
        .args([
            "-n",
            "-r",
            file.to_str().unwrap(),
            "-d",
            decode_as,
            "-Y",
            "cflow",
            "-T",
            "fields",
            "-e",
            "cflow.od_id",
            "-e",
            "cflow.srcport",
            "-e",
            "cflow.octets",
        ])
        .output()
        .expect("tshark");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "tshark decoded no cflow packet");
    assert!(
        lines.iter().all(|l| l.starts_with("42\t") || l.starts_with("42,")),
        "domain id: {:?}",
        &lines[..3.min(lines.len())]
    );
    let records: usize =
        lines.iter().map(|l| l.split('\t').nth(1).map_or(0, |p| p.split(',').filter(|x| !x.is_empty()).count())).sum();
    assert_eq!(records, expect_records, "flow records tshark decoded");
    let ex = Command::new("tshark")
        .args(["-n", "-q", "-r", file.to_str().unwrap(), "-d", decode_as, "-z", "expert"])
        .output()
        .expect("tshark -z expert");
    let ex = String::from_utf8_lossy(&ex.stdout);
    let bad = ex.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        (l.contains("malformed") || l.contains("template") || l.contains("cflow")) && !l.contains("notes")
    });
    assert!(!bad && !ex.contains("Errors (") && !ex.contains("Warnings ("), "tshark expert info:\n{ex}");
}

#[test]
fn tshark_decodes_every_udp_message_without_warnings() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("udp://{}", sock.local_addr().unwrap());
    let emb = embed_args();
    let (msgs, json) = receive_all(&sock, || {
        let mut extra = vec!["--ipfix-domain", "42"];
        extra.extend_from_slice(&emb);
        replay_to(std::slice::from_ref(&url), &extra)
    });
    let dir = scratch("tshark-udp");
    let f = dir.join("ipfix-udp.pcap");
    write_udp_pcap(&f, &msgs, 4739);
    tshark_check(&f, "udp.port==4739,cflow", json.len());
}

#[test]
fn tshark_decodes_the_tcp_stream_captured_by_tcpdump() {
    // tcpdump needs CAP_NET_RAW; CI runs as root.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = scratch("tshark-tcp");
    let cap = dir.join("ipfix-tcp.pcap");
    let td = Command::new("tcpdump")
        .args(["-i", "lo", "-U", "-s", "0", "-w", cap.to_str().unwrap(), &format!("tcp port {port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    let td = Daemon(td);
    std::thread::sleep(Duration::from_millis(1500));
    let json = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let (mut c, _) = l.accept().unwrap();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut c, &mut v).unwrap();
        });
        let json = replay_to(&[format!("tcp://127.0.0.1:{port}")], &["--no-embed", "--ipfix-domain", "42"]);
        h.join().unwrap();
        json
    });
    std::thread::sleep(Duration::from_millis(1000));
    td.term();
    tshark_check(&cap, &format!("tcp.port=={port},cflow"), json.len());
}

#[test]
fn metrics_count_ipfix() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("udp://{}", sock.local_addr().unwrap());
    let port = free_tcp_port();
    let metrics = format!("127.0.0.1:{port}");
    let f = caps();
    let mut child = wirefold_cmd()
        .args(["replay", "--no-embed", "--ipfix", &url, "--metrics", &metrics, "--linger", "never", &f[0], &f[2]])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let text = loop {
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(b) = http_get(&metrics) {
            let s = parse_metrics(&b);
            let one = |n: &str| s.iter().find(|((k, _), _)| k == n).map_or(0.0, |(_, v)| *v);
            let (r, f) = (one("wirefold_ipfix_records_total"), one("wirefold_export_flows_total"));
            if r > 0.0 && r == f {
                break b;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no ipfix metrics");
    };
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
    let s = parse_metrics(&text);
    let get = |n: &str, extra: &[(&str, &str)]| {
        let mut l: BTreeMap<String, String> = [("collector".to_string(), url.clone())].into_iter().collect();
        for (k, v) in extra {
            l.insert(k.to_string(), v.to_string());
        }
        *s.get(&(n.to_string(), l)).unwrap_or_else(|| panic!("{n}{extra:?}"))
    };
    assert!(get("wirefold_ipfix_messages_total", &[]) >= 2.0);
    assert!(get("wirefold_ipfix_templates_total", &[]) >= 1.0);
    assert_eq!(get("wirefold_ipfix_send_errors_total", &[]), 0.0);
    for r in ["queue_full", "send_error", "shutdown"] {
        assert_eq!(get("wirefold_ipfix_dropped_total", &[("reason", r)]), 0.0);
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut v = String::new();
    s.read_to_string(&mut v)?;
    Ok(v.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}
