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

#[test]
fn embedding_is_on_by_default_and_off_with_no_embed() {
    let f = pcap("zeek__workshop_2011_browse.pcap");
    let on = json_lines(&wirefold(&["replay", f.to_str().unwrap()]).stdout);
    assert!(!on.is_empty());
    for r in &on {
        let e = r["embedding"].as_array().expect("embedding by default");
        assert_eq!(e.len(), 32);
        assert!(e.iter().all(|v| (-127..=127).contains(&v.as_i64().unwrap())));
        assert!(r["score"].as_f64().unwrap().is_finite());
    }
    let distinct: std::collections::BTreeSet<String> = on.iter().map(|r| r["embedding"].to_string()).collect();
    assert!(distinct.len() > on.len() / 2, "embeddings tell flows apart");
    let off = json_lines(&wirefold(&["replay", "--no-embed", f.to_str().unwrap()]).stdout);
    assert_eq!(off.len(), on.len());
    assert!(off.iter().all(|r| r.get("embedding").is_none() && r.get("score").is_none()));
}

#[test]
fn missing_runtime_or_wrong_model_stops_start_up_with_a_fix() {
    let f = pcap("zeek__icmp__5-pings.pcap");
    let out = std::process::Command::new(bin())
        .env_remove("ORT_DYLIB_PATH")
        .args(["replay", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = s(&out.stderr);
    assert!(
        e.contains("ONNX Runtime library not found") && e.contains("ORT_DYLIB_PATH") && e.contains("--no-embed"),
        "{e}"
    );
    assert!(out.stdout.is_empty(), "nothing is processed");
    let out = std::process::Command::new(bin())
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args(["replay", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(s(&out.stderr).contains("/nonexistent/libonnxruntime.so"));
    // A model whose input width is not the feature vector's.
    let dir = scratch("cli-model");
    let model = dir.join("narrow.onnx");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../embeddings/model");
    std::fs::copy(root.join("width-mismatch.onnx"), &model).unwrap();
    std::fs::copy(root.join("wirefold-det-v2.card.json"), dir.join("narrow.card.json")).unwrap();
    let out = wirefold(&["replay", "--model", model.to_str().unwrap(), f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(s(&out.stderr).contains("feature vector has 64 values"), "{}", s(&out.stderr));
}

#[test]
fn batches_out_round_trips_to_the_same_flows() {
    let dir = scratch("cli-batches");
    let batches = dir.join("flows.fb");
    let f = pcap("zeek__dns-edns-ecs.pcap");
    let g = pcap("zeek__ftp__ipv6.pcap");
    let out = wirefold(&[
        "replay",
        "--batches-out",
        batches.to_str().unwrap(),
        "--sensor-id",
        "edge-7",
        f.to_str().unwrap(),
        g.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let json = json_lines(&out.stdout);
    let mut r = std::io::BufReader::new(std::fs::File::open(&batches).unwrap());
    let mut recs = Vec::new();
    let mut seq = 0;
    while let Some(buf) = wirefold_schema::read_framed(&mut r).unwrap() {
        let (meta, flows) = wirefold_schema::read_batch(&buf).expect("every batch verifies");
        seq += 1;
        assert_eq!(meta.seq, seq);
        assert_eq!(meta.sensor_id, "edge-7");
        assert_eq!(meta.model_id, "wirefold-det-v2");
        recs.extend(flows);
    }
    assert_eq!(recs.len(), json.len());
    // Same flows: compare (first time, ports, packets, bytes, embedding) as sets.
    let key = |t: f64, sp: u64, dp: u64, p: u64, b: u64| format!("{:.6} {sp} {dp} {p} {b}", t);
    let mut a: Vec<String> = json
        .iter()
        .filter(|j| !matches!(j["proto"].as_u64(), Some(1 | 58)))
        .map(|j| {
            key(
                j["first_ts"].as_f64().unwrap(),
                j["src_port"].as_u64().unwrap(),
                j["dst_port"].as_u64().unwrap(),
                j["fwd_packets"].as_u64().unwrap() + j["rev_packets"].as_u64().unwrap(),
                j["fwd_bytes"].as_u64().unwrap() + j["rev_bytes"].as_u64().unwrap(),
            ) + &j["embedding"].to_string().replace(' ', "")
        })
        .collect();
    let mut b: Vec<String> = recs
        .iter()
        .filter(|r| !matches!(r.proto, 1 | 58))
        .map(|r| {
            key(
                r.first_ns as f64 / 1e9,
                r.src_port as u64,
                r.dst_port as u64,
                (r.fwd_packets + r.rev_packets) as u64,
                r.fwd_bytes + r.rev_bytes,
            ) + &serde_json::to_string(&r.embedding.to_vec()).unwrap()
        })
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(recs.iter().any(|r| r.ip_version == 6) && recs.iter().any(|r| r.ip_version == 4));
}

#[test]
fn features_out_writes_one_finite_row_per_flow() {
    let dir = scratch("cli-features");
    let csv = dir.join("f.csv");
    let f = pcap("zeek__smtp.pcap");
    let out = wirefold(&["replay", "--no-embed", "--features-out", csv.to_str().unwrap(), f.to_str().unwrap()]);
    let flows = json_lines(&out.stdout).len();
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap().split(',').count(), 64);
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), flows);
    assert!(rows.iter().all(|r| r.split(',').all(|v| v.parse::<f32>().is_ok_and(|x| x.is_finite()))));
}

#[cfg(not(feature = "dpdk"))]
#[test]
fn dpdk_without_the_feature_says_how_to_get_it() {
    let out = wirefold(&["capture", "--dpdk"]);
    assert_eq!(out.status.code(), Some(2));
    let e = s(&out.stderr);
    assert!(e.contains("built without DPDK support") && e.contains("--features dpdk"), "{e}");
}

#[test]
fn credentials_in_the_clear_and_readable_token_files_are_refused_with_a_fix() {
    let dir = scratch("cli-credentials");
    let tokens = dir.join("tokens");
    write_secret(&tokens, "edge-1 edge-1-secret-token\n");
    let db = dir.join("core.db");
    let core = |listen: &str, extra: &[&str]| {
        let mut args =
            vec!["core", "--listen", listen, "--db", db.to_str().unwrap(), "--tokens", tokens.to_str().unwrap()];
        args.extend_from_slice(extra);
        wirefold(&args)
    };
    // Plain text on a non-loopback address: refused, exit 2, says what to do.
    let out = core("0.0.0.0:0", &[]);
    assert_eq!(out.status.code(), Some(2));
    let e = s(&out.stderr);
    assert!(e.contains("plain text") && e.contains("--allow-plaintext") && e.contains("--tls-cert"), "{e}");
    // A tokens file others can read: refused, exit 2, with the chmod to run.
    std::fs::set_permissions(&tokens, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644))
        .unwrap();
    let out = core("127.0.0.1:0", &[]);
    assert_eq!(out.status.code(), Some(2));
    let e = s(&out.stderr);
    assert!(e.contains("chmod 600") && e.contains("0644"), "{e}");
    // A sensor will not send its token in plain text off loopback.
    let out = wirefold(&[
        "replay",
        "--core",
        "http://192.0.2.1:7443",
        "--token",
        "edge-1-secret-token",
        "--data-dir",
        dir.join("sensor").to_str().unwrap(),
        pcap("zeek__llc.pcap").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let e = s(&out.stderr);
    assert!(e.contains("plain text to 192.0.2.1") && e.contains("--allow-plaintext"), "{e}");
}

/// `--core-gates FILE` configures the embedded core's gates: with every gate
/// off, every stored flow is promoted (the defaults hold some); a bad file
/// exits 2 naming the field, and the flag is refused for a remote core.
#[test]
fn core_gates_configures_the_embedded_core() {
    let dir = scratch("core-gates");
    let f = pcap("zeek__http__bro.org.pcap");
    let verdicts = |gates: Option<&std::path::Path>, name: &str| -> (u64, u64) {
        let data = dir.join(name);
        let mut args = vec!["replay", "--out", "/dev/null", "--core", "embedded", "--data-dir", data.to_str().unwrap()];
        if let Some(g) = gates {
            args.extend(["--core-gates", g.to_str().unwrap()]);
        }
        args.push(f.to_str().unwrap());
        let out = wirefold(&args);
        assert!(out.status.success(), "{}", s(&out.stderr));
        let db = rusqlite::Connection::open(data.join("core.db")).unwrap();
        db.query_row("SELECT count(*), coalesce(sum(verdict = 'promoted'), 0) FROM flows", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .unwrap()
    };
    let (n, promoted) = verdicts(None, "default");
    assert!(n > 5 && promoted < n, "the default gates hold some flows: {promoted} of {n}");
    let off = dir.join("off.toml");
    let mut text = String::new();
    for g in ["score", "novelty", "burst", "budget", "drift"] {
        text.push_str(&format!("[gates.{g}]\nmode = \"off\"\n"));
    }
    std::fs::write(&off, text).unwrap();
    assert_eq!(verdicts(Some(&off), "off"), (n, n), "every gate off promotes every flow");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[gates.budget]\nper_window = 0\n").unwrap();
    let data = dir.join("bad");
    let out = wirefold(&[
        "replay",
        "--core",
        "embedded",
        "--data-dir",
        data.to_str().unwrap(),
        "--core-gates",
        bad.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", s(&out.stderr));
    assert!(s(&out.stderr).contains("gates.budget.per_window = 0"), "{}", s(&out.stderr));
    let out = wirefold(&[
        "replay",
        "--core",
        "http://127.0.0.1:9",
        "--token",
        "tok-12345678",
        "--core-gates",
        off.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", s(&out.stderr));
    assert!(s(&out.stderr).contains("configure an embedded core only (--core embedded)"), "{}", s(&out.stderr));
    // The embedded core's drift reference: a file that is not one stops start-up, naming it.
    let out = wirefold(&[
        "replay",
        "--core",
        "embedded",
        "--data-dir",
        data.to_str().unwrap(),
        "--core-drift-reference",
        bad.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", s(&out.stderr));
    assert!(
        s(&out.stderr).contains("--core-drift-reference") && s(&out.stderr).contains("drift reference:"),
        "{}",
        s(&out.stderr)
    );
}
