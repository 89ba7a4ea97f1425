//! The agent API (MCP over Streamable HTTP) driven by the official MCP
//! Python SDK (`core/tests/agent_client.py`, run with the project venv:
//! `.local/venv/bin/python`, set up by deploy/lib.sh's setup_python from
//! embeddings/train/requirements.txt). Results are compared with the same
//! questions asked of SQLite directly.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wirefold_core::agent::{AgentConfig, AgentLimits, AgentTokens};
use wirefold_core::{serve, CoreConfig, Store, Tokens};
use wirefold_schema::rpc::ingest::ingest_client::IngestClient;
use wirefold_schema::rpc::{AckKind, FlowBatchBytes};
use wirefold_schema::{BatchBuilder, BatchMeta, FlowInfoRec, FlowRec};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;
const OBS: &str = "observer-token-1";
const MUT: &str = "operator-token-1";

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wirefold-agent-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let py = root.join(".local/venv/bin/python");
    assert!(
        py.exists(),
        "the agent API test needs the project venv at {}: run deploy/lib.sh's setup_python (it installs embeddings/train/requirements.txt, which includes mcp and jsonschema)",
        py.display()
    );
    let ok = std::process::Command::new(&py)
        .args(["-c", "import mcp, jsonschema; from mcp.client.streamable_http import streamable_http_client"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} lacks the MCP Python SDK: run `{} -m pip install -r embeddings/train/requirements.txt` (mcp, jsonschema)",
        py.display(),
        py.display()
    );
    py
}

/// `n` batches of 100 flows for a sensor: varied addresses, ports, scores, embeddings.
fn batches(sensor: &str, net: u8, n: u64, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let ports = [22u16, 53, 80, 443, 8080, 3389];
    (1..=n)
        .map(|seq| {
            let t = T0 + seq * S;
            let flows: Vec<FlowRec> = (0..100)
                .map(|i| {
                    let r = rnd();
                    let mut f = FlowRec {
                        ip_version: 4,
                        src_port: 30000 + (r % 20000) as u16,
                        dst_port: if i % 7 == 0 {
                            (r >> 20) as u16 % 60000 + 1024
                        } else {
                            ports[(r >> 8) as usize % ports.len()]
                        },
                        proto: if r % 5 == 0 { 17 } else { 6 },
                        fwd_packets: 1 + (r >> 12) as u32 % 50,
                        rev_packets: (r >> 24) as u32 % 40,
                        first_ns: t - 1000 - (i as u64) * 1000,
                        last_ns: t - (i as u64) * 1000,
                        score: (rnd() % 1000) as f32 / 1000.0,
                        ..Default::default()
                    };
                    f.fwd_bytes = f.fwd_packets as u64 * (60 + (r >> 32) % 1400);
                    f.rev_bytes = f.rev_packets as u64 * (60 + (r >> 40) % 1400);
                    f.src[..4].copy_from_slice(&[10, net, (rnd() % 4) as u8, (rnd() % 50) as u8]);
                    f.dst[..4].copy_from_slice(&[192, 168, (rnd() % 8) as u8, (rnd() % 4) as u8]);
                    let c = (rnd() % 4) as i64;
                    for v in f.embedding.iter_mut() {
                        *v = (c * 50 - 75 + (rnd() % 21) as i64 - 10) as i8;
                    }
                    f
                })
                .collect();
            let meta = BatchMeta {
                sensor_id: sensor.into(),
                seq,
                model_id: "m".into(),
                scale: 1.0 / 127.0,
                ..Default::default()
            };
            // Inspection facts (schema version 3) for the flows to port 443.
            let info: Vec<FlowInfoRec> = flows
                .iter()
                .enumerate()
                .filter(|(_, f)| f.dst_port == 443 && f.proto == 6)
                .map(|(i, _)| FlowInfoRec {
                    index: i as u32,
                    app: 1,
                    server_name: format!("s{}.example.com", i % 3),
                    ja4: JA4.into(),
                    ..Default::default()
                })
                .collect();
            BatchBuilder::new().build_with_info(&meta, &flows, &info).to_vec()
        })
        .collect()
}

const JA4: &str = "t13d1516h2_8daaf6152771_e5627efa2ab1";

async fn send_all(addr: std::net::SocketAddr, token: &str, bs: &[Vec<u8>]) {
    let mut client = IngestClient::connect(format!("http://{addr}")).await.unwrap();
    let (tx, rx) = mpsc::channel(8);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut acks = client.stream(req).await.unwrap().into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap().kind, AckKind::Resume);
    for b in bs {
        tx.send(FlowBatchBytes(b.clone().into())).await.unwrap();
        let a = acks.message().await.unwrap().unwrap();
        assert_eq!(a.kind, AckKind::Ack, "{}", a.reason);
    }
}

fn agent_tokens(d: &Path) -> AgentTokens {
    let p = d.join("agents");
    std::fs::write(&p, format!("# agents\nbot observe {OBS}\nops mutate {MUT}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = AgentTokens::load(&p).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    AgentTokens::load(&p).unwrap()
}

fn core_cfg(d: &Path, limits: AgentLimits) -> CoreConfig {
    let mut c = CoreConfig::new(
        d.join("core.db"),
        Tokens::parse("edge-1 edge-1-token\nedge-2 edge-2-token\nedge-3 edge-3-token\n").unwrap(),
    );
    let mut a = AgentConfig::new("127.0.0.1:0".parse().unwrap(), agent_tokens(d));
    a.limits = limits;
    c.agent = Some(a);
    c
}

fn run_client(mode: &str, url: &str, out: &Path) -> Value {
    run_client_with(mode, url, out, None)
}

fn run_client_with(mode: &str, url: &str, out: &Path, ca: Option<&Path>) -> Value {
    let py = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agent_client.py");
    let mut cmd = std::process::Command::new(py);
    cmd.arg(script).args([mode, url, OBS, MUT]).arg(out);
    if let Some(ca) = ca {
        cmd.env("WIREFOLD_MCP_CA", ca);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "agent_client.py {mode} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

fn ledger_actions(db: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(wirefold_core::ledger::default_path(db)).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "action" && e["body"]["action"] == "agent_call")
        .map(|e| e["body"]["detail"].clone())
        .collect()
}

fn keys(v: &Value) -> Vec<(String, i64, i64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| (f["sensor_id"].as_str().unwrap().to_string(), f["seq"].as_i64().unwrap(), f["idx"].as_i64().unwrap()))
        .collect()
}

fn sql_keys(c: &rusqlite::Connection, sql: &str) -> Vec<(String, i64, i64)> {
    let mut q = c.prepare(sql).unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(|r| r.unwrap()).collect()
}

fn embeddings(c: &rusqlite::Connection, since: i64) -> Vec<((String, i64, i64), [i8; 32])> {
    let mut q = c.prepare("SELECT sensor_id, seq, idx, embedding FROM flows WHERE last_ns >= ?1").unwrap();
    q.query_map([since], |r| {
        let b: Vec<u8> = r.get(3)?;
        let mut e = [0i8; 32];
        for (d, s) in e.iter_mut().zip(&b) {
            *d = *s as i8;
        }
        Ok(((r.get(0)?, r.get(1)?, r.get(2)?), e))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

fn smallest(mut d: Vec<u32>, k: usize) -> Vec<u32> {
    d.sort_unstable();
    d.truncate(k);
    d
}

/// The stored verdict of the flow a result row names (`sensor_id`, `seq`, `idx`).
fn stored_verdict(c: &rusqlite::Connection, row: &Value) -> String {
    c.query_row(
        "SELECT verdict FROM decisions WHERE sensor_id = ?1 AND seq = ?2 AND idx = ?3",
        rusqlite::params![
            row["sensor_id"].as_str().unwrap(),
            row["seq"].as_i64().unwrap(),
            row["idx"].as_i64().unwrap()
        ],
        |r| r.get(0),
    )
    .unwrap()
}

fn text_of(v: &Value) -> String {
    v["error"].as_str().unwrap_or_else(|| panic!("expected an error, got {v}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_observes_proposes_applies_and_rolls_back() {
    python();
    let d = dir("main");
    let db = d.join("core.db");
    let limits = AgentLimits { calls_per_s: 1000.0, burst: 1000.0, ..Default::default() };
    let core = serve("127.0.0.1:0".parse().unwrap(), core_cfg(&d, limits)).unwrap();
    send_all(core.addr, "edge-1-token", &batches("edge-1", 1, 15, 0x9e3779b97f4a7c15)).await;
    send_all(core.addr, "edge-2-token", &batches("edge-2", 2, 15, 0x1234_5678_9abc_def1)).await;
    let url = format!("http://{}/mcp", core.mcp_addr.unwrap());
    let out = d.join("main.json");
    let u2 = url.clone();
    let o2 = out.clone();
    let res = tokio::task::spawn_blocking(move || run_client("main", &u2, &o2)).await.unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();

    // tools/list: every tool with both schemas.
    let tools = res["tools"].as_object().unwrap();
    assert_eq!(tools.len(), 13, "{:?}", tools.keys().collect::<Vec<_>>());
    let calls = &res["calls"];

    // list_sensors = the sensors table.
    let s = &calls["list_sensors"]["result"]["sensors"];
    let want: Vec<(String, i64)> = {
        let mut q = c.prepare("SELECT sensor_id, flows FROM sensors ORDER BY sensor_id").unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(|r| r.unwrap()).collect()
    };
    let got: Vec<(String, i64)> = s
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["sensor_id"].as_str().unwrap().into(), x["flows"].as_i64().unwrap()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(want.iter().map(|w| w.1).sum::<i64>(), 3000);

    // query_flows: sensor, time range, port.
    // The inspection filters: app, server name (with a wildcard), JA4.
    let tls = calls["query_flows_tls"]["result"]["flows"].as_array().unwrap();
    assert!(!tls.is_empty());
    for r in tls {
        assert_eq!((r["app"].as_str(), r["dst_port"].as_u64(), r["proto"].as_u64()), (Some("tls"), Some(443), Some(6)));
        assert!(r["server_name"].as_str().unwrap().ends_with(".example.com"), "{r}");
        assert_eq!(r["ja4"], JA4);
    }
    let one = calls["query_flows_sni"]["result"]["flows"].as_array().unwrap();
    assert!(!one.is_empty() && one.len() < tls.len(), "{} of {}", one.len(), tls.len());
    assert!(one.iter().all(|r| r["server_name"] == "s1.example.com"));
    assert!(calls["query_flows_nojs"]["result"]["flows"].as_array().unwrap().is_empty(), "no flow has that JA4");
    for r in calls["query_flows"]["result"]["flows"].as_array().unwrap() {
        let tcp443 = r["dst_port"] == 443 && r["proto"] == 6;
        assert_eq!(r["app"] == "tls", tcp443, "{r}");
    }
    let got = keys(&calls["query_flows"]["result"]["flows"]);
    let want = sql_keys(
        &c,
        "SELECT sensor_id, seq, idx FROM flows WHERE sensor_id = 'edge-1' AND last_ns >= 1700000010000000000
         AND last_ns < 1700000020000000000 AND (src_port = 443 OR dst_port = 443) ORDER BY last_ns DESC, sensor_id, seq, idx LIMIT 50",
    );
    assert!(!want.is_empty());
    assert_eq!(got, want);
    // CIDR, decision, min score.
    let got = keys(&calls["query_flows_cidr"]["result"]["flows"]);
    let want = sql_keys(
        &c,
        "SELECT f.sensor_id, f.seq, f.idx FROM flows f JOIN decisions d USING (sensor_id, seq, idx)
         WHERE (hex(f.src_ip) LIKE '0A01%' OR hex(f.dst_ip) LIKE '0A01%') AND length(f.src_ip) = 4 AND d.verdict = 'promoted' AND f.score >= 0.5
         ORDER BY f.last_ns DESC, f.sensor_id, f.seq, f.idx LIMIT 1000",
    );
    assert!(want.len() > 10, "{}", want.len());
    assert_eq!(got, want);
    assert_eq!(calls["query_flows_cidr"]["result"]["truncated"], false);

    // top_talkers by destination.
    let got: Vec<(String, i64)> = calls["top_talkers"]["result"]["talkers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["addr"].as_str().unwrap().into(), t["bytes"].as_i64().unwrap()))
        .collect();
    let want: Vec<(String, i64)> = {
        let mut q = c
            .prepare("SELECT dst_ip, SUM(fwd_bytes + rev_bytes) b, COUNT(*) n FROM flows GROUP BY dst_ip ORDER BY b DESC, n DESC, dst_ip LIMIT 5")
            .unwrap();
        q.query_map([], |r| {
            let a: Vec<u8> = r.get(0)?;
            Ok((format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]), r.get(1)?))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
    };
    assert_eq!(got, want);

    // recent_anomalies: highest scores of edge-2, with their decisions.
    let an = &calls["recent_anomalies"]["result"]["flows"];
    let want = sql_keys(
        &c,
        "SELECT sensor_id, seq, idx FROM flows WHERE sensor_id = 'edge-2' ORDER BY score DESC, last_ns DESC, sensor_id, seq, idx LIMIT 10",
    );
    assert_eq!(keys(an), want);
    for f in an.as_array().unwrap() {
        assert_eq!(f["verdict"].as_str().unwrap(), stored_verdict(&c, f));
    }

    // similar_flows: brute force over SQLite gives the same distances.
    let all = embeddings(&c, 0);
    let me = all.iter().find(|(k, _)| *k == ("edge-1".to_string(), 3, 7)).unwrap().1;
    let l1 =
        |a: &[i8; 32], b: &[i8; 32]| a.iter().zip(b).map(|(x, y)| (*x as i32 - *y as i32).unsigned_abs()).sum::<u32>();
    let l2 =
        |a: &[i8; 32], b: &[i8; 32]| a.iter().zip(b).map(|(x, y)| ((*x as i32 - *y as i32).pow(2)) as u32).sum::<u32>();
    let want =
        smallest(all.iter().filter(|(k, _)| *k != ("edge-1".to_string(), 3, 7)).map(|(_, e)| l1(&me, e)).collect(), 5);
    let sim = &calls["similar_flows"]["result"];
    let got: Vec<u32> =
        sim["neighbours"].as_array().unwrap().iter().map(|n| n["distance"].as_u64().unwrap() as u32).collect();
    assert_eq!(got, want);
    assert_eq!(sim["scanned"], 2999);
    let since = embeddings(&c, 1_700_000_005_000_000_000);
    let want = smallest(since.iter().map(|(_, e)| l2(&[5i8; 32], e)).collect(), 8);
    let got: Vec<u32> = calls["similar_flows_vec"]["result"]["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["distance"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(got, want);

    // explain_decision: the decisions row and its ledger entries.
    let ex = &calls["explain_decision"]["result"];
    let v: String = c
        .query_row("SELECT verdict FROM decisions WHERE sensor_id = 'edge-1' AND seq = 3 AND idx = 7", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ex["decision"]["verdict"].as_str().unwrap(), v);
    let kinds: Vec<&str> =
        ex["ledger_entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"batch") && kinds.contains(&"config"), "{kinds:?}");
    if v == "promoted" {
        assert!(kinds.contains(&"promotion"), "{kinds:?}");
    }

    // verify_ledger, gate_status, metrics.
    assert_eq!(calls["verify_ledger"]["result"]["ok"], true, "{}", calls["verify_ledger"]);
    assert_eq!(calls["gate_status"]["result"]["version"], 1);
    let promoted: i64 =
        c.query_row("SELECT COUNT(*) FROM decisions WHERE verdict = 'promoted'", [], |r| r.get(0)).unwrap();
    let m: f64 = calls["metrics_snapshot"]["result"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["labels"]["verdict"] == "promoted")
        .map(|s| s["value"].as_f64().unwrap())
        .sum();
    assert_eq!(m as i64, promoted);

    // Bad input.
    let bad = &res["bad"];
    let u = bad["unknown_tool"].as_str().unwrap();
    assert!(u.contains("unknown tool 'no_such_tool'"), "{u}");
    assert!(text_of(&bad["schema_type"]).contains("limit: expected integer"), "{}", bad["schema_type"]);
    assert!(
        text_of(&bad["schema_range"]).contains("port: 70000 is above the maximum 65535"),
        "{}",
        bad["schema_range"]
    );
    assert!(text_of(&bad["schema_unknown"]).contains("country: unknown argument"), "{}", bad["schema_unknown"]);
    assert!(text_of(&bad["schema_required"]).contains("idx: required"), "{}", bad["schema_required"]);
    assert!(text_of(&bad["observe_mutates"]).contains("needs the mutate scope"), "{}", bad["observe_mutates"]);
    assert_eq!(res["no_token_status"], 401);
    assert_eq!(res["wrong_token_status"], 401);

    // Propose -> apply -> rollback changed the configuration, and the ledger has them.
    let mu = &res["mutate"];
    assert!((mu["threshold_after_apply"].as_f64().unwrap() - 0.9).abs() < 1e-6, "{}", mu["threshold_after_apply"]);
    assert_eq!(mu["threshold_after_rollback"].as_f64().unwrap(), 0.5);
    assert_eq!(mu["propose"]["status"], "done");
    assert_eq!(mu["propose"]["evaluation"]["batches"], 10);
    assert_eq!(mu["propose"]["evaluation"]["flows"], 1000);
    assert!(mu["propose"]["newly_held"].as_u64().unwrap() > 0, "{}", mu["propose"]);
    let versions = Store::open(&db, false).unwrap().gate_configs().unwrap();
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert!(
        versions[1].1.contains("0.9") && versions[1].2.contains("set gates.score.threshold = 0.9"),
        "{:?}",
        versions[1]
    );
    assert_eq!(versions[2].2, "rollback to version 1");
    assert_eq!(mu["version_after_rollback"], 3);

    let acts = ledger_actions(&db);
    let ok_mut: Vec<&str> = acts
        .iter()
        .filter(|a| a["agent"] == "ops" && a["outcome"] == "ok")
        .map(|a| a["tool"].as_str().unwrap())
        .filter(|t| ["propose_gate_change", "apply_proposal", "rollback_gates"].contains(t))
        .collect();
    assert_eq!(ok_mut, ["propose_gate_change", "apply_proposal", "rollback_gates"]);
    let refused: Vec<&Value> = acts.iter().filter(|a| a["agent"] == "bot" && a["tool"] == "rollback_gates").collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["outcome"], "refused");
    assert!(acts.iter().any(|a| a["tool"] == "no_such_tool" && a["outcome"] == "invalid"));
    for a in &acts {
        assert_eq!(a["args_sha256"].as_str().unwrap().len(), 64);
        assert!(a["latency_us"].is_u64());
    }
    // Every call of the script is in the ledger: 14 observe calls + 6 bad + 6 mutate-session calls.
    assert_eq!(acts.len(), 14 + 6 + 6, "{}", acts.len());
    let ok_rows: u64 = acts
        .iter()
        .filter(|a| a["tool"] == "query_flows" && a["outcome"] == "ok")
        .map(|a| a["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(
        ok_rows as usize,
        ["query_flows", "query_flows_cidr", "query_flows_tls", "query_flows_sni", "query_flows_nojs"]
            .iter()
            .map(|k| calls[*k]["result"]["flows"].as_array().unwrap().len())
            .sum::<usize>()
    );
    let head = Store::open(&db, false).unwrap().ledger_head().unwrap().unwrap();
    wirefold_core::verify_ledger(&wirefold_core::ledger::default_path(&db), Some(&head)).unwrap();

    // Ingest carries on.
    send_all(core.addr, "edge-3-token", &batches("edge-3", 3, 2, 77)).await;
    assert_eq!(Store::open(&db, false).unwrap().flow_count("edge-3").unwrap(), 200);
    core.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_with_a_retry_hint_and_are_recorded() {
    python();
    let d = dir("limits");
    let db = d.join("core.db");
    let limits = AgentLimits {
        calls_per_s: 0.5,
        burst: 5.0,
        mutations_per_hour: 1,
        query_budget: Duration::ZERO,
        ..Default::default()
    };
    let core = serve("127.0.0.1:0".parse().unwrap(), core_cfg(&d, limits)).unwrap();
    send_all(core.addr, "edge-1-token", &batches("edge-1", 1, 20, 5)).await;
    let url = format!("http://{}/mcp", core.mcp_addr.unwrap());
    let out = d.join("limits.json");
    let o2 = out.clone();
    let res = tokio::task::spawn_blocking(move || run_client("limits", &url, &o2)).await.unwrap();
    let b = text_of(&res["budget"]);
    assert!(b.contains("time budget exceeded") && b.contains("interrupted"), "{b}");
    assert!(res["mut1"].get("result").is_some(), "{}", res["mut1"]);
    let m2 = text_of(&res["mut2"]);
    assert!(m2.contains("mutation budget") && m2.contains("retry after"), "{m2}");
    let rate: Vec<&Value> = res["rate"].as_array().unwrap().iter().collect();
    let passed = rate.iter().filter(|r| r.get("result").is_some()).count();
    assert!((5..=7).contains(&passed), "{passed} of 12 passed");
    let refused = rate.iter().find(|r| r.get("error").is_some()).unwrap();
    let t = text_of(refused);
    assert!(t.contains("rate limit") && t.contains("retry after"), "{t}");
    let acts = ledger_actions(&db);
    assert!(acts.iter().any(|a| a["tool"] == "top_talkers" && a["outcome"] == "time_budget"));
    assert!(acts.iter().any(|a| a["tool"] == "rollback_gates" && a["outcome"] == "refused"));
    assert_eq!(acts.iter().filter(|a| a["agent"] == "bot" && a["outcome"] == "refused").count(), 12 - passed);
    // Ingest carries on.
    send_all(core.addr, "edge-2-token", &batches("edge-2", 2, 1, 9)).await;
    assert_eq!(Store::open(&db, false).unwrap().flow_count("edge-2").unwrap(), 100);
    core.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_proposal_is_evaluated_in_shadow_over_new_batches_on_a_tls_port() {
    python();
    let d = dir("live");
    let db = d.join("core.db");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let ca = d.join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let mut cfg = core_cfg(&d, AgentLimits { calls_per_s: 1000.0, burst: 1000.0, ..Default::default() });
    cfg.agent.as_mut().unwrap().tls = Some((ck.cert.pem().into_bytes(), ck.signing_key.serialize_pem().into_bytes()));
    let core = serve("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let all = batches("edge-1", 1, 23, 0x9e3779b97f4a7c15);
    send_all(core.addr, "edge-1-token", &all[..15]).await;
    let mcp = core.mcp_addr.unwrap();

    // Plain HTTP to the TLS port gets no HTTP answer (the handshake fails, counted).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut t = tokio::net::TcpStream::connect(mcp).await.unwrap();
        t.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), t.read_to_end(&mut buf)).await;
        assert!(!buf.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&buf));
    }

    let url = format!("https://127.0.0.1:{}/mcp", mcp.port());
    let out = d.join("live.json");
    let (o2, ca2) = (out.clone(), ca.clone());
    let client = tokio::task::spawn_blocking(move || run_client_with("live", &url, &o2, Some(&ca2)));
    // Once the proposal is made, new batches arrive.
    let ready = PathBuf::from(format!("{}.ready", out.display()));
    let t0 = std::time::Instant::now();
    while !ready.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the client did not propose");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_all(core.addr, "edge-1-token", &all[15..]).await;
    let res = client.await.unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();

    // Made while no batch arrived: evaluating, nothing seen; apply refused with a hint.
    assert_eq!(res["propose"]["status"], "evaluating", "{}", res["propose"]);
    assert_eq!(res["propose"]["evaluation"]["batches"], 0);
    let early = text_of(&res["apply_early"]);
    assert!(early.contains("still being evaluated: 0 of 5 batches") && early.contains("retry after"), "{early}");
    assert_eq!(res["status_early"]["result"]["status"], "evaluating");

    // Done after the next 5 stored batches: seqs 16..=20, 500 flows.
    let st = &res["status"]["result"];
    assert_eq!(st["status"], "done", "{st}");
    let ev = &st["evaluation"];
    assert_eq!(
        (ev["batches"].as_u64(), ev["batches_wanted"].as_u64(), ev["flows"].as_u64()),
        (Some(5), Some(5), Some(500))
    );
    let seqs: Vec<i64> = ev["batches_decided"].as_array().unwrap().iter().map(|b| b["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [16, 17, 18, 19, 20]);
    // The live side is what the core decided and stored for those batches.
    let live_promoted: i64 = c
        .query_row("SELECT COUNT(*) FROM decisions WHERE sensor_id = 'edge-1' AND seq BETWEEN 16 AND 20 AND verdict = 'promoted'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(st["live"]["promoted"].as_i64().unwrap(), live_promoted);
    assert_eq!(st["live"]["promoted"].as_u64().unwrap() + st["live"]["held"].as_u64().unwrap(), 500);
    assert_eq!(st["proposed"]["promoted"].as_u64().unwrap() + st["proposed"]["held"].as_u64().unwrap(), 500);
    // A stricter score threshold holds flows the live gates promoted, and says why.
    assert!(st["newly_held"].as_u64().unwrap() > 0, "{st}");
    let ex = st["examples"].as_array().unwrap();
    assert!(!ex.is_empty());
    for x in ex {
        assert_eq!(x["live"].as_str().unwrap(), stored_verdict(&c, x), "{x}");
        if x["proposed_gate"] == "score" {
            assert!(x["score"].as_f64().unwrap() < 0.9, "{x}");
        }
    }
    // Applied once done: a new configuration version.
    assert!(res["apply"].get("result").is_some(), "{}", res["apply"]);
    assert!((res["after"]["config"]["score"]["threshold"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    let tls_fail: f64 = res["tls_metric"]["samples"][0]["value"].as_f64().unwrap();
    assert!(tls_fail >= 1.0, "{}", res["tls_metric"]);
    let acts = ledger_actions(&db);
    let outcomes: Vec<(&str, &str)> = acts
        .iter()
        .filter(|a| a["agent"] == "ops")
        .map(|a| (a["tool"].as_str().unwrap(), a["outcome"].as_str().unwrap()))
        .filter(|(t, _)| *t != "gate_status" && *t != "metrics_snapshot")
        .collect();
    assert_eq!(
        outcomes,
        [
            ("propose_gate_change", "ok"),
            ("apply_proposal", "refused"),
            ("proposal_status", "ok"),
            ("proposal_status", "ok"),
            ("apply_proposal", "ok")
        ]
    );
    assert_eq!(Store::open(&db, false).unwrap().flow_count("edge-1").unwrap(), 2300);
    core.stop();
}

#[test]
fn query_flows_with_a_sensor_walks_the_time_index() {
    // With the sensor as an index term, SQLite takes the primary key and
    // sorts every flow of the sensor (129 ms on 1M flows instead of 0.4 ms).
    let d = dir("plan");
    let st = Store::open(&d.join("core.db"), false).unwrap();
    let a = serde_json::json!({"sensor": "edge-1", "since_ns": 1, "until_ns": 2, "port": 443, "limit": 100});
    let (sql, p) = wirefold_core::agent::tools::query_flows_sql(&a, &AgentLimits::default()).unwrap();
    wirefold_core::agent::tools::register_functions(st.conn(), 0).unwrap();
    let mut q = st.conn().prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let plan: Vec<String> =
        q.query_map(rusqlite::params_from_iter(p), |r| r.get::<_, String>(3)).unwrap().map(|r| r.unwrap()).collect();
    assert!(plan.iter().any(|l| l.contains("USING INDEX flows_by_time")), "{plan:?}");
}

#[test]
fn an_mcp_certificate_that_does_not_load_stops_the_core_with_the_reason() {
    let d = dir("badtls");
    let mut cfg = core_cfg(&d, AgentLimits::default());
    cfg.agent.as_mut().unwrap().tls = Some((b"not a certificate".to_vec(), b"not a key".to_vec()));
    let e = match serve("127.0.0.1:0".parse().unwrap(), cfg) {
        Ok(_) => panic!("a core started with a certificate that does not load"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("MCP port's TLS certificate or key") && e.contains("no CERTIFICATE block"), "{e}");
}
