//! Configuration files, `check-config`, and the deploy kit (sample
//! configurations, systemd units, Prometheus configuration and alert rules),
//! checked with the real tools.
mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(rel)
}

fn check(file: &Path) -> (i32, String, String) {
    let out = wirefold(&["check-config", file.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_sample_configurations_are_valid_and_show_their_defaults() {
    let (code, out, err) = check(&deploy("config/sensor.toml"));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("valid sensor configuration"), "{err}");
    assert!(out.contains("iface = \"eth1\"  # from the file"), "{out}");
    assert!(out.contains("idle_timeout = \"120s\"  # from the file"), "{out}");
    assert!(out.contains("ring_slots = 65536  # default"), "{out}");
    // The flow table's memory for the configured --max-flows.
    let table = out.lines().find(|l| l.starts_with("# flow table")).unwrap_or_else(|| panic!("{out}"));
    let num =
        |after: &str| -> f64 { table.split(after).nth(1).and_then(|v| v.split(' ').next()).unwrap().parse().unwrap() };
    let (mib, per) = (num(": "), num("("));
    assert!(table.contains("max_flows = 1000000") && (200.0..4000.0).contains(&mib), "{table}");
    assert!((200.0..1024.0).contains(&per), "{table}");
    assert!(out.contains("metrics = \"0.0.0.0:9462\"  # from the file"), "{out}");
    // What check-config prints is itself a valid configuration.
    let dir = scratch("effective");
    std::fs::write(dir.join("effective.toml"), &out).unwrap();
    let (code, again, err) = check(&dir.join("effective.toml"));
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(again.contains("ring_slots = 65536  # from the file"), "{again}");

    let (code, out, err) = check(&deploy("config/core.toml"));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("valid core configuration"), "{err}");
    assert!(out.contains("queue = 64  # from the file"), "{out}");
    assert!(out.contains("metrics = \"0.0.0.0:9463\"  # from the file"), "{out}");
}

#[test]
fn bad_configurations_name_the_field_the_value_and_what_is_allowed() {
    let dir = scratch("bad-config");
    let cases: &[(&str, &[&str])] = &[
        (
            "[flow]\nidle_timeout = \"5 parsecs\"\n",
            &["flow.idle_timeout", "\"5 parsecs\"", "allowed units are ms, s, m, h"],
        ),
        (
            "[flow]\nidle_timout = \"5s\"\n",
            &["unknown field `flow.idle_timout`", "idle_timeout, active_timeout, max_flows"],
        ),
        ("[capture]\nmode = \"turbo\"\n", &["capture.mode", "\"turbo\"", "one of pipeline, run-to-completion"]),
        ("[capture]\nthreads = 0\n", &["capture.threads", "= 0", "0 is not in 1..=256"]),
        ("[flow]\nmax_flows = \"lots\"\n", &["flow.max_flows", "\"lots\"", "allowed: N"]),
        ("[export]\nno_embed = \"yes\"\n", &["export.no_embed", "\"yes\"", "one of true, false"]),
        ("[capture]\nidle_timeout = \"5s\"\n", &["`idle_timeout` belongs in [flow], not [capture]"]),
        ("[flows]\nx = 1\n", &["unknown section [flows]", "capture, dpdk, export, flow, replay, telemetry"]),
        ("[telemetry]\nmetrics = \"localhost\"\n", &["telemetry.metrics", "\"localhost\"", "allowed: ADDR"]),
        ("[flow\n", &["not valid TOML", "line 1"]),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let f = dir.join(format!("bad{i}.toml"));
        std::fs::write(&f, body).unwrap();
        let (code, _, err) = check(&f);
        assert_eq!(code, 2, "{body}: {err}");
        assert!(err.contains(f.to_str().unwrap()), "names the file: {err}");
        for w in *want {
            assert!(err.contains(w), "{body}: want {w:?} in: {err}");
        }
        // The same file given to a run stops it the same way, before any work.
        let out = wirefold(&["replay", "--config", f.to_str().unwrap(), pcap("zeek__smtp.pcap").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{body}");
        assert!(out.stdout.is_empty());
    }
    // 64 capture threads' tables of 10^8 flows (~2.4 TiB) fit in no machine of this kind.
    let f = dir.join("huge.toml");
    std::fs::write(&f, "[flow]\nmax_flows = 100000000\n[capture]\nthreads = 64\n").unwrap();
    let (code, _, err) = check(&f);
    assert_eq!(code, 2, "{err}");
    for w in
        ["flow tables:", "64 tables of max_flows = 100000000", "MemAvailable", "lower --max-flows (flow.max_flows)"]
    {
        assert!(err.contains(w), "want {w:?} in: {err}");
    }
    let f = dir.join("core.toml");
    std::fs::write(&f, "[core]\nqueue = 8\n").unwrap();
    let (code, _, err) = check(&f);
    assert_eq!(code, 2);
    assert!(err.contains("core.db is required"), "{err}");
}

fn idle_flows(summary: &Path) -> (u64, u64) {
    let s: Value = serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap();
    (s["flows"]["idle"].as_u64().unwrap(), s["flows_total"].as_u64().unwrap())
}

#[test]
fn the_file_sets_options_and_flags_override_it() {
    let dir = scratch("override");
    let capture = pcap("zeek__ssh__sshguess.pcap");
    let cfg = dir.join("sensor.toml");
    // One sensor file serves replay and capture alike ([capture] is checked, not used, by replay).
    std::fs::write(
        &cfg,
        format!(
            "[capture]\niface = \"eth9\"\n[flow]\nidle_timeout = \"1s\"\n[export]\nno_embed = true\nsummary_json = \"{}\"\nout = \"{}\"\n",
            dir.join("from-file.json").display(),
            dir.join("flows.jsonl").display()
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec!["replay", capture.to_str().unwrap(), "--config", cfg.to_str().unwrap()];
        a.extend_from_slice(extra);
        let out = wirefold(&a);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[]);
    let (idle_1s, total_1s) = idle_flows(&dir.join("from-file.json"));
    assert!(std::fs::metadata(dir.join("flows.jsonl")).unwrap().len() > 0, "out came from the file");
    let flows = json_lines(&std::fs::read(dir.join("flows.jsonl")).unwrap());
    assert!(flows.iter().all(|f| f.get("embedding").is_none()), "no_embed came from the file");
    let from_flag = dir.join("from-flag.json");
    run(&["--idle-timeout", "never", "--summary-json", from_flag.to_str().unwrap()]);
    let (idle_never, total_never) = idle_flows(&from_flag);
    assert_eq!(idle_never, 0, "the flag overrides the file");
    assert!(
        idle_1s > 0 && total_1s > total_never,
        "1 s idle timeout splits flows: {idle_1s}/{total_1s} vs {total_never}"
    );
}

#[test]
fn systemd_units_verify() {
    let dir = scratch("units");
    for unit in ["wirefold-sensor.service", "wirefold-core.service"] {
        let text = std::fs::read_to_string(deploy(&format!("systemd/{unit}"))).unwrap();
        assert!(text.contains("--config /etc/wirefold/"), "{unit} runs from its configuration file");
        assert!(!text.contains("User=root"), "{unit} must not run as root");
        // systemd-analyze wants the binary to exist: point it at the one under test.
        let local = dir.join(unit);
        std::fs::write(&local, text.replace("/usr/local/bin/wirefold", bin().to_str().unwrap())).unwrap();
        let out =
            Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&local).output().expect("systemd-analyze");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify {unit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sensor = std::fs::read_to_string(deploy("systemd/wirefold-sensor.service")).unwrap();
    assert!(sensor.contains("AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN"));
    assert!(sensor.contains("CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN"));
}

#[test]
fn prometheus_configuration_and_alert_rules_check() {
    for (what, file) in [("config", "prometheus/prometheus.yml"), ("rules", "prometheus/wirefold.rules.yml")] {
        let out = Command::new("promtool").args(["check", what]).arg(deploy(file)).output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool check {what} {file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_core_runs_from_its_configuration_file() {
    use std::io::{BufRead, BufReader};
    let dir = scratch("core-config");
    write_secret(&dir.join("tokens"), "edge-9 token-edge-9-xyz\n");
    let cfg = dir.join("core.toml");
    std::fs::write(
        &cfg,
        format!(
            "[core]\nlisten = \"127.0.0.1:0\"\ndb = \"{}\"\ntokens = \"{}\"\nqueue = 7\ndrift_reference = \"{}\"\n[telemetry]\nmetrics = \"127.0.0.1:0\"\n",
            dir.join("core.db").display(),
            dir.join("tokens").display(),
            card().display()
        ),
    )
    .unwrap();
    let mut child = wirefold_cmd()
        .args(["core", "--config", cfg.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let (mut line, mut metrics, mut reference) = (String::new(), None, false);
    while metrics.is_none() {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "the core stopped");
        reference |= line.contains("drift reference from") && line.contains("wirefold-det-v2.card.json");
        if let Some(rest) = line.split("metrics on http://").nth(1) {
            metrics = Some(rest.split('/').next().unwrap().to_string());
        }
    }
    let addr: std::net::SocketAddr = metrics.unwrap().parse().unwrap();
    let (status, text) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("wirefold_core_queue_capacity 7"), "queue = 7 came from the file: {text}");
    assert!(reference, "the model card's drift reference was loaded");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
    assert!(dir.join("core.db").exists());
    // A drift reference that is not one stops the core at start-up, naming the file.
    for (body, want) in [("{\"model_id\": \"m\"}", "no reference_distribution.drift"), ("[1, 2]", "drift reference:")] {
        let bad = dir.join("bad-reference.json");
        std::fs::write(&bad, body).unwrap();
        let out = wirefold(&[
            "core",
            "--listen",
            "127.0.0.1:0",
            "--db",
            dir.join("core2.db").to_str().unwrap(),
            "--tokens",
            dir.join("tokens").to_str().unwrap(),
            "--drift-reference",
            bad.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--drift-reference") && err.contains("bad-reference.json") && err.contains(want), "{err}");
    }
}

fn card() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../embeddings/model/wirefold-det-v2.card.json")
}
