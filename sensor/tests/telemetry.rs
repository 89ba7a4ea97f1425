//! `/metrics` on the sensor and the core: the counters agree with the
//! summaries, `promtool` accepts the output, a real Prometheus server scrapes
//! a running replay, and the Grafana dashboard only asks for metrics that
//! exist.
mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `wirefold` process whose stderr is collected, with the address it printed for `marker`.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child =
            wirefold_cmd().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn wirefold");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, s2) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = s2.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc { child, stderr }
    }

    /// Wait for a stderr line containing `marker` and return the address after it.
    fn addr_after(&mut self, marker: &str) -> SocketAddr {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.stderr.lock().unwrap().clone();
            if let Some(i) = text.find(marker) {
                let rest = &text[i + marker.len()..];
                let end = rest.find(|c: char| c == '/' || c == ',' || c.is_whitespace()).unwrap_or(rest.len());
                return rest[..end].parse().unwrap_or_else(|_| panic!("no address after {marker:?} in {text}"));
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("wirefold exited ({st}) before printing {marker:?}:\n{text}");
            }
            assert!(Instant::now() < until, "no {marker:?} in stderr:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn term_and_wait(mut self) -> (std::process::ExitStatus, String) {
        let _ = nix_kill(self.child.id(), libc::SIGTERM);
        let until = Instant::now() + Duration::from_secs(30);
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < until, "wirefold did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(100));
        let text = self.stderr.lock().unwrap().clone();
        (st, text)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nix_kill(pid: u32, sig: i32) -> i32 {
    // SAFETY: kill(2) on a child of this test process.
    unsafe { libc::kill(pid as i32, sig) }
}

fn promtool_check(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; ./deploy/test.sh installs it)");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for(path: &Path, limit: Duration) {
    let until = Instant::now() + limit;
    while !path.exists() {
        assert!(Instant::now() < until, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
}

/// Replay captures with an embedded core and `/metrics`, lingering; return
/// the scrape after the summary was written, and the summary.
fn replay_scrape(name: &str, files: &[PathBuf]) -> (String, Value, String) {
    let dir = scratch(name);
    let summary = dir.join("summary.json");
    let mut args: Vec<String> = vec!["replay".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    for a in [
        "--out",
        &dir.join("flows.jsonl").display().to_string(),
        "--summary-json",
        &summary.display().to_string(),
        "--core",
        "embedded",
        "--data-dir",
        &dir.display().to_string(),
        "--metrics",
        "127.0.0.1:0",
        "--linger",
        "never",
    ] {
        args.push(a.to_string());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Proc::spawn(&argv);
    let addr = p.addr_after("metrics on http://");
    wait_for(&summary, Duration::from_secs(60));
    let (status, text) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    let (st, stderr) = p.term_and_wait();
    assert!(st.success(), "replay exited {st}:\n{stderr}");
    assert!(stderr.contains("serving metrics on http://"), "{stderr}");
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    (text, s, stderr)
}

fn mixed_files() -> Vec<PathBuf> {
    [
        "zeek__http__bro.org.pcap",
        "zeek__ip-bogus-header-len.pcap",
        "tcpdump__ipv6_jumbogram_invalid_length.pcap",
        "zeek__tcp__truncated-header.pcap",
        "zeek__linuxsll-arp.pcap",
        "zeek__ipv4__fragmented-1.pcap",
    ]
    .iter()
    .map(|f| pcap(f))
    .collect()
}

#[test]
fn sensor_counters_agree_with_the_summary_and_pass_promtool() {
    let (text, s, _) = replay_scrape("agree", &mixed_files());
    promtool_check(&text);
    let m = parse_metrics(&text);
    let n = |k: &str| s[k].as_f64().unwrap();
    assert!(n("packets") > 700.0);
    assert_eq!(metric_sum(&m, "wirefold_packets_total", &[("interface", "replay")]), n("packets"));
    assert_eq!(metric_sum(&m, "wirefold_bytes_total", &[]), n("bytes"));
    assert_eq!(metric_sum(&m, "wirefold_flow_packets_total", &[]), n("flow_packets"));
    // Flows by end reason, every reason present (zero or not).
    let flows = s["flows"].as_object().unwrap();
    assert_eq!(flows.len(), 7);
    for (reason, v) in flows {
        assert_eq!(
            metric_sum(&m, "wirefold_flows_ended_total", &[("reason", reason)]),
            v.as_f64().unwrap(),
            "{reason}"
        );
    }
    assert_eq!(metric_sum(&m, "wirefold_flows_ended_total", &[]), n("flows_total"));
    // Malformed and skipped packets by reason: this input has both.
    assert!(n("malformed_total") > 0.0, "{s}");
    let malformed = s["malformed"].as_object().unwrap();
    for (reason, v) in malformed {
        assert_eq!(
            metric_sum(&m, "wirefold_malformed_packets_total", &[("reason", reason)]),
            v.as_f64().unwrap(),
            "{reason}"
        );
    }
    assert_eq!(metric_sum(&m, "wirefold_malformed_packets_total", &[]), n("malformed_total"));
    let skipped = s["skipped"].as_object().unwrap();
    assert!(!skipped.is_empty(), "{s}");
    for (reason, v) in skipped {
        assert_eq!(
            metric_sum(&m, "wirefold_skipped_packets_total", &[("reason", reason)]),
            v.as_f64().unwrap(),
            "{reason}"
        );
    }
    assert_eq!(metric_sum(&m, "wirefold_fragments_unmatched_total", &[]), n("fragments_unmatched"));
    assert_eq!(metric_sum(&m, "wirefold_active_flows", &[]), 0.0, "the table was flushed");
    // Export, stream and the embedded core.
    assert_eq!(metric_sum(&m, "wirefold_export_flows_total", &[]), n("flows_total"));
    assert_eq!(metric_sum(&m, "wirefold_embedded_flows_total", &[]), n("embedded"));
    assert_eq!(metric_sum(&m, "wirefold_export_batches_total", &[]), n("batches"));
    assert_eq!(metric_sum(&m, "wirefold_export_batch_bytes_total", &[]), n("batch_bytes"));
    assert!(metric_sum(&m, "wirefold_embed_batches_total", &[]) >= 1.0);
    assert_eq!(
        metric_sum(&m, "wirefold_embed_batch_seconds_count", &[]),
        metric_sum(&m, "wirefold_embed_batches_total", &[])
    );
    assert_eq!(metric_sum(&m, "wirefold_stream_batches_acked_total", &[]), s["stream"]["acked"].as_f64().unwrap());
    assert_eq!(metric_sum(&m, "wirefold_stream_batch_rtt_seconds_count", &[]), s["stream"]["acked"].as_f64().unwrap());
    assert_eq!(metric_sum(&m, "wirefold_stream_unacked_batches", &[]), 0.0);
    assert_eq!(metric_sum(&m, "wirefold_spool_batches", &[]), 0.0);
    assert_eq!(metric_sum(&m, "wirefold_core_flows_total", &[("sensor", "wirefold")]), n("flows_total"));
    assert_eq!(metric_sum(&m, "wirefold_core_batches_total", &[("result", "committed")]), n("batches"));
    assert_eq!(metric_sum(&m, "wirefold_core_store_seconds_count", &[]), n("batches"));
    // Replay packet times are historical: no packet-to-export latency is recorded.
    assert_eq!(metric_sum(&m, "wirefold_flow_export_latency_seconds_count", &[]), 0.0);
}

#[test]
fn core_metrics_count_batches_by_sensor_and_result() {
    let dir = scratch("core-metrics");
    let tokens = dir.join("tokens");
    write_secret(&tokens, "s1 token-s1-abcdef\n");
    let db = dir.join("core.db");
    let mut core = Proc::spawn(&[
        "core",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ]);
    let grpc = core.addr_after("listening on ");
    let metrics = core.addr_after("metrics on http://");
    let url = format!("http://{grpc}");
    let summary = dir.join("s.json");
    let http = pcap("zeek__http__bro.org.pcap");
    let mut args = vec!["replay", http.to_str().unwrap(), "--no-output", "--core", &url, "--token", "token-s1-abcdef"];
    let sj = summary.display().to_string();
    let data = dir.join("data").display().to_string();
    args.extend(["--sensor-id", "s1", "--batch-flows", "4", "--summary-json", &sj, "--data-dir", &data]);
    let out = wirefold(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = wirefold(&[
        "replay",
        http.to_str().unwrap(),
        "--no-output",
        "--no-embed",
        "--core",
        &url,
        "--token",
        "not-a-known-token",
        "--data-dir",
        &dir.join("bad").display().to_string(),
        "--drain-timeout",
        "1",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown token"), "{}", String::from_utf8_lossy(&bad.stderr));
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let batches = s["batches"].as_f64().unwrap();
    assert!(batches >= 3.0, "{s}");
    let (status, text) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    promtool_check(&text);
    let m = parse_metrics(&text);
    assert_eq!(metric_sum(&m, "wirefold_core_batches_total", &[("sensor", "s1"), ("result", "committed")]), batches);
    assert_eq!(metric_sum(&m, "wirefold_core_batches_total", &[("sensor", "s1"), ("result", "rejected")]), 0.0);
    assert_eq!(metric_sum(&m, "wirefold_core_flows_total", &[("sensor", "s1")]), s["flows_total"].as_f64().unwrap());
    assert!(metric_sum(&m, "wirefold_core_unauthenticated_total", &[]) >= 1.0);
    assert_eq!(metric_sum(&m, "wirefold_core_store_seconds_count", &[]), batches);
    assert_eq!(metric_sum(&m, "wirefold_core_queue_capacity", &[]), 64.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let seen = metric_sum(&m, "wirefold_core_sensor_last_seen_timestamp_seconds", &[("sensor", "s1")]);
    assert!(seen <= now && seen > now - 120.0, "last seen {seen}, now {now}");
    assert_eq!(metric_sum(&m, "wirefold_core_queue_depth", &[]), 0.0);
    assert_eq!(http_get(metrics, "/nothing").0, 404);
    let (st, stderr) = core.term_and_wait();
    assert!(st.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{} batches committed ({} flows)", batches as u64, s["flows_total"])),
        "the core's last line agrees with its metrics:\n{stderr}"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn promql(addr: SocketAddr, q: &str) -> Option<f64> {
    let (status, body) = http_get(addr, &format!("/api/v1/query?query={}", urlencode(q)));
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn a_prometheus_server_scrapes_a_running_replay() {
    let dir = scratch("prometheus");
    let tokens = dir.join("tokens");
    write_secret(&tokens, "sensor-a token-a-123456789\n");
    let mut core = Proc::spawn(&[
        "core",
        "--listen",
        "127.0.0.1:0",
        "--db",
        dir.join("core.db").to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ]);
    let grpc = core.addr_after("listening on ");
    let core_metrics = core.addr_after("metrics on http://");
    // 431 packets over 70 s of packet time, paced 5x: about 14 s of replay.
    let capture = pcap("zeek__ssh__sshguess.pcap");
    let summary = dir.join("s.json");
    let url = format!("http://{grpc}");
    let mut sensor = Proc::spawn(&[
        "replay",
        capture.to_str().unwrap(),
        "--speed",
        "5",
        "--no-output",
        "--core",
        &url,
        "--sensor-id",
        "sensor-a",
        "--token",
        "token-a-123456789",
        "--batch-age",
        "200ms",
        "--idle-timeout",
        "2s",
        "--data-dir",
        dir.join("data").to_str().unwrap(),
        "--summary-json",
        summary.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
        "--linger",
        "never",
    ]);
    let sensor_metrics = sensor.addr_after("metrics on http://");
    let web = free_port();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wirefold-sensor\n    static_configs:\n      - targets: ['{sensor_metrics}']\n  - job_name: wirefold-core\n    static_configs:\n      - targets: ['{core_metrics}']\n"
        ),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package `prometheus`; ./deploy/test.sh installs it)");
    let web: SocketAddr = format!("127.0.0.1:{web}").parse().unwrap();
    let until = Instant::now() + Duration::from_secs(40);
    let mut rate = None;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
        if TcpStream::connect(web).is_err() {
            continue;
        }
        if let Some(v) = promql(web, "sum(rate(wirefold_packets_total[5s]))").filter(|v| *v > 0.0) {
            rate = Some((v, summary.exists()));
            break;
        }
    }
    let up = promql(web, "sum(up{job=~\"wirefold-sensor|wirefold-core\"})");
    let _ = prom.kill();
    let _ = prom.wait();
    let (rate, finished) = rate.expect("PromQL never saw a packet rate above zero");
    assert!(!finished, "the rate must be seen while the replay runs");
    assert!(rate > 1.0 && rate < 1000.0, "paced replay of ~30 packets/s, Prometheus says {rate}");
    assert_eq!(up, Some(2.0), "both targets up");
    wait_for(&summary, Duration::from_secs(60));
    let (st, err) = sensor.term_and_wait();
    assert!(st.success(), "{err}");
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["packets"], 431);
    assert!(s["seconds"].as_f64().unwrap() > 10.0, "paced: {s}");
    let _ = core.term_and_wait();
}

#[test]
fn every_grafana_panel_queries_an_exported_metric() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/wirefold.json");
    let d: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("the dashboard is JSON");
    // Names the sensor and a core export (the embedded core exports the core's families).
    let (text, _, _) = replay_scrape("grafana", &[pcap("zeek__http__bro.org.pcap")]);
    let mut exported = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            exported.insert(name.to_string());
            if kind == "summary" {
                exported.insert(format!("{name}_sum"));
                exported.insert(format!("{name}_count"));
            }
        }
    }
    let panels: Vec<&Value> = d["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row").collect();
    assert!(panels.len() >= 12, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap();
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {title} has no queries"));
        assert!(!targets.is_empty(), "panel {title} has no queries");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .match_indices("wirefold_")
                .map(|(i, _)| {
                    let rest = &expr[i..];
                    &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
                })
                .collect();
            assert!(!names.is_empty(), "panel {title}: {expr} names no wirefold metric");
            for n in names {
                assert!(exported.contains(n), "panel {title} queries {n}, which nothing exports");
                used.insert(n.to_string());
            }
        }
    }
    // The dashboard covers what the issue asks for.
    for must in [
        "wirefold_packets_total",
        "wirefold_kernel_drops_total",
        "wirefold_ring_drops_total",
        "wirefold_active_flows",
        "wirefold_flows_ended_total",
        "wirefold_flow_export_latency_seconds",
        "wirefold_embed_batch_seconds",
        "wirefold_stream_batch_rtt_seconds",
        "wirefold_core_flows_total",
        "wirefold_core_store_seconds",
    ] {
        assert!(used.contains(must), "no panel shows {must}");
    }
}

#[test]
fn replay_draws_a_progress_bar_only_on_a_terminal() {
    let capture = pcap("zeek__ssh__sshguess.pcap");
    let cmd = format!("{} replay {} --speed 50 --no-output --no-embed", bin().display(), capture.display());
    let out = Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().expect("script (util-linux)");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains(" packets") && tty.contains("KiB/88.79 KiB"), "no progress bar on a terminal:\n{tty}");
    let plain = wirefold(&["replay", capture.to_str().unwrap(), "--speed", "50", "--no-output", "--no-embed"]);
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(plain.status.success());
    assert!(!err.contains("KiB/"), "a progress bar in a pipe:\n{err}");
    assert!(err.contains("packets      431"), "{err}");
}

#[test]
fn replay_stops_on_sigint_and_flushes_its_flows() {
    let dir = scratch("replay-sigint");
    let out = dir.join("flows.jsonl");
    let summary = dir.join("s.json");
    // 70 s of packet time in real time: stopped after about a second.
    let capture = pcap("zeek__ssh__sshguess.pcap");
    let mut p = Proc::spawn(&[
        "replay",
        capture.to_str().unwrap(),
        "--speed",
        "1",
        "--no-embed",
        "--out",
        out.to_str().unwrap(),
        "--summary-json",
        summary.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ]);
    let _ = p.addr_after("metrics on http://");
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    let (st, err) = p.term_and_wait();
    assert!(t.elapsed() < Duration::from_secs(5), "stopping took {:?}", t.elapsed());
    assert!(st.success(), "{err}");
    assert!(err.contains("stopped by signal; flushing flows"), "{err}");
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let packets = s["packets"].as_u64().unwrap();
    assert!(packets > 0 && packets < 431, "stopped part way: {s}");
    assert!(s["flows"]["shutdown"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["flows"]["eof"], 0, "{s}");
    let flows = json_lines(&std::fs::read(&out).unwrap());
    assert_eq!(flows.len() as u64, s["flows_total"].as_u64().unwrap());
    let in_flows: u64 =
        flows.iter().map(|f| f["fwd_packets"].as_u64().unwrap() + f["rev_packets"].as_u64().unwrap()).sum();
    assert_eq!(in_flows, s["flow_packets"].as_u64().unwrap(), "every packet read is in a flushed flow");
}
