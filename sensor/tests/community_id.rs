//! Community ID against an independent oracle: tshark's `communityid`
//! post-dissector (`tshark --enable-protocol communityid`). For every
//! bundled capture (and the developers' corpus when present) without
//! tunnels or fragments, the set of Community IDs of wirefold's TCP, UDP,
//! ICMP, ICMPv6 and SCTP flows must equal the set tshark computes for the
//! packets of those protocols; with a seed, both must change the same way.
mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// tshark display filter for packets that make a capture incomparable:
/// tunnels (tshark hashes the outer packet, wirefold the inner flow) and
/// fragments (a later fragment has no ports).
const SKIP: &str = "gre or vxlan or geneve or teredo or gtp or ayiya or erspan or mpls or pim or teredo or ip.proto==4 or ip.proto==41 or ipv6.nxt==4 or ipv6.nxt==41 or ipv6.fragment or ip.flags.mf==1 or ip.frag_offset>0 or icmp.resp_to or icmp.type==3 or icmp.type==11 or icmp.type==5 or icmpv6.type<128";

/// Captures left out beyond the automatic rule, each with its reason.
const EXCLUDED: &[(&str, &str)] = &[
    ("zeek__radiotap.pcap", "802.11 link type: wirefold is a wired sensor (unsupported_link_type)"),
    ("zeek__wlanmon.pcap", "802.11 link type: wirefold is a wired sensor (unsupported_link_type)"),
    (
        "zeek__tcp__reassembly.pcap",
        "frames whose IPv4 total length exceeds the frame: tshark hashes them, wirefold counts them as malformed",
    ),
    (
        "zeek__trunc__icmp-header-trunc.pcap",
        "an ICMP header cut short by the capture: tshark hashes what it has, wirefold counts the packet as malformed",
    ),
    (
        "tcpdump__bigtcp-ipv4-vxlan-ipv4.pcap",
        "a BIG TCP super-packet inside VXLAN that tshark does not decode as VXLAN",
    ),
];

fn tshark(args: &[&str]) -> String {
    let out =
        Command::new("tshark").args(args).output().expect("tshark must be installed (./deploy/test.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tshark_ids(f: &Path, seed: u16) -> BTreeSet<String> {
    let seed = format!("communityid.seed:{seed}");
    let out = tshark(&[
        "-r",
        f.to_str().unwrap(),
        "--enable-protocol",
        "communityid",
        "-o",
        &seed,
        "-Y",
        "(tcp or udp or sctp or icmp or icmpv6) and not (icmp.type==3 or icmp.type==11 or icmp.type==5 or icmpv6.type<128)",
        "-T",
        "fields",
        "-e",
        "communityid",
    ]);
    out.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

fn wirefold_ids(f: &Path, seed: u16) -> BTreeSet<String> {
    let seed = seed.to_string();
    let out = wirefold(&["replay", "--no-embed", "--community-id-seed", &seed, f.to_str().unwrap()]);
    json_lines(&out.stdout)
        .iter()
        .filter(|r| matches!(r["proto"].as_u64(), Some(1 | 6 | 17 | 58 | 132)))
        .filter(|r| !(r["proto"] == 1 && matches!(r["icmp_type"].as_u64(), Some(3 | 5 | 11))))
        .filter(|r| !(r["proto"] == 58 && r["icmp_type"].as_u64().is_some_and(|t| t < 128)))
        .map(|r| r["community_id"].as_str().expect("every IP flow has a community_id").to_string())
        .collect()
}

fn comparable(f: &Path) -> bool {
    let name = f.file_name().unwrap().to_string_lossy().into_owned();
    if EXCLUDED.iter().any(|(n, _)| *n == name) {
        return false;
    }
    tshark(&["-r", f.to_str().unwrap(), "-Y", SKIP, "-T", "fields", "-e", "frame.number"]).trim().is_empty()
}

#[test]
fn community_ids_equal_tsharks_on_every_comparable_capture() {
    let mut files = captures_in(&pcaps());
    if let Some(c) = shared_corpus() {
        files.extend(captures_in(&c));
    }
    let (mut compared, mut flows) = (0, 0);
    let mut failures = Vec::new();
    for f in &files {
        if !comparable(f) {
            continue;
        }
        let want = tshark_ids(f, 0);
        if want.is_empty() {
            continue;
        }
        let got = wirefold_ids(f, 0);
        compared += 1;
        flows += got.len();
        if got != want {
            let missing: Vec<_> = want.difference(&got).take(3).collect();
            let extra: Vec<_> = got.difference(&want).take(3).collect();
            failures.push(format!("{}: missing {missing:?}, extra {extra:?}", f.display()));
        }
    }
    eprintln!("{compared} captures, {flows} Community IDs equal to tshark's");
    assert!(compared >= 10, "only {compared} comparable captures");
    assert!(failures.is_empty(), "{} captures differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_seed_changes_both_the_same_way() {
    let f = pcap("zeek__http__bro.org.pcap");
    let (a, b) = (wirefold_ids(&f, 0), wirefold_ids(&f, 7));
    assert!(a.is_disjoint(&b), "the seed changes every ID");
    assert_eq!(b, tshark_ids(&f, 7));
}

/// The core computes each stored flow's Community ID from the stored tuple
/// (the agent API's `community_id` column and filter). It must equal the
/// sensor's record (which the tests above hold to tshark's) for every flow,
/// TCP, UDP, ICMP, ICMPv6 and SCTP, with and without a seed.
#[test]
fn the_core_computes_the_records_community_ids_from_stored_flows() {
    let dir = scratch("core-community-id");
    let files = [
        "zeek__http__bro.org.pcap",
        "zeek__icmp__5-pings.pcap",
        "zeek__icmp__icmp6-nd-options.pcap",
        "zeek__communityid__sctp.pcap",
        "zeek__dns-edns-ecs.pcap",
        "zeek__tunnels__vxlan.pcap",
    ];
    let mut args: Vec<String> = vec!["replay".into()];
    args.extend(files.iter().map(|f| pcap(f).display().to_string()));
    let out = dir.join("flows.jsonl");
    for a in ["--out", out.to_str().unwrap(), "--core", "embedded", "--data-dir", dir.to_str().unwrap()] {
        args.push(a.into());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = wirefold(&argv);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let records = json_lines(&std::fs::read(&out).unwrap());
    let mut want: Vec<String> = records.iter().filter_map(|r| r["community_id"].as_str().map(String::from)).collect();
    want.sort();
    assert!(want.len() >= 10, "{} flows", want.len());
    let protos: BTreeSet<u64> = records.iter().filter_map(|r| r["proto"].as_u64()).collect();
    assert!([1, 6, 17, 58, 132].iter().all(|p| protos.contains(p)), "{protos:?}");

    let db = rusqlite::Connection::open(dir.join("core.db")).unwrap();
    let stored = |seed: u16| -> Vec<String> {
        wirefold_core::agent::tools::register_functions(&db, seed).unwrap();
        let mut q = db.prepare("SELECT community_id(src_ip, dst_ip, src_port, dst_port, proto) FROM flows").unwrap();
        let mut v: Vec<String> = q.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect();
        v.sort();
        v
    };
    assert_eq!(stored(0), want, "the core's Community IDs equal the records'");

    // The agent's filter finds exactly the flows with that ID.
    let id = &want[want.len() / 2];
    let a = serde_json::json!({"community_id": id, "limit": 1000});
    let (sql, p) =
        wirefold_core::agent::tools::query_flows_sql(&a, &wirefold_core::agent::AgentLimits::default()).unwrap();
    let mut q = db.prepare(&sql).unwrap();
    let n = q.query_map(rusqlite::params_from_iter(p), |_| Ok(())).unwrap().count();
    assert_eq!(n, want.iter().filter(|w| *w == id).count(), "{id}");

    // With a seed: the sensor's records with --community-id-seed 7 equal the core's with seed 7.
    let mut argv = vec!["replay", "--no-embed", "--community-id-seed", "7"];
    let paths: Vec<String> = files.iter().map(|f| pcap(f).display().to_string()).collect();
    argv.extend(paths.iter().map(String::as_str));
    let o = wirefold(&argv);
    let mut seeded: Vec<String> =
        json_lines(&o.stdout).iter().filter_map(|r| r["community_id"].as_str().map(String::from)).collect();
    seeded.sort();
    assert_ne!(seeded, want);
    assert_eq!(stored(7), seeded);
}
