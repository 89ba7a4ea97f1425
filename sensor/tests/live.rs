//! Live capture on real AF_PACKET sockets, over a veth pair in a network
//! namespace that each test creates (and removes, even on failure), with
//! traffic replayed by tcpreplay. Needs root (CI runs as root); set
//! `WIREFOLD_SKIP_LIVE=1` to skip on a machine without it.
mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn live_enabled() -> bool {
    if std::env::var_os("WIREFOLD_SKIP_LIVE").is_some() {
        eprintln!("WIREFOLD_SKIP_LIVE is set: skipping live capture test");
        return false;
    }
    // SAFETY-free check of the effective uid through the id command.
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "live capture tests need root (or set WIREFOLD_SKIP_LIVE=1)"
    );
    true
}

/// A network namespace with a veth pair `wfa` <-> `wfb`, removed on drop.
struct Netns {
    name: String,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Netns {
    fn new(tag: &str, up: bool) -> Self {
        let name = format!("wf{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        // No IPv6 on the test links: otherwise the kernel sends its own
        // router solicitations and MLD reports into the capture.
        run(ns.cmd("sysctl").args(["-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]));
        run(ns.cmd("ip").args(["link", "set", "lo", "up"]));
        run(ns.cmd("ip").args(["link", "add", "wfa", "type", "veth", "peer", "name", "wfb"]));
        for l in ["wfa", "wfb"] {
            run(ns.cmd("ip").args(["link", "set", l, "mtu", "9000"]));
            if up {
                run(ns.cmd("ip").args(["link", "set", l, "up"]));
            }
        }
        ns
    }

    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A running `wirefold capture`, stopped with SIGINT.
struct Sensor {
    child: Child,
    out: PathBuf,
    summary: PathBuf,
    /// The `/metrics` port (in the namespace's loopback), when asked for with `--metrics`.
    metrics_port: Option<u16>,
    ns: String,
}

impl Sensor {
    fn start(ns: &Netns, dir: &Path, args: &[&str]) -> Sensor {
        let out = dir.join("live.jsonl");
        let summary = dir.join("live-summary.json");
        let mut child = ns
            .cmd(bin())
            .env("ORT_DYLIB_PATH", ort_lib().expect("ONNX Runtime (./deploy/test.sh installs it)"))
            .args([
                "capture",
                "--iface",
                "wfb",
                "--idle-timeout",
                "never",
                "--active-timeout",
                "never",
                "--status-interval",
                "1",
            ])
            .args(["--out", out.to_str().unwrap(), "--summary-json", summary.to_str().unwrap()])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wirefold capture");
        // Wait until the sockets are bound (the sensor says so).
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let mut metrics_port = None;
        let t = Instant::now();
        loop {
            line.clear();
            if err.read_line(&mut line).unwrap() == 0 || t.elapsed() > Duration::from_secs(10) {
                panic!("wirefold capture did not start: {line}");
            }
            if let Some(rest) = line.split("metrics on http://127.0.0.1:").nth(1) {
                metrics_port = rest.split('/').next().and_then(|p| p.parse().ok());
            }
            if line.contains("capturing on wfb") {
                break;
            }
        }
        std::thread::spawn(move || {
            let mut rest = String::new();
            while err.read_line(&mut rest).unwrap_or(0) > 0 {}
            eprint!("{rest}");
        });
        Sensor { child, out, summary, metrics_port, ns: ns.name.clone() }
    }

    /// GET /metrics inside the namespace (bash's /dev/tcp; no curl needed).
    fn scrape(&self) -> String {
        let port = self.metrics_port.expect("started with --metrics");
        let script =
            format!("exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3");
        let out = Command::new("ip").args(["netns", "exec", &self.ns, "bash", "-c", &script]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.lines().next().is_some_and(|l| l.contains(" 200 ")), "scrape failed: {text}");
        text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
    }

    /// With `--metrics ... --linger never`: stop capturing, scrape the final
    /// counters, then stop serving.
    fn stop_and_scrape(mut self) -> (Vec<Value>, Value, String) {
        std::thread::sleep(Duration::from_millis(500));
        run(Command::new("kill").args(["-INT", &self.child.id().to_string()]));
        let t = Instant::now();
        while !self.summary.exists() {
            assert!(t.elapsed() < Duration::from_secs(20), "no summary after SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(self.child.try_wait().unwrap().is_none(), "--linger keeps /metrics up after the summary");
        let text = self.scrape();
        let out = self.out.clone();
        let (flows, s) = self.stop_inner(out);
        (flows, s, text)
    }

    fn stop(self) -> (Vec<Value>, Value) {
        std::thread::sleep(Duration::from_millis(500));
        let out = self.out.clone();
        self.stop_inner(out)
    }

    fn stop_inner(mut self, out: PathBuf) -> (Vec<Value>, Value) {
        run(Command::new("kill").args(["-INT", &self.child.id().to_string()]));
        let t = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "sensor did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "sensor exit status {status}");
        let flows = json_lines(&std::fs::read(&out).unwrap());
        let summary = serde_json::from_slice(&std::fs::read(&self.summary).unwrap()).unwrap();
        (flows, summary)
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Replay files into `wfa` at a moderate fixed rate; returns packets sent.
fn tcpreplay(ns: &Netns, files: &[PathBuf], pps: u32) -> u64 {
    let out = ns
        .cmd("tcpreplay")
        .args(["-i", "wfa", "--pps", &pps.to_string()])
        .args(files)
        .output()
        .expect("tcpreplay (./deploy/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "tcpreplay failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let failed: u64 = field(&text, "Failed packets:");
    assert_eq!(failed, 0, "tcpreplay could not send every packet: {text}");
    field(&text, "Successful packets:")
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no '{name}' in {text}"))
}

fn offline(files: &[PathBuf]) -> Vec<Value> {
    let mut args = vec!["replay", "--no-embed", "--idle-timeout", "never", "--active-timeout", "never"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = wirefold(&args);
    assert!(out.status.success());
    json_lines(&out.stdout)
}

/// No flow may be reported by two threads: a key split across threads would
/// be flushed at shutdown by each of them.
fn assert_no_split(flows: &[Value]) {
    let mut shutdown: BTreeMap<Key, u32> = BTreeMap::new();
    for f in flows.iter().filter(|f| f["end_reason"] == "shutdown") {
        let k = by_key(std::slice::from_ref(f)).into_keys().next().unwrap();
        *shutdown.entry(k).or_default() += 1;
    }
    let split: Vec<_> = shutdown.iter().filter(|(_, n)| **n > 1).collect();
    assert!(split.is_empty(), "flows reported by more than one thread: {split:?}");
}

fn live_equals_offline(tag: &str, args: &[&str], metrics: bool) {
    if !live_enabled() {
        return;
    }
    let files: Vec<PathBuf> = [
        "zeek__http-vlan-0.pcap",
        "zeek__q-in-q.pcap",
        "zeek__workshop_2011_browse.pcap",
        "zeek__tcp__handshake-reorder.pcap",
        "zeek__smtp.pcap",
        "zeek__dns__mdns.pcap",
        "zeek__icmp__5-pings.pcap",
        "zeek__ssh__sshguess.pcap",
    ]
    .iter()
    .map(|f| pcap(f))
    .collect();
    let ns = Netns::new(tag, true);
    let dir = scratch(&format!("live-{tag}"));
    let mut all: Vec<&str> = args.to_vec();
    if metrics {
        all.extend(["--metrics", "127.0.0.1:0", "--linger", "never"]);
    }
    let sensor = Sensor::start(&ns, &dir, &all);
    let sent = tcpreplay(&ns, &files, 4000);
    let (flows, summary) = if metrics {
        let (flows, summary, text) = sensor.stop_and_scrape();
        counters_agree(&text, &summary);
        (flows, summary)
    } else {
        sensor.stop()
    };
    let live = &summary["live"];
    assert_eq!(live["kernel_drops"], 0, "{summary}");
    assert_eq!(live["ring_drops"], 0, "{summary}");
    assert_eq!(summary["packets"].as_u64().unwrap(), sent, "packets seen must equal packets sent: {summary}");
    assert!(flows.iter().all(|f| ["fin", "rst", "shutdown"].contains(&f["end_reason"].as_str().unwrap())));
    // Embedding is on by default in capture too.
    assert!(flows.iter().all(|f| f["embedding"].as_array().is_some_and(|e| e.len() == 32) && f["score"].is_number()));
    assert_no_split(&flows);
    let want = by_key(&offline(&files));
    let got = by_key(&flows);
    assert!(want.len() > 20, "a meaningful flow set");
    let diff: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(5).collect();
    let extra: Vec<_> = got.iter().filter(|(k, _)| !want.contains_key(*k)).take(5).collect();
    assert!(
        diff.is_empty() && extra.is_empty(),
        "live differs from offline: missing/different {diff:?}, extra {extra:?}"
    );
}

/// The final `/metrics` of a capture agrees with the summary it printed.
fn counters_agree(text: &str, s: &Value) {
    let m = parse_metrics(text);
    let live = &s["live"];
    let n = |v: &Value| v.as_f64().unwrap();
    assert_eq!(metric_sum(&m, "wirefold_packets_total", &[("interface", "wfb")]), n(&s["packets"]));
    assert_eq!(metric_sum(&m, "wirefold_bytes_total", &[]), n(&s["bytes"]));
    assert_eq!(metric_sum(&m, "wirefold_kernel_packets_total", &[]), n(&live["kernel_packets"]));
    assert_eq!(metric_sum(&m, "wirefold_kernel_drops_total", &[]), n(&live["kernel_drops"]));
    assert_eq!(metric_sum(&m, "wirefold_kernel_freezes_total", &[]), n(&live["kernel_freezes"]));
    assert_eq!(metric_sum(&m, "wirefold_ring_drops_total", &[]), n(&live["ring_drops"]));
    let threads = n(&live["threads"]) as usize;
    for t in 0..threads {
        let t = t.to_string();
        assert!(metric_sum(&m, "wirefold_packets_total", &[("thread", &t)]) > 0.0, "thread {t} saw packets: {text}");
    }
    for (reason, v) in s["flows"].as_object().unwrap() {
        assert_eq!(metric_sum(&m, "wirefold_flows_ended_total", &[("reason", reason)]), n(v), "{reason}");
    }
    assert!(n(&s["flows"]["shutdown"]) > 0.0);
    assert_eq!(metric_sum(&m, "wirefold_malformed_packets_total", &[]), n(&s["malformed_total"]));
    assert_eq!(metric_sum(&m, "wirefold_active_flows", &[]), 0.0);
    // Live packet times are wall-clock times: every exported flow's packet-to-export latency is recorded.
    assert_eq!(metric_sum(&m, "wirefold_flow_export_latency_seconds_count", &[]), n(&s["flows_total"]));
    assert!(metric_sum(&m, "wirefold_flow_export_latency_seconds_sum", &[]) > 0.0);
}

#[test]
fn live_equals_offline_pipeline_two_threads() {
    live_equals_offline("pipe", &["--threads", "2", "--mode", "pipeline"], true);
}

#[test]
fn live_equals_offline_run_to_completion() {
    live_equals_offline("rtc", &["--threads", "1", "--mode", "run-to-completion", "--cpus", "0"], true);
}

#[test]
fn fanout_keeps_flows_and_fragments_together() {
    if !live_enabled() {
        return;
    }
    // Real fragmented DNS answers. (zeek's synthetic fragmented-N traces are
    // left out: their overlapping or incomplete fragment sets are withheld by
    // the kernel's reassembly, which the defrag flag puts in front of us.)
    let files: Vec<PathBuf> =
        ["zeek__dns-edns-ecs.pcap", "zeek__http__bro.org.pcap", "zeek__workshop_2011_browse.pcap"]
            .iter()
            .map(|f| pcap(f))
            .collect();
    let ns = Netns::new("fan", true);
    let dir = scratch("live-fan");
    let sensor = Sensor::start(&ns, &dir, &["--threads", "2"]);
    let sent = tcpreplay(&ns, &files, 4000);
    let (flows, summary) = sensor.stop();
    assert_no_split(&flows);
    assert_eq!(summary["fragments_unmatched"], 0, "no fragment lost its first fragment: {summary}");
    assert_eq!(summary["live"]["kernel_drops"], 0);
    let want = by_key(&offline(&files));
    let got = by_key(&flows);
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "the same flows");
    // The defrag flag hands each IPv4 datagram over whole: every fragment
    // beyond the first is one packet fewer and one 20-byte header fewer.
    let mut merged = 0;
    for (k, w) in &want {
        let g = &got[k];
        for d in [0, 2] {
            let fewer = w[d] - g[d];
            assert_eq!(w[d + 1] - g[d + 1], 20 * fewer, "{k:?}: offline {w:?} live {g:?}");
            merged += fewer;
        }
    }
    assert!(merged > 0, "the captures contain fragments");
    assert_eq!(summary["packets"].as_u64().unwrap() + merged, sent);
}

#[test]
fn setup_errors_are_one_clear_message_and_exit_2() {
    if !live_enabled() {
        return;
    }
    let ns = Netns::new("err", false);
    let check = |args: &[&str], needle: &str| {
        let out = ns.cmd(bin()).arg("capture").args(args).output().unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: expected '{needle}' in: {e}");
    };
    check(&["--iface", "nosuch0"], "no such interface 'nosuch0'");
    check(&["--iface", "wfb"], "interface 'wfb' is down");
    run(ns.cmd("ip").args(["link", "set", "wfb", "up"]));
    check(&["--iface", "wfb", "--block-size", "3000"], "ring block size 3000 is invalid");
    check(&["--iface", "wfb", "--filter", "tcp port eighty"], "filter expression 'tcp port eighty' does not compile");
    // Without CAP_NET_RAW (dropped from the bounding set, even as root).
    let out = ns
        .cmd("setpriv")
        .args(["--bounding-set", "-net_raw,-net_admin", "--inh-caps", "-all"])
        .arg(bin())
        .args(["capture", "--iface", "wfb"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("needs CAP_NET_RAW"), "{e}");
}
