//! Fault tests of sensor → core delivery, with real processes over real
//! gRPC on loopback: the core is killed with SIGKILL mid-stream and
//! restarted, or starts late; at the end the core's database holds every
//! exported flow exactly once (compared with the JSON the same replay wrote).
mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "edge-1-secret-token";

struct Core(Child);

impl Core {
    fn start(dir: &Path, port: u16, delay_ms: u64) -> Core {
        std::fs::write(dir.join("tokens"), format!("# test\nedge-1 {TOKEN}\n")).unwrap();
        let mut child = wirefold_cmd()
            .args(["core", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(dir.join("core.db"))
            .arg("--tokens")
            .arg(dir.join("tokens"))
            .args(["--store-delay-ms", &delay_ms.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let t = Instant::now();
        while !line.contains("listening on") {
            line.clear();
            assert!(
                err.read_line(&mut line).unwrap() > 0 && t.elapsed() < Duration::from_secs(10),
                "core did not start: {line}"
            );
        }
        std::thread::spawn(move || {
            let mut sink = String::new();
            while err.read_line(&mut sink).unwrap_or(0) > 0 {}
        });
        Core(child)
    }

    fn kill9(mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

fn files() -> Vec<PathBuf> {
    [
        "zeek__llc.pcap",
        "zeek__dns-edns-ecs.pcap",
        "zeek__workshop_2011_browse.pcap",
        "zeek__ssh__sshguess.pcap",
        "zeek__ftp__ipv6.pcap",
    ]
    .iter()
    .map(|f| pcap(f))
    .collect()
}

fn sensor(dir: &Path, port: u16) -> Child {
    wirefold_cmd()
        .args(["replay", "--core", &format!("http://127.0.0.1:{port}"), "--token", TOKEN, "--sensor-id", "edge-1"])
        .arg("--data-dir")
        .arg(dir.join("sensor"))
        .args(["--batch-flows", "8", "--drain-timeout", "60", "--out"])
        .arg(dir.join("flows.jsonl"))
        .arg("--summary-json")
        .arg(dir.join("summary.json"))
        .args(files())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

type Row = (u64, String, String, u64, u64, u64, u64, u64);

fn ip(b: &[u8]) -> String {
    match b.len() {
        4 => IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])).to_string(),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap())).to_string(),
    }
}

fn json_rows(dir: &Path) -> BTreeMap<Row, u32> {
    let mut m = BTreeMap::new();
    for f in json_lines(&std::fs::read(dir.join("flows.jsonl")).unwrap()) {
        let us = (f["first_ts"].as_f64().unwrap() * 1e6).round() as u64;
        let g = |k: &str| f[k].as_u64().unwrap();
        *m.entry((
            g("proto"),
            f["src_ip"].as_str().unwrap().to_string(),
            f["dst_ip"].as_str().unwrap().to_string(),
            us,
            g("fwd_packets"),
            g("rev_packets"),
            g("fwd_bytes"),
            g("rev_bytes"),
        ))
        .or_default() += 1;
    }
    m
}

fn db_rows(dir: &Path) -> BTreeMap<Row, u32> {
    let c = rusqlite::Connection::open(dir.join("core.db")).unwrap();
    let mut st = c.prepare("SELECT proto, src_ip, dst_ip, first_ns, fwd_packets, rev_packets, fwd_bytes, rev_bytes FROM flows WHERE sensor_id = 'edge-1'").unwrap();
    let mut m = BTreeMap::new();
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                ip(&r.get::<_, Vec<u8>>(1)?),
                ip(&r.get::<_, Vec<u8>>(2)?),
                ((r.get::<_, i64>(3)? as f64 / 1e9) * 1e6).round() as u64,
                r.get::<_, i64>(4)? as u64,
                r.get::<_, i64>(5)? as u64,
                r.get::<_, i64>(6)? as u64,
                r.get::<_, i64>(7)? as u64,
            ))
        })
        .unwrap();
    for r in rows {
        *m.entry(r.unwrap()).or_default() += 1;
    }
    m
}

fn wait(mut child: Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("sensor did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_exactly_once(dir: &Path) -> Value {
    let want = json_rows(dir);
    let got = db_rows(dir);
    let total: u32 = want.values().sum();
    assert!(total > 1000, "a meaningful number of flows ({total})");
    let missing: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(3).collect();
    let extra: Vec<_> = got.iter().filter(|(k, v)| want.get(*k) != Some(v)).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "database differs from the exported flows: missing {missing:?} extra {extra:?}"
    );
    let spool: Vec<_> = std::fs::read_dir(dir.join("sensor/spool/edge-1"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".fb"))
        .collect();
    assert!(spool.is_empty(), "the spool is empty afterwards");
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn core_killed_mid_stream_loses_and_duplicates_nothing() {
    let dir = scratch("fault-kill");
    let port = free_port();
    let core = Core::start(&dir, port, 8);
    let s = sensor(&dir, port);
    std::thread::sleep(Duration::from_millis(600));
    core.kill9();
    std::thread::sleep(Duration::from_millis(400));
    let core = Core::start(&dir, port, 8);
    std::thread::sleep(Duration::from_millis(700));
    core.kill9();
    std::thread::sleep(Duration::from_millis(300));
    let core = Core::start(&dir, port, 0);
    assert!(wait(s, Duration::from_secs(90)).success());
    core.stop();
    let summary = assert_exactly_once(&dir);
    let st = &summary["stream"];
    assert!(st["reconnects"].as_u64().unwrap() >= 2, "{st}");
    assert_eq!(st["spool_dropped"], 0);
    assert_eq!(st["spool_batches"], 0);
}

#[test]
fn an_outage_is_spooled_and_resent() {
    let dir = scratch("fault-outage");
    let port = free_port();
    let s = sensor(&dir, port);
    // No core for three seconds: everything goes to the spool.
    std::thread::sleep(Duration::from_secs(3));
    let spooled = std::fs::read_dir(dir.join("sensor/spool/edge-1")).map(|d| d.count()).unwrap_or(0);
    assert!(spooled > 10, "batches wait in the spool during the outage ({spooled})");
    let core = Core::start(&dir, port, 0);
    assert!(wait(s, Duration::from_secs(90)).success());
    core.stop();
    let summary = assert_exactly_once(&dir);
    assert!(summary["stream"]["reconnects"].as_u64().unwrap() >= 1);
}

#[test]
fn a_sensor_that_lost_its_data_directory_reuses_no_sequence_number() {
    // The core remembers the last batch of each sensor; a sensor whose spool
    // and sequence file are gone must not number from the start again, or its
    // new batches would be taken for resends and silently dropped.
    let dir = scratch("lost-data-dir");
    let port = free_port();
    let core = Core::start(&dir, port, 0);
    let mut per_run = Vec::new();
    for _ in 0..2 {
        let _ = std::fs::remove_dir_all(dir.join("sensor"));
        let st = wait(sensor(&dir, port), Duration::from_secs(60));
        assert!(st.success());
        let s: Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(s["stream"]["acked"], s["batches"], "{s}");
        assert_eq!(s["stream"]["rejected"], 0, "{s}");
        per_run.push(s["flows_total"].as_u64().unwrap());
    }
    core.stop();
    let stored: u32 = db_rows(&dir).values().sum();
    assert_eq!(stored as u64, per_run[0] + per_run[1], "both runs stored in full");
}
