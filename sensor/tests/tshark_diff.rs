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

fn wirefold_conversations(f: &Path) -> Conv {
    let out = wirefold(&[
        "replay",
        "--no-embed",
        "--idle-timeout",
        "never",
        "--active-timeout",
        "never",
        f.to_str().unwrap(),
    ]);
    let mut m = Conv::new();
    for o in json_lines(&out.stdout) {
        let proto = o["proto"].as_u64().unwrap() as u8;
        if proto != 6 && proto != 17 {
            continue;
        }
        let a = (o["src_ip"].as_str().unwrap().to_string(), o["src_port"].as_u64().unwrap() as u16);
        let b = (o["dst_ip"].as_str().unwrap().to_string(), o["dst_port"].as_u64().unwrap() as u16);
        let n = o["fwd_packets"].as_u64().unwrap() + o["rev_packets"].as_u64().unwrap();
        *m.entry(key(proto, a, b)).or_default() += n;
    }
    m
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
