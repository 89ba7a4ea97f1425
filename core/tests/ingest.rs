//! The core's ingest over real gRPC on loopback: bad input is refused with a
//! status and a reason while the stream and the core go on; backpressure
//! keeps memory bounded and loses nothing.
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use wirefold_core::{serve, CoreConfig, Store, Tokens};
use wirefold_schema::rpc::ingest::ingest_client::IngestClient;
use wirefold_schema::rpc::{Ack, AckKind, FlowBatchBytes};
use wirefold_schema::{BatchBuilder, BatchMeta, FlowRec};

const TOKEN: &str = "edge-1-token";

fn db(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wirefold-core-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.join("core.db")
}

fn batch(sensor: &str, seq: u64, n: usize) -> Vec<u8> {
    let flows: Vec<FlowRec> = (0..n)
        .map(|i| {
            let mut f = FlowRec {
                ip_version: 4,
                src_port: i as u16,
                dst_port: 443,
                proto: 6,
                fwd_packets: 2,
                first_ns: 1_000 + i as u64,
                last_ns: 2_000,
                ..Default::default()
            };
            f.src[..4].copy_from_slice(&[10, 1, (seq % 256) as u8, i as u8]);
            f
        })
        .collect();
    let meta =
        BatchMeta { sensor_id: sensor.into(), seq, model_id: "m".into(), scale: 1.0 / 127.0, ..Default::default() };
    BatchBuilder::new().build(&meta, &flows).to_vec()
}

struct Conn {
    tx: mpsc::Sender<FlowBatchBytes>,
    acks: tonic::Streaming<Ack>,
}

async fn open(url: &str, token: Option<&str>) -> Result<(Conn, u64), tonic::Status> {
    let mut client = IngestClient::connect(url.to_string()).await.expect("connect");
    let (tx, rx) = mpsc::channel(64);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(t) = token {
        let v: MetadataValue<_> = format!("Bearer {t}").parse().unwrap();
        req.metadata_mut().insert("authorization", v);
    }
    let mut acks = client.stream(req).await?.into_inner();
    let first = acks.message().await?.expect("a resume point");
    assert_eq!(first.kind, AckKind::Resume);
    Ok((Conn { tx, acks }, first.seq))
}

impl Conn {
    async fn send(&mut self, b: Vec<u8>) -> Ack {
        self.tx.send(FlowBatchBytes(b.into())).await.unwrap();
        self.acks.message().await.expect("stream goes on").expect("an answer")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_core_goes_on() {
    let path = db("bad");
    let core = serve("127.0.0.1:0".parse().unwrap(), {
        let mut c = CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN));
        c.max_message = 1 << 20;
        c
    })
    .unwrap();
    let url = format!("http://{}", core.addr);

    // Missing and wrong tokens: UNAUTHENTICATED, nothing stored.
    let e = open(&url, None).await.err().expect("refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(e.message().contains("missing bearer token"), "{}", e.message());
    let e = open(&url, Some("not-a-valid-token")).await.err().expect("refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    let (mut c, resume) = open(&url, Some(TOKEN)).await.unwrap();
    assert_eq!(resume, 0);
    // A batch that fails verification.
    let a = c.send(b"definitely not a flatbuffer".to_vec()).await;
    assert_eq!((a.kind, a.code), (AckKind::Rejected, tonic::Code::InvalidArgument as i32 as u8));
    assert!(a.reason.contains("verification") || a.reason.contains("identifier"), "{}", a.reason);
    // A wrong schema version (flip the version field through the builder's output).
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let sid = fbb.create_string("edge-1");
    let root = wirefold_schema::fb::FlowBatch::create(
        &mut fbb,
        &wirefold_schema::fb::FlowBatchArgs { sensor_id: Some(sid), seq: 1, schema_version: 99, ..Default::default() },
    );
    wirefold_schema::fb::finish_flow_batch_buffer(&mut fbb, root);
    let a = c.send(fbb.finished_data().to_vec()).await;
    assert_eq!(a.kind, AckKind::Rejected);
    assert!(a.reason.contains("schema version 99"), "{}", a.reason);
    // A batch naming another sensor.
    let a = c.send(batch("edge-2", 1, 3)).await;
    assert_eq!((a.kind, a.code), (AckKind::Rejected, tonic::Code::PermissionDenied as i32 as u8));
    // The stream goes on: a good batch is stored and acknowledged.
    let a = c.send(batch("edge-1", 1, 5)).await;
    assert_eq!((a.kind, a.seq), (AckKind::Ack, 1));
    // A resend changes nothing.
    let a = c.send(batch("edge-1", 1, 5)).await;
    assert_eq!((a.kind, a.seq), (AckKind::Ack, 1));
    // An oversize message ends that stream with a status...
    c.tx.send(FlowBatchBytes(vec![0u8; 2 << 20].into())).await.unwrap();
    let err = c.acks.message().await.expect_err("oversize refused");
    assert!(matches!(err.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted), "{err:?}");
    assert!(
        err.message().contains("message length too large") || err.message().contains("too large"),
        "{}",
        err.message()
    );
    // ...and the core keeps serving other streams.
    let (mut c2, resume) = open(&url, Some(TOKEN)).await.unwrap();
    assert_eq!(resume, 1);
    let a = c2.send(batch("edge-1", 2, 4)).await;
    assert_eq!((a.kind, a.seq), (AckKind::Ack, 2));
    drop(c2);
    drop(c);
    core.stop();
    let s = Store::open(&path, false).unwrap();
    assert_eq!(s.flow_count("edge-1").unwrap(), 9, "only the good batches, once");
    assert_eq!(s.flow_count("edge-2").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_withholds_acks_and_loses_nothing() {
    let path = db("bp");
    let mut cfg = CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN));
    cfg.queue = 1;
    cfg.store_delay = Some(Duration::from_millis(20));
    let core = serve("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let url = format!("http://{}", core.addr);
    let (mut c, _) = open(&url, Some(TOKEN)).await.unwrap();
    let n = 40u64;
    let t = Instant::now();
    // The sender pushes as fast as it can; the core may only take one batch
    // every 20 ms, so acks come at that pace.
    let tx = c.tx.clone();
    let sender = tokio::spawn(async move {
        for seq in 1..=n {
            tx.send(FlowBatchBytes(batch("edge-1", seq, 50).into())).await.unwrap();
        }
    });
    let mut last = 0;
    while last < n {
        let a = c.acks.message().await.unwrap().unwrap();
        assert_eq!(a.kind, AckKind::Ack);
        assert!(a.seq > last, "acks in order");
        last = a.seq;
    }
    sender.await.unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(20 * n - 100), "the store's pace sets the pace: {took:?}");
    // The queue drained, and memory stayed bounded: the core holds at most
    // `queue` batches plus each stream's small in-flight buffers, whatever
    // the sender pushes. (Peak resident memory of this whole test process.)
    assert_eq!(core.counters.queue_depth.load(std::sync::atomic::Ordering::Relaxed), 0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(hwm_kb < 256 * 1024, "peak memory {hwm_kb} kB exceeds the 256 MiB bound");
    drop(c);
    core.stop();
    assert_eq!(Store::open(&path, false).unwrap().flow_count("edge-1").unwrap(), 50 * n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_law_slows_a_sensor_down() {
    let path = db("rate");
    let mut cfg = CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN));
    cfg.rate_flows_per_s = Some(2_000.0);
    cfg.burst_flows = 200.0;
    let core = serve("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let url = format!("http://{}", core.addr);
    let (mut c, _) = open(&url, Some(TOKEN)).await.unwrap();
    let t = Instant::now();
    // 10 batches of 100 flows = 1000 flows at 2000 flows/s after a 200-flow burst: at least 0.4 s.
    for seq in 1..=10 {
        let a = c.send(batch("edge-1", seq, 100)).await;
        assert_eq!((a.kind, a.seq), (AckKind::Ack, seq));
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(380), "the rate law held the sensor back: {took:?}");
    assert!(core.counters.totals().rate_waits > 0);
    drop(c);
    core.stop();
    assert_eq!(Store::open(&path, false).unwrap().flow_count("edge-1").unwrap(), 1000, "slowed, not dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_carries_the_stream_and_plain_text_is_refused() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    let path = db("tls");
    let mut cfg = CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN));
    cfg.tls = Some((cert.clone().into_bytes(), key.into_bytes()));
    let core = serve("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let port = core.addr.port();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert.as_bytes()))
        .domain_name("localhost");
    let ch = tonic::transport::Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = IngestClient::new(ch);
    let (tx, rx) = mpsc::channel(4);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let mut acks = client.stream(req).await.unwrap().into_inner();
    assert_eq!(acks.message().await.unwrap().unwrap().kind, AckKind::Resume);
    tx.send(FlowBatchBytes(batch("edge-1", 1, 7).into())).await.unwrap();
    let a = acks.message().await.unwrap().unwrap();
    assert_eq!((a.kind, a.seq), (AckKind::Ack, 1));
    // A plain-text client gets nowhere.
    let plain = async {
        let mut c = IngestClient::connect(format!("http://127.0.0.1:{port}")).await.ok()?;
        let (_t, r) = mpsc::channel::<FlowBatchBytes>(1);
        c.stream(tonic::Request::new(ReceiverStream::new(r))).await.ok()
    };
    assert!(tokio::time::timeout(Duration::from_secs(5), plain).await.ok().flatten().is_none(), "plain text must fail");
    drop(tx);
    drop(acks);
    core.stop();
    assert_eq!(Store::open(&path, false).unwrap().flow_count("edge-1").unwrap(), 7);
}
