//! The `wirefold replay` command as an operator meets it.
mod common;
use common::*;

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_explains_the_options() {
    let out = wirefold(&["replay", "--help"]);
    assert!(out.status.success());
    let h = s(&out.stdout);
    for needle in ["--idle-timeout", "--active-timeout", "--max-flows", "--out", "never", "JSON Lines", "byte offset"] {
        assert!(h.contains(needle), "help lacks {needle}:\n{h}");
    }
    let top = s(&wirefold(&["--help"]).stdout);
    assert!(top.contains("replay"), "{top}");
}

#[test]
fn bad_options_name_the_field_and_value_and_exit_2() {
    let f = pcap("zeek__icmp__5-pings.pcap");
    let out = wirefold(&["replay", "--idle-timeout", "5 parsecs", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let e = s(&out.stderr);
    assert!(e.contains("--idle-timeout") && e.contains("5 parsecs") && e.contains("allowed units"), "{e}");
    let out = wirefold(&["replay", "--max-flows", "0", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let e = s(&out.stderr);
    assert!(e.contains("--max-flows") && e.contains('0') && e.contains("1..="), "{e}");
    assert_eq!(wirefold(&["replay"]).status.code(), Some(2), "a file is required");
}

#[test]
fn missing_and_non_capture_files_are_named() {
    let out = wirefold(&["replay", "/nonexistent/capture.pcap"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(s(&out.stderr).contains("/nonexistent/capture.pcap"));
    let out = wirefold(&["replay", pcap("README.md").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(s(&out.stderr).contains("not a pcap or pcapng file"), "{}", s(&out.stderr));
}

#[test]
fn truncated_file_keeps_what_was_read_and_continues_with_the_next() {
    let dir = scratch("cli-trunc");
    let src = std::fs::read(pcap("zeek__http-qinq-0.pcap")).unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &src[..src.len() - 700]).unwrap();
    let pings = pcap("zeek__icmp__5-pings.pcap");
    let out = wirefold(&["replay", cut.to_str().unwrap(), pings.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "a damaged input makes the run fail");
    let e = s(&out.stderr);
    assert!(e.contains("cut.pcap: truncated at byte offset 5244"), "{e}");
    let flows = json_lines(&out.stdout);
    assert!(flows.iter().any(|f| f["dst_port"] == 80), "the flow read before the cut is flushed");
    assert!(flows.iter().any(|f| f["proto"] == 1), "the next file is still read");
}

#[test]
fn pcapng_gives_the_same_flows_as_pcap() {
    let a = wirefold(&["replay", pcap("zeek__http-vlan-0.pcap").to_str().unwrap()]);
    let b = wirefold(&["replay", pcap("zeek__http-vlan-0.pcapng").to_str().unwrap()]);
    assert!(a.status.success() && b.status.success());
    assert!(!a.stdout.is_empty());
    assert_eq!(s(&a.stdout), s(&b.stdout));
}

#[test]
fn output_is_deterministic_and_out_writes_a_file() {
    let dir = scratch("cli-det");
    let f = pcap("zeek__dns-edns-ecs.pcap");
    let out_path = dir.join("flows.jsonl");
    let a = wirefold(&["replay", f.to_str().unwrap()]);
    let b = wirefold(&["replay", "--out", out_path.to_str().unwrap(), f.to_str().unwrap()]);
    assert!(b.stdout.is_empty());
    assert_eq!(s(&a.stdout), std::fs::read_to_string(&out_path).unwrap());
    assert!(json_lines(&a.stdout).len() > 50, "many DNS queries make many flows");
}

#[test]
fn the_flow_cap_evicts_and_counts_but_loses_no_packets() {
    let dir = scratch("cli-cap");
    let f = pcap("zeek__dns-edns-ecs.pcap");
    let sum_a = dir.join("a.json");
    let sum_b = dir.join("b.json");
    let a = wirefold(&["replay", "--summary-json", sum_a.to_str().unwrap(), f.to_str().unwrap()]);
    let b = wirefold(&["replay", "--max-flows", "8", "--summary-json", sum_b.to_str().unwrap(), f.to_str().unwrap()]);
    let sa: serde_json::Value = serde_json::from_slice(&std::fs::read(sum_a).unwrap()).unwrap();
    let sb: serde_json::Value = serde_json::from_slice(&std::fs::read(sum_b).unwrap()).unwrap();
    assert_eq!(sa["flows"]["evicted"], 0);
    assert!(sb["flows"]["evicted"].as_u64().unwrap() > 0);
    assert!(sb["peak_flows"].as_u64().unwrap() <= 8);
    let packets = |o: &[u8]| -> u64 {
        json_lines(o).iter().map(|f| f["fwd_packets"].as_u64().unwrap() + f["rev_packets"].as_u64().unwrap()).sum()
    };
    assert_eq!(packets(&a.stdout), packets(&b.stdout));
    assert_eq!(packets(&b.stdout), sb["flow_packets"].as_u64().unwrap());
}

#[test]
fn flow_records_have_the_documented_keys() {
    let out = wirefold(&["replay", pcap("zeek__workshop_2011_browse.pcap").to_str().unwrap()]);
    let flows = json_lines(&out.stdout);
    assert!(!flows.is_empty());
    for f in &flows {
        for k in [
            "first_ts",
            "last_ts",
            "vlan",
            "proto",
            "src_ip",
            "src_port",
            "dst_ip",
            "dst_port",
            "fwd_packets",
            "fwd_bytes",
            "rev_packets",
            "rev_bytes",
            "tcp_flags",
            "end_reason",
        ] {
            assert!(f.get(k).is_some(), "record lacks {k}: {f}");
        }
        assert!(f["last_ts"].as_f64().unwrap() >= f["first_ts"].as_f64().unwrap());
        assert!(f["fwd_packets"].as_u64().unwrap() + f["rev_packets"].as_u64().unwrap() > 0);
    }
    // The summary's counts agree with the records.
    let e = s(&out.stderr);
    assert!(e.contains(&format!("flows        {} (", flows.len())), "{e}");
}
