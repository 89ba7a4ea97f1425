//! Golden snapshots of flow output for varied captures. Regenerate after a
//! deliberate change with `WIREFOLD_BLESS=1 cargo test --test golden`, and
//! review the diff: these files are the reference for what wirefold reports.
mod common;
use common::*;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Run replay with default settings and compare flows (and the summary's
/// counters, without timing) with the stored snapshot.
fn golden(name: &str, files: &[PathBuf]) {
    let dir = scratch(name);
    let summary = dir.join("summary.json");
    // Flow logic only: embeddings are checked against the model's reference
    // outputs elsewhere, with a tolerance a byte-exact snapshot cannot have.
    let mut args =
        vec!["replay".to_string(), "--no-embed".into(), "--summary-json".into(), summary.to_str().unwrap().into()];
    args.extend(files.iter().map(|f| f.to_str().unwrap().to_string()));
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = wirefold(&argv);
    let mut s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let obj = s.as_object_mut().unwrap();
    obj.remove("seconds");
    obj.remove("packets_per_second");
    // Error messages name files by path; keep only the part after the file name.
    if let Some(errs) = obj.get_mut("errors") {
        for e in errs.as_array_mut().unwrap() {
            let t = e.as_str().unwrap();
            let short = t.rsplit_once('/').map_or(t, |(_, r)| r).to_string();
            *e = serde_json::Value::String(short);
        }
    }
    let mut actual = String::from_utf8(out.stdout).unwrap();
    actual.push_str("# summary\n");
    actual.push_str(&serde_json::to_string_pretty(&s).unwrap());
    actual.push('\n');
    let path = golden_dir().join(format!("{name}.jsonl"));
    if std::env::var_os("WIREFOLD_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}; run with WIREFOLD_BLESS=1", path.display()));
    if expected != actual {
        let first = expected.lines().zip(actual.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{name}: output differs from {} at line {}:\nexpected: {}\nactual:   {}",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("<eof>"),
            actual.lines().nth(first).unwrap_or("<eof>")
        );
    }
}

#[test]
fn vlan_qinq_and_triple_tags() {
    golden(
        "vlan",
        &[
            pcap("zeek__http-vlan-0.pcap"),
            pcap("zeek__q-in-q.pcap"),
            pcap("zeek__vlan-qinqinq.pcap"),
            pcap("tcpdump__802.1ad_QinQ.pcap"),
        ],
    );
}

#[test]
fn ipv6_extension_headers() {
    golden(
        "ipv6-ext",
        &[
            pcap("zeek__ipv6-http-atomic-frag.pcap"),
            pcap("zeek__icmp__icmp6-nd-options.pcap"),
            pcap("zeek__dns__mdns.pcap"),
        ],
    );
}

#[test]
fn ip_fragments() {
    golden(
        "fragments",
        &[
            pcap("zeek__ipv4__fragmented-1.pcap"),
            pcap("zeek__ipv4__fragmented-2.pcap"),
            pcap("zeek__ipv4__fragmented-3.pcap"),
            pcap("zeek__ipv4__fragmented-4.pcap"),
            pcap("zeek__ipv4__fragmented-syn.pcap"),
            pcap("zeek__ipv6-fragmented-dns.pcap"),
        ],
    );
}

#[test]
fn gre_tunnels() {
    golden(
        "gre",
        &[
            pcap("zeek__tunnels__gre-sample.pcap"),
            pcap("tcpdump__various_gre.pcap"),
            pcap("zeek__tunnels__gre-pptp.pcap"),
            pcap("zeek__tunnels__gre-erspan3-dot1q.pcap"),
        ],
    );
}

#[test]
fn vxlan_and_ip_in_ip() {
    golden(
        "vxlan",
        &[
            pcap("zeek__tunnels__vxlan.pcap"),
            pcap("zeek__tunnels__vxlan-encapsulated-http.pcap"),
            pcap("zeek__tunnels__6in4.pcap"),
            pcap("zeek__tunnels__4in6.pcap"),
        ],
    );
}

#[test]
fn link_types() {
    golden(
        "link-types",
        &[
            pcap("zeek__linux_dlt_sll2.pcap"),
            pcap("zeek__linuxsll-arp.pcap"),
            pcap("tcpdump__LINKTYPE_RAW_ipv6.pcap"),
            pcap("tcpdump__quic_handshake_truncated.pcap"),
            pcap("zeek__pppoe-over-qinq.pcap"),
            pcap("zeek__mpls-in-vlan.pcap"),
            pcap("zeek__pbb.pcap"),
        ],
    );
}

#[test]
fn malformed_packets() {
    let mut files: Vec<PathBuf> = captures_in(&pcaps())
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with("zeek__trunc__")
                || n.contains("asan")
                || n.contains("negative_len")
                || n.contains("heapoverflow")
                || n.contains("jumbogram")
        })
        .collect();
    files.push(pcap("zeek__ip-bogus-header-len.pcap"));
    files.push(pcap("zeek__tcp__truncated-header.pcap"));
    golden("malformed", &files);
}

#[test]
fn truncated_file() {
    let dir = scratch("truncated-src");
    let src = std::fs::read(pcap("zeek__http-qinq-0.pcap")).unwrap();
    let cut = dir.join("http-qinq-cut.pcap");
    std::fs::write(&cut, &src[..src.len() - 700]).unwrap();
    golden("truncated-file", &[cut]);
}
