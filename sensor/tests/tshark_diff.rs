//! Differential test against an independent oracle: tshark's conversation
//! tables. For every capture where they are comparable, the set of TCP and UDP
//! conversations (protocol + unordered endpoint pair, VLAN ignored) and each
//! one's packet total must equal wirefold's flows grouped the same way.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

type Conv = BTreeMap<(u8, (String, u16), (String, u16)), u64>;

/// Captures left out beyond the automatic rule (no tunnels, no IP
/// fragments), each with its reason.
const EXCLUDED: &[(&str, &str)] = &[
    (
        "tcpdump__bigtcp-ipv4-vxlan-ipv4.pcap",
        "a BIG TCP super-packet (IPv4 total length 0) inside VXLAN: tshark does not decode the VXLAN, wirefold does (it takes the length from the wire)",
    ),
    (
        "tcpdump__pim-packet-assortment.pcap",
        "PIM Register messages tunnel multicast UDP; tshark decodes the inner UDP, wirefold keeps PIM as the flow",
    ),
    ("zeek__radiotap.pcap", "802.11 radiotap link type: wirefold is a wired sensor and counts it as unsupported_link_type"),
    ("zeek__wlanmon.pcap", "802.11 link type: wirefold is a wired sensor and counts it as unsupported_link_type"),
    (
        "zeek__tcp__reassembly.pcap",
        "5 frames whose IPv4 total length exceeds the frame: tshark counts them, wirefold counts them as malformed (bad_ipv4_total_len)",
    ),
];

/// tshark display filter for packets that make a capture incomparable.
const TUNNEL_OR_FRAGMENT: &str = "gre or vxlan or geneve or teredo or gtp or ayiya or erspan or mpls or ip.proto==4 or ip.proto==41 or ipv6.nxt==4 or ipv6.nxt==41 or ipv6.fragment or ip.flags.mf==1 or ip.frag_offset>0";

fn tshark(args: &[&str]) -> String {
    let out =
        Command::new("tshark").args(args).output().expect("tshark must be installed (./deploy/test.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn key(proto: u8, a: (String, u16), b: (String, u16)) -> (u8, (String, u16), (String, u16)) {
    if a <= b {
        (proto, a, b)
    } else {
        (proto, b, a)
    }
}

fn endpoint(s: &str) -> (String, u16) {
    let (h, p) = s.rsplit_once(':').expect("host:port");
    (h.to_string(), p.parse().expect("port"))
}

fn tshark_conversations(f: &Path) -> Conv {
    let out = tshark(&["-r", f.to_str().unwrap(), "-q", "-z", "conv,tcp", "-z", "conv,udp"]);
    let mut m = Conv::new();
    let mut proto = 0;
    for line in out.lines() {
        if line.starts_with("TCP Conversations") {
            proto = 6;
        } else if line.starts_with("UDP Conversations") {
            proto = 17;
        } else if line.contains("<->") {
            // A:p <-> B:p  frames bytes unit  frames bytes unit  total-frames total-bytes unit ...
            let t: Vec<&str> = line.split_whitespace().collect();
            let total: u64 = t[9].parse().unwrap_or_else(|_| panic!("unexpected tshark line: {line}"));
            *m.entry(key(proto, endpoint(t[0]), endpoint(t[2]))).or_default() += total;
        }
    }
    m
}

/// wirefold's TCP and UDP flows grouped as tshark's conversation table groups them.
fn wirefold_conversations(f: &Path) -> Conv {
    wirefold_flows(f).0.into_iter().filter(|(k, _)| k.0 == 6 || k.0 == 17).map(|(k, v)| (k, v.packets)).collect()
}

fn comparable(f: &Path) -> Result<(), String> {
    let name = f.file_name().unwrap().to_str().unwrap();
    if let Some((_, why)) = EXCLUDED.iter().find(|(n, _)| *n == name) {
        return Err(why.to_string());
    }
    let hits = tshark(&["-r", f.to_str().unwrap(), "-Y", TUNNEL_OR_FRAGMENT, "-T", "fields", "-e", "frame.number"]);
    if !hits.trim().is_empty() {
        return Err("tunnels or IP fragments (automatic rule)".into());
    }
    Ok(())
}

fn check(files: Vec<PathBuf>) {
    let work = std::sync::Mutex::new(files.into_iter());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some(f) = work.lock().unwrap().next() else { break };
                let r = match comparable(&f) {
                    Err(why) => (f, None, why),
                    Ok(()) => {
                        let t = tshark_conversations(&f);
                        let w = wirefold_conversations(&f);
                        let diff = if t == w {
                            String::new()
                        } else {
                            let only_t: Vec<_> = t.iter().filter(|(k, v)| w.get(*k) != Some(v)).take(5).collect();
                            let only_w: Vec<_> = w.iter().filter(|(k, v)| t.get(*k) != Some(v)).take(5).collect();
                            format!("tshark {only_t:?} vs wirefold {only_w:?}")
                        };
                        (f, Some(t.len()), diff)
                    }
                };
                results.lock().unwrap().push(r);
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut compared = 0;
    let mut conversations = 0;
    let mut failures = Vec::new();
    for (f, n, msg) in &results {
        match n {
            Some(n) => {
                compared += 1;
                conversations += n;
                if !msg.is_empty() {
                    failures.push(format!("{}: {msg}", f.display()));
                }
            }
            None => eprintln!("excluded {}: {msg}", f.file_name().unwrap().to_string_lossy()),
        }
    }
    eprintln!("compared {compared} captures, {conversations} conversations");
    assert!(failures.is_empty(), "{} captures differ from tshark:\n{}", failures.len(), failures.join("\n"));
    assert!(compared * 2 >= results.len(), "most captures must be comparable ({compared} of {})", results.len());
    assert!(conversations > 0);
}

#[test]
fn bundled_captures_match_tshark_conversations() {
    check(captures_in(&pcaps()));
}

#[test]
fn shared_corpus_matches_tshark_conversations() {
    match shared_corpus() {
        Some(dir) => check(captures_in(&dir)),
        None => eprintln!("shared corpus not present; the bundled captures are checked by the other test"),
    }
}

/// Tunnels whose inner flows wirefold reports; captures holding them are
/// compared by [`inner_conversations_match`].
const DECODED_TUNNELS: &str = "vxlan or geneve or gtp";

/// Outer IP fragments: wirefold does not reassemble, so a tunnel packet in
/// a fragmented datagram stays in the outer UDP flow while tshark decodes
/// it. Such frames are removed from the capture before both tools read it.
const OUTER_FRAGMENT: &str = "ip.flags.mf==1 or ip.frag_offset>0 or ipv6.fragment";

/// Tunnelled captures left out, each with its reason.
const TUNNEL_EXCLUDED: &[(&str, &str)] = &[(
    "tcpdump__bigtcp-ipv4-vxlan-ipv4.pcap",
    "a BIG TCP super-packet (IPv4 total length 0) inside VXLAN: tshark does not decode the VXLAN, wirefold does",
)];

/// One conversation as seen at the innermost layer: protocol and unordered
/// endpoints (ICMP: the two hosts, all messages between them), with its packet total, its tunnel kind and (from the first
/// packet) the outer endpoints and the tunnel id.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Inner {
    packets: u64,
    tunnel: String,
    outer: Option<(String, String)>,
    id: Option<u32>,
}

type InnerConv = BTreeMap<(u8, (String, u16), (String, u16)), Inner>;

/// tshark's per-frame fields: the protocol chain and every occurrence of
/// the address, port and tunnel-id fields, outermost first.
fn tshark_inner(f: &Path) -> InnerConv {
    let out = tshark(&[
        "-r",
        f.to_str().unwrap(),
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
        "-E",
        "separator=|",
        "-e",
        "frame.protocols",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "ipv6.src",
        "-e",
        "ipv6.dst",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.dstport",
        "-e",
        "udp.srcport",
        "-e",
        "udp.dstport",
        "-e",
        "vxlan.vni",
        "-e",
        "geneve.vni",
        "-e",
        "gtp.teid",
    ]);
    let mut m = InnerConv::new();
    for line in out.lines() {
        let t: Vec<&str> = line.split('|').collect();
        let list = |i: usize| -> Vec<&str> { t[i].split(',').filter(|s| !s.is_empty()).collect() };
        let layers: Vec<&str> = t[0].split(':').collect();
        // The packet's own layers end at its first ICMP header: what follows is a quoted packet.
        let layers = match layers.iter().position(|l| l.starts_with("icmp")) {
            Some(at) => &layers[..=at],
            None => &layers[..],
        };
        let is_ip = |l: &&str| *l == "ip" || *l == "ipv6";
        let ips: Vec<&str> = layers.iter().copied().filter(is_ip).collect();
        let Some(&inner_ip) = ips.last() else { continue };
        let last_ip_at = layers.iter().rposition(is_ip).unwrap();
        // An Ethernet frame inside VXLAN or Geneve that is not IP (ARP): wirefold counts it as skipped (not_ip).
        let l2_tunnel = layers.iter().rposition(|l| *l == "vxlan" || *l == "geneve");
        if l2_tunnel.is_some_and(|at| at > last_ip_at) {
            continue;
        }
        let transport = layers[last_ip_at..].iter().copied().find(|l| matches!(*l, "tcp" | "udp" | "icmp" | "icmpv6"));
        let Some(transport) = transport else { continue };
        let (v4s, v4d, v6s, v6d) = (list(1), list(2), list(3), list(4));
        // The n-th occurrence of the innermost IP's own kind.
        let nth = layers[..last_ip_at].iter().filter(|l| **l == inner_ip).count();
        let (src, dst) = if inner_ip == "ip" {
            (v4s[nth].to_string(), v4d[nth].to_string())
        } else {
            (v6s[nth].to_string(), v6d[nth].to_string())
        };
        let port = |v: &Vec<&str>| v.last().unwrap().parse::<u16>().unwrap();
        let (sp, dp, proto) = match transport {
            "tcp" => (port(&list(5)), port(&list(6)), 6),
            "udp" => (port(&list(7)), port(&list(8)), 17),
            "icmp" => (0, 0, 1),
            _ => (0, 0, 58),
        };
        // The outermost tunnel, as wirefold records it.
        let tunnel = layers
            .iter()
            .enumerate()
            .find_map(|(i, l)| match *l {
                "gre" => Some("gre"),
                "vxlan" => Some("vxlan"),
                "geneve" => Some("geneve"),
                "gtp" if layers.get(i + 1).is_some_and(is_ip) => Some("gtpu"),
                "ip" | "ipv6" if layers.get(i + 1).is_some_and(is_ip) => Some("ipip"),
                _ => None,
            })
            .unwrap_or("none");
        let outer = (tunnel != "none").then(|| match ips[0] {
            "ip" => (v4s[0].to_string(), v4d[0].to_string()),
            _ => (v6s[0].to_string(), v6d[0].to_string()),
        });
        let hex = |i: usize| list(i).first().map(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap());
        let id = match tunnel {
            "vxlan" => list(9).first().map(|s| s.parse().unwrap()),
            "geneve" => hex(10),
            "gtpu" => hex(11),
            _ => None,
        };
        let e =
            m.entry(key(proto, (src, sp), (dst, dp))).or_insert(Inner { packets: 0, tunnel: tunnel.into(), outer, id });
        e.packets += 1;
    }
    m
}

/// wirefold's TCP, UDP, ICMP and ICMPv6 flows grouped by protocol and
/// unordered endpoints (VLAN ignored), with the tunnel facts of the first
/// flow of each; and whether the replay exited successfully.
fn wirefold_flows(f: &Path) -> (InnerConv, bool) {
    let out = wirefold(&[
        "replay",
        "--no-embed",
        "--idle-timeout",
        "never",
        "--active-timeout",
        "never",
        f.to_str().unwrap(),
    ]);
    let mut m = InnerConv::new();
    for o in json_lines(&out.stdout) {
        let proto = o["proto"].as_u64().unwrap() as u8;
        if !matches!(proto, 1 | 6 | 17 | 58) {
            continue;
        }
        let a = (o["src_ip"].as_str().unwrap().to_string(), o["src_port"].as_u64().unwrap() as u16);
        let b = (o["dst_ip"].as_str().unwrap().to_string(), o["dst_port"].as_u64().unwrap() as u16);
        let packets = o["fwd_packets"].as_u64().unwrap() + o["rev_packets"].as_u64().unwrap();
        let tunnel = o["tunnel"].as_str().unwrap_or("none").to_string();
        let outer =
            o["tunnel_src_ip"].as_str().map(|s| (s.to_string(), o["tunnel_dst_ip"].as_str().unwrap().to_string()));
        let id = o["tunnel_id"].as_u64().map(|v| v as u32);
        let first = Inner { packets: 0, tunnel, outer, id };
        // The same conversation in two flows (it ended and began again) sums; the first flow's tunnel facts stand.
        let e = m.entry(key(proto, a, b)).or_insert(first);
        e.packets += packets;
    }
    (m, out.status.success())
}

/// The first packet of a conversation may come from either side, so the
/// outer endpoints are compared unordered; a GTP-U tunnel has one TEID per
/// direction, so the TEID must be one tshark saw first in either direction.
fn inner_conversations_match(f: &Path, work: &Path) -> Result<usize, String> {
    let name = f.file_name().unwrap().to_str().unwrap();
    let cut = work.join(name);
    let filter = format!("not ({OUTER_FRAGMENT})");
    let st = Command::new("tshark")
        .args(["-r", f.to_str().unwrap(), "-o", "ip.defragment:FALSE", "-Y", &filter, "-F", "pcap", "-w"])
        .arg(&cut)
        .output()
        .unwrap();
    assert!(st.status.success(), "tshark -w {name}: {}", String::from_utf8_lossy(&st.stderr));
    let t = tshark_inner(&cut);
    let (w, ok) = wirefold_flows(&cut);
    assert!(ok, "wirefold replay {name} failed");
    let mut diffs = Vec::new();
    let tk: Vec<_> = t.keys().collect();
    let wk: Vec<_> = w.keys().collect();
    if tk != wk {
        let only_t: Vec<_> = t.keys().filter(|k| !w.contains_key(*k)).take(4).collect();
        let only_w: Vec<_> = w.keys().filter(|k| !t.contains_key(*k)).take(4).collect();
        diffs.push(format!("conversations only in tshark {only_t:?}, only in wirefold {only_w:?}"));
    }
    for (k, tv) in &t {
        let Some(wv) = w.get(k) else { continue };
        let unordered = |o: &Option<(String, String)>| o.clone().map(|(a, b)| if a <= b { (a, b) } else { (b, a) });
        let id_ok = match (tv.tunnel.as_str(), tv.id, wv.id) {
            // Either direction's TEID: tshark's first frame of the conversation may be the other direction.
            ("gtpu", Some(_), Some(wid)) => t_ids(&cut, k).contains(&wid),
            _ => tv.id == wv.id,
        };
        if tv.packets != wv.packets || tv.tunnel != wv.tunnel || unordered(&tv.outer) != unordered(&wv.outer) || !id_ok
        {
            diffs.push(format!("{k:?}: tshark {tv:?}, wirefold {wv:?}"));
        }
    }
    if diffs.is_empty() {
        Ok(t.len())
    } else {
        Err(diffs.into_iter().take(6).collect::<Vec<_>>().join("; "))
    }
}

/// Every GTP-U TEID tshark saw on a conversation's frames.
fn t_ids(cut: &Path, k: &(u8, (String, u16), (String, u16))) -> Vec<u32> {
    let (_, (a, ap), (b, bp)) = k;
    let ip = if a.contains(':') { "ipv6.addr" } else { "ip.addr" };
    let filter = format!(
        "{ip}=={a} and {ip}=={b} and (tcp.port=={ap} or udp.port=={ap}) and (tcp.port=={bp} or udp.port=={bp})"
    );
    tshark(&["-r", cut.to_str().unwrap(), "-Y", &filter, "-T", "fields", "-e", "gtp.teid"])
        .lines()
        .filter_map(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .collect()
}

fn check_tunnels(files: Vec<PathBuf>, at_least: usize) {
    let work = scratch("tunnels");
    let mut compared = Vec::new();
    let mut failures = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if let Some((_, why)) = TUNNEL_EXCLUDED.iter().find(|(n, _)| *n == name) {
            eprintln!("excluded {name}: {why}");
            continue;
        }
        let hits = tshark(&[
            "-r",
            f.to_str().unwrap(),
            "-Y",
            DECODED_TUNNELS,
            "-c",
            "1",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ]);
        if hits.trim().is_empty() {
            continue;
        }
        match inner_conversations_match(&f, &work) {
            Ok(n) => {
                eprintln!("{name}: {n} conversations equal");
                compared.push((name, n));
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} tunnelled captures differ from tshark:\n{}", failures.len(), failures.join("\n"));
    assert!(compared.len() >= at_least, "only {} tunnelled captures compared: {compared:?}", compared.len());
    assert!(compared.iter().map(|(_, n)| n).sum::<usize>() >= at_least, "{compared:?}");
}

/// VXLAN, Geneve and GTP-U: the inner conversations, their packet counts,
/// the tunnel kind, outer endpoints and VNI/TEID equal tshark's.
#[test]
fn tunnelled_captures_match_tshark_inner_conversations() {
    check_tunnels(captures_in(&pcaps()), 6);
}

#[test]
fn shared_corpus_tunnels_match_tshark_inner_conversations() {
    match shared_corpus() {
        Some(dir) => check_tunnels(captures_in(&dir), 8),
        None => eprintln!("shared corpus not present; the bundled captures are checked by the other test"),
    }
}
