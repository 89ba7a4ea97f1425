//! The gates and the ledger through the real gRPC server: golden replay,
//! restart recovery, the admin endpoint.
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wirefold_core::gates::{GatesConfig, Mode};
use wirefold_core::{admin_request, serve, AdminCommand, AdminListen, CoreConfig, Store, Tokens};
use wirefold_schema::rpc::ingest::ingest_client::IngestClient;
use wirefold_schema::rpc::{AckKind, FlowBatchBytes};
use wirefold_schema::{BatchBuilder, BatchMeta, FlowRec};

const TOKEN: &str = "edge-1-token";
const ADMIN: &str = "admin-secret";
const S: u64 = 1_000_000_000;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wirefold-gates-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fixed sequence: 30 batches of 60 flows, 1 s of batch time apart, a
/// flood of one class from batch 20 on.
fn batches() -> Vec<Vec<u8>> {
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (1..=30u64)
        .map(|seq| {
            let t = 1_700_000_000 * S + seq * S;
            let flows: Vec<FlowRec> = (0..60)
                .map(|i| {
                    let flood = seq >= 20 && i % 2 == 0;
                    let mut f = FlowRec {
                        ip_version: 4,
                        src_port: 40000 + i as u16,
                        dst_port: if flood { 53 } else { (rnd() % 8) as u16 + 1 },
                        proto: if flood { 17 } else { 6 },
                        fwd_packets: 2,
                        fwd_bytes: 120,
                        first_ns: t - 1000,
                        last_ns: t,
                        score: (rnd() % 1000) as f32 / 1000.0,
                        ..Default::default()
                    };
                    f.src[..4].copy_from_slice(&[10, 0, 0, i as u8]);
                    f.dst[..4].copy_from_slice(&[192, 168, (rnd() % 4) as u8, 1]);
                    for v in f.embedding.iter_mut() {
                        *v = (rnd() % 120) as i8 - 60;
                    }
                    f
                })
                .collect();
            let meta = BatchMeta {
                sensor_id: "edge-1".into(),
                seq,
                model_id: "m".into(),
                scale: 1.0 / 127.0,
                ..Default::default()
            };
            BatchBuilder::new().build(&meta, &flows).to_vec()
        })
        .collect()
}

fn gates() -> GatesConfig {
    let mut g = GatesConfig::default();
    g.score.threshold = 0.3;
    g.novelty.min_distance = 900;
    g.burst.min_count = 5;
    g.burst.keep_one_in = 4;
    g.budget.per_window = 30;
    g.budget.window_secs = 1;
    g.budget.mode = Mode::Shadow;
    g.drift.window_secs = 2;
    g.drift.min_flows = 50;
    g.ledger.hold_one_in = 7;
    g
}

async fn send_all(addr: std::net::SocketAddr, bs: &[Vec<u8>]) {
    let mut client = IngestClient::connect(format!("http://{addr}")).await.unwrap();
    let (tx, rx) = mpsc::channel(8);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let mut acks = client.stream(req).await.unwrap().into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap().kind, AckKind::Resume);
    for b in bs {
        tx.send(FlowBatchBytes(b.clone().into())).await.unwrap();
        let a = acks.message().await.unwrap().unwrap();
        assert_eq!(a.kind, AckKind::Ack, "{}", a.reason);
    }
}

fn cfg(db: &Path) -> CoreConfig {
    let mut c = CoreConfig::new(db.to_path_buf(), Tokens::single("edge-1", TOKEN));
    c.gates = gates();
    c
}

fn decisions(db: &Path) -> String {
    let s = Store::open(db, false).unwrap();
    let mut q = s
        .conn()
        .prepare("SELECT sensor_id, seq, idx, verdict, gate, reason, shadow, shadow_reason, config_version FROM decisions ORDER BY sensor_id, seq, idx")
        .unwrap();
    let rows = q
        .query_map([], |r| {
            Ok(format!(
                "{}|{}|{}|{}|{:?}|{:?}|{}|{:?}|{}",
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, i64>(8)?
            ))
        })
        .unwrap();
    rows.map(|r| r.unwrap() + "\n").collect()
}

async fn run(name: &str, restarts: &[usize]) -> (String, Vec<u8>) {
    let d = dir(name);
    let db = d.join("core.db");
    let bs = batches();
    let mut from = 0usize;
    for &cut in restarts.iter().chain(std::iter::once(&bs.len())) {
        let core = serve("127.0.0.1:0".parse().unwrap(), cfg(&db)).unwrap();
        // A resend of the last batch before the cut decides nothing twice.
        let start = from.saturating_sub(1);
        send_all(core.addr, &bs[start..cut]).await;
        core.stop();
        from = cut;
    }
    let ledger = wirefold_core::ledger::default_path(&db);
    let head = Store::open(&db, false).unwrap().ledger_head().unwrap().unwrap();
    let rep = wirefold_core::verify_ledger(&ledger, Some(&head)).unwrap();
    assert_eq!(rep.head, head);
    (decisions(&db), std::fs::read(&ledger).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_replay_is_byte_identical_and_restarts_change_nothing() {
    let (d1, l1) = run("golden1", &[]).await;
    let (d2, l2) = run("golden2", &[]).await;
    assert_eq!(d1, d2);
    assert_eq!(l1, l2, "byte-identical ledger");
    assert_eq!(d1.lines().count(), 30 * 60);
    let text = String::from_utf8(l1.clone()).unwrap();
    for kind in ["\"kind\":\"config\"", "\"kind\":\"promotion\"", "\"kind\":\"hold\"", "\"kind\":\"batch\""] {
        assert!(text.contains(kind), "{kind}");
    }
    for gate in ["|Some(\"score\")|", "|Some(\"novelty\")|", "|Some(\"burst\")|"] {
        assert!(d1.contains(gate), "{gate} held some flows");
    }
    assert!(d1.contains("|budget|"), "the shadow budget would have held some");
    // Stopped and restarted twice mid-stream (with a resend each time): the
    // same decisions and the same ledger, byte for byte.
    let (d3, l3) = run("restarts", &[9, 21]).await;
    assert_eq!(d1, d3);
    assert_eq!(l1, l3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_changes_rolls_back_and_refuses() {
    let d = dir("admin");
    let db = d.join("core.db");
    let mut c = cfg(&db);
    c.admin = Some(AdminListen { addr: "127.0.0.1:0".parse().unwrap(), token: ADMIN.into() });
    let core = serve("127.0.0.1:0".parse().unwrap(), c).unwrap();
    let a = core.admin_addr.unwrap();
    send_all(core.addr, &batches()[..3]).await;
    let r = tokio::task::spawn_blocking(move || {
        let show = admin_request(a, ADMIN, &AdminCommand::Show).unwrap();
        assert!(show.contains("\"version\":1") && show.contains("gates.score.threshold = 0.3"), "{show}");
        assert!(show.contains("\"sensor\":\"edge-1\""), "{show}");
        let wrong = admin_request(a, "nope", &AdminCommand::Show).unwrap_err();
        assert!(matches!(wrong, wirefold_core::AdminError::Refused { status: 401, .. }), "{wrong}");
        let set = AdminCommand::Set { gate: "score".into(), key: "threshold".into(), value: "0.9".into() };
        assert!(admin_request(a, ADMIN, &set).unwrap().contains("\"version\":2"));
        let bad = AdminCommand::Set { gate: "score".into(), key: "mode".into(), value: "sometimes".into() };
        let e = admin_request(a, ADMIN, &bad).unwrap_err().to_string();
        assert!(e.contains("gates.score.mode") && e.contains("enforce | shadow | off"), "{e}");
        let bad = AdminCommand::Set { gate: "budget".into(), key: "per_window".into(), value: "0".into() };
        assert!(admin_request(a, ADMIN, &bad).unwrap_err().to_string().contains("gates.budget.per_window = 0"));
        let e = admin_request(a, ADMIN, &AdminCommand::Rollback { version: 9 }).unwrap_err().to_string();
        assert!(e.contains("no configuration version 9"), "{e}");
        assert!(admin_request(a, ADMIN, &AdminCommand::Rollback { version: 1 }).unwrap().contains("\"version\":3"));
        assert!(admin_request(a, ADMIN, &AdminCommand::Ack { sensor: "edge-1".into() }).is_ok());
        assert!(admin_request(a, ADMIN, &AdminCommand::Ack { sensor: "ghost".into() }).is_err());
        admin_request(a, ADMIN, &AdminCommand::Show).unwrap()
    })
    .await
    .unwrap();
    assert!(r.contains("\"version\":3") && r.contains("rollback to version 1"), "{r}");
    let text = core.counters.exposition().encode();
    for m in [
        "wirefold_core_gate_decisions_total{gate=\"score\",mode=\"enforce\",verdict=\"hold\"}",
        "wirefold_core_reservoir_embeddings{sensor=\"edge-1\"}",
        "wirefold_core_gates_config_version 3",
        "wirefold_core_budget_remaining{sensor=\"edge-1\"}",
    ] {
        assert!(text.contains(m), "{m}\n{text}");
    }
    core.stop();
    let ledger = std::fs::read_to_string(wirefold_core::ledger::default_path(&db)).unwrap();
    assert_eq!(ledger.matches("\"kind\":\"config\"").count(), 3);
    assert_eq!(ledger.matches("\"kind\":\"admin_refused\"").count(), 4);
    assert_eq!(ledger.matches("\"kind\":\"drift_ack\"").count(), 1);
    let head = Store::open(&db, false).unwrap().ledger_head().unwrap();
    wirefold_core::verify_ledger(&wirefold_core::ledger::default_path(&db), head.as_ref()).unwrap();
    // Restarted with the configuration it started with: version 3 (= 1) stays in force, no new version.
    let core = serve("127.0.0.1:0".parse().unwrap(), cfg(&db)).unwrap();
    core.stop();
    let ledger = std::fs::read_to_string(wirefold_core::ledger::default_path(&db)).unwrap();
    assert_eq!(ledger.matches("\"kind\":\"config\"").count(), 3);
}
