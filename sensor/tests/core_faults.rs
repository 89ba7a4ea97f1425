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

struct Core(Child, std::sync::Arc<std::sync::Mutex<String>>);

impl Core {
    fn start(dir: &Path, port: u16, delay_ms: u64) -> Core {
        Core::start_with(dir, port, delay_ms, None, &[])
    }

    /// Start `wirefold core` (under `prlimit --nofile=N` when given) with extra flags.
    fn start_with(dir: &Path, port: u16, delay_ms: u64, nofile: Option<u32>, extra: &[&str]) -> Core {
        write_secret(&dir.join("tokens"), &format!("# test\nedge-1 {TOKEN}\n"));
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin());
                c
            }
            None => wirefold_cmd(),
        };
        let mut child = cmd
            .args(["core", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(dir.join("core.db"))
            .arg("--tokens")
            .arg(dir.join("tokens"))
            .args(["--store-delay-ms", &delay_ms.to_string()])
            .args(extra)
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
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let l2 = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).unwrap_or(0) > 0 {
                l2.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Core(child, log)
    }

    fn log(&self) -> String {
        self.1.lock().unwrap().clone()
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
    sensor_with(dir, port, Stdio::null())
}

fn sensor_with(dir: &Path, port: u16, stderr: Stdio) -> Child {
    wirefold_cmd()
        .args(["replay", "--core", &format!("http://127.0.0.1:{port}"), "--token", TOKEN, "--sensor-id", "edge-1"])
        .arg("--data-dir")
        .arg(dir.join("sensor"))
        .args(["--batch-flows", "8", "--drain-timeout", "60", "--out"])
        .arg(dir.join("flows.jsonl"))
        .arg("--summary-json")
        .arg(dir.join("summary.json"))
        .args(files())
        .stderr(stderr)
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

#[test]
fn a_database_locked_mid_stream_loses_and_doubles_nothing() {
    // Another process holds the SQLite write lock for 12 s while a sensor
    // streams. The store retries for 2 s per batch, then answers UNAVAILABLE;
    // the sensor keeps those batches and resends them: nothing is lost.
    let dir = scratch("fault-locked");
    let port = free_port();
    let core = Core::start_with(&dir, port, 8, None, &["--store-retry", "2"]);
    let s = sensor_with(&dir, port, Stdio::piped());
    std::thread::sleep(Duration::from_millis(500));
    let conn = rusqlite::Connection::open(dir.join("core.db")).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::thread::sleep(Duration::from_secs(12));
    conn.execute_batch("COMMIT").unwrap();
    drop(conn);
    let out = s.wait_with_output().unwrap();
    assert!(out.status.success());
    let sensor_log = String::from_utf8_lossy(&out.stderr).to_string();
    let core_log = core.log();
    core.stop();
    let summary = assert_exactly_once(&dir);
    let st = &summary["stream"];
    assert_eq!(st["rejected"], 0, "{st}");
    assert!(core_log.contains("STORE ERROR"), "the core says so loudly: {core_log}");
    assert!(sensor_log.contains("stays in the spool and is resent"), "{sensor_log}");
}

#[test]
fn idle_connections_on_both_ports_exhaust_no_core() {
    // A core with 512 descriptors and a connection cap above that (so the
    // accept loop meets EMFILE); 2,000 idle connections on the gRPC port and
    // 2,000 on the metrics port. The core must not crash or spin; once the
    // 3 s handshake timeout closes the idle ones, a normal sensor is served
    // and /metrics answers.
    let dir = scratch("fault-fds");
    let port = free_port();
    let mport = free_port();
    let mut core = Core::start_with(
        &dir,
        port,
        0,
        Some(512),
        &["--max-connections", "5000", "--handshake-timeout", "3", "--metrics", &format!("127.0.0.1:{mport}")],
    );
    let held: Vec<std::net::TcpStream> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                sc.spawn(move || {
                    let p = if i % 2 == 0 { port } else { mport };
                    let addr: std::net::SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
                    (0..500)
                        .filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(held.len() > 1000, "{} connections opened", held.len());
    let t = Instant::now();
    let st = wait(sensor(&dir, port), Duration::from_secs(60));
    let served_in = t.elapsed();
    assert!(st.success());
    assert!(core.0.try_wait().unwrap().is_none(), "the core is alive");
    // /metrics answers once its 5 s handshake timeout has closed the idle
    // connections that fill its cap (a new one meanwhile is closed at once).
    let maddr: std::net::SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    let t = Instant::now();
    let body = loop {
        use std::io::{Read, Write};
        let got = std::net::TcpStream::connect(maddr).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        match got {
            Ok(out) if out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200") => {
                break out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
            }
            _ if t.elapsed() < Duration::from_secs(20) => std::thread::sleep(Duration::from_millis(500)),
            other => panic!("/metrics did not answer within 20 s: {other:?}"),
        }
    };
    eprintln!("/metrics answered {:?} after the sensor finished", t.elapsed());
    let m = parse_metrics(&body);
    let errors = metric_sum(&m, "wirefold_listen_accept_errors_total", &[("port", "grpc")]);
    let timed_out = metric_sum(&m, "wirefold_listen_timed_out_total", &[]);
    assert!(errors > 0.0, "the accept loop met EMFILE and backed off");
    assert!(timed_out > 100.0, "idle connections were closed ({timed_out})");
    eprintln!(
        "held {} connections; sensor served in {served_in:?}; {errors} accept errors, {timed_out} timed out",
        held.len()
    );
    drop(held);
    assert!(!core.log().contains("panicked"), "{}", core.log());
    core.stop();
    assert_exactly_once(&dir);
}

type Decision = (u64, String, String, u64, u64, u64, String, Option<String>, Option<String>, String);

/// Every flow's gate decision, keyed by the flow (sequence numbers differ
/// between runs: new spools number from the clock).
fn decisions(dir: &Path) -> BTreeMap<Decision, u32> {
    let c = rusqlite::Connection::open(dir.join("core.db")).unwrap();
    let mut st = c
        .prepare(
            "SELECT f.proto, f.src_ip, f.dst_ip, f.first_ns, f.src_port, f.dst_port, d.verdict, d.gate, d.reason, d.shadow
             FROM decisions d JOIN flows f USING (sensor_id, seq, idx) WHERE d.sensor_id = 'edge-1'",
        )
        .unwrap();
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                ip(&r.get::<_, Vec<u8>>(1)?),
                ip(&r.get::<_, Vec<u8>>(2)?),
                r.get::<_, i64>(3)? as u64,
                r.get::<_, i64>(4)? as u64,
                r.get::<_, i64>(5)? as u64,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, String>(9)?,
            ))
        })
        .unwrap();
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r.unwrap()).or_default() += 1;
    }
    m
}

#[test]
fn gate_decisions_survive_kill_9_and_the_ledger_verifies() {
    // An uninterrupted run, and one whose core is killed twice mid-stream:
    // the same flows get the same decisions, every flow exactly one, and the
    // interrupted run's ledger verifies against its database.
    // Today's score is a small reconstruction error: a threshold inside its
    // range makes both verdicts occur.
    let gates = |dir: &Path| {
        let p = dir.join("gates.toml");
        std::fs::write(&p, "[gates.score]\nthreshold = 0.004\n[gates.novelty]\nmin_distance = 16\n").unwrap();
        p.to_str().unwrap().to_string()
    };
    let clean = scratch("gates-clean");
    let port = free_port();
    let core = Core::start_with(&clean, port, 0, None, &["--config", &gates(&clean)]);
    assert!(wait(sensor(&clean, port), Duration::from_secs(90)).success());
    core.stop();
    let want = decisions(&clean);
    assert!(want.len() > 500, "{} decisions", want.len());
    assert!(want.keys().any(|d| d.6 == "promoted") && want.keys().any(|d| d.6 == "held"), "both verdicts occur");

    let dir = scratch("gates-kill");
    let port = free_port();
    let g = gates(&dir);
    let core = Core::start_with(&dir, port, 8, None, &["--config", &g]);
    let s = sensor(&dir, port);
    std::thread::sleep(Duration::from_millis(600));
    core.kill9();
    let core = Core::start_with(&dir, port, 8, None, &["--config", &g]);
    std::thread::sleep(Duration::from_millis(700));
    core.kill9();
    let core = Core::start_with(&dir, port, 0, None, &["--config", &g]);
    assert!(wait(s, Duration::from_secs(90)).success());
    core.stop();
    assert_exactly_once(&dir);
    let got = decisions(&dir);
    assert_eq!(got.values().sum::<u32>(), want.values().sum::<u32>(), "one decision per flow");
    let diff: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(3).collect();
    assert!(diff.is_empty(), "decisions differ after kill -9: {diff:?}");
    let ledger = dir.join("core.db.ledger.jsonl");
    let out = wirefold_cmd()
        .args(["core", "ledger", "verify"])
        .arg(&ledger)
        .arg("--db")
        .arg(dir.join("core.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Tampering: an edited entry is named.
    let text = std::fs::read_to_string(&ledger).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 10);
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[5] = edited[5].replacen("\"kind\"", "\"kind \"", 1);
    let bad = dir.join("edited.jsonl");
    std::fs::write(&bad, edited.join("\n") + "\n").unwrap();
    let out = wirefold_cmd().args(["core", "ledger", "verify"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("line 6"), "{e}");
}

#[test]
fn a_bad_gate_configuration_is_refused_naming_it() {
    let dir = scratch("gates-badcfg");
    write_secret(&dir.join("tokens"), &format!("edge-1 {TOKEN}\n"));
    let cfg = dir.join("core.toml");
    std::fs::write(
        &cfg,
        format!(
            "[core]\nlisten = \"127.0.0.1:0\"\ndb = \"{}\"\ntokens = \"{}\"\n[gates.score]\nmode = \"sometimes\"\n",
            dir.join("core.db").display(),
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    for args in [vec!["check-config", cfg.to_str().unwrap()], vec!["core", "--config", cfg.to_str().unwrap()]] {
        let out = wirefold_cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("sometimes") && e.contains("enforce"), "{args:?}: {e}");
    }
}
