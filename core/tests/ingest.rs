//! The core's ingest over real gRPC on loopback: bad input is refused with a
//! status and a reason while the stream and the core go on; backpressure
//! keeps memory bounded and loses nothing.
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
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
                fwd_bytes: 120,
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

/// Peak resident memory of this test process (VmHWM), in kB.
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
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
    assert!(a.reason.contains("corrupt"), "{}", a.reason);
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
    let hwm_kb = peak_rss_kb();
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

fn spoiled(sensor: &str, seq: u64, n: usize, spoil: impl Fn(usize, &mut FlowRec)) -> Vec<u8> {
    let (meta, mut flows) = wirefold_schema::read_batch(&batch(sensor, seq, n)).unwrap();
    for (i, f) in flows.iter_mut().enumerate() {
        spoil(i, f);
    }
    BatchBuilder::new().build(&meta, &flows).to_vec()
}

fn code(c: tonic::Code) -> u8 {
    c as i32 as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flips_are_refused_as_corrupt_and_nothing_of_them_is_stored() {
    let path = db("flips");
    let core =
        serve("127.0.0.1:0".parse().unwrap(), CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN))).unwrap();
    let (mut c, _) = open(&format!("http://{}", core.addr), Some(TOKEN)).await.unwrap();
    let good = batch("edge-1", 1, 20);
    // 300 random single-bit flips (a fixed-seed xorshift), a third of them in the first 160 bytes.
    let mut x = 0x9e3779b97f4a7c15u64;
    for k in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let byte = if k % 3 == 0 { (x as usize >> 3) % 160 } else { (x as usize >> 3) % good.len() };
        let mut bad = good.clone();
        bad[byte] ^= 1 << (x % 8);
        let a = c.send(bad).await;
        assert_eq!((a.kind, a.code), (AckKind::Rejected, code(tonic::Code::InvalidArgument)), "flip in byte {byte}");
        assert!(a.reason.contains("corrupt"), "byte {byte}: {}", a.reason);
    }
    assert_eq!(core.counters.refusals_of("corrupt"), 300);
    // The stream goes on; the intact batch is stored.
    let a = c.send(good).await;
    assert_eq!((a.kind, a.seq), (AckKind::Ack, 1));
    // A version-1 batch (what older sensors send) is still read.
    let (meta, flows) = wirefold_schema::read_batch(&batch("edge-1", 2, 3)).unwrap();
    let v1 = BatchBuilder::new().build_v1(&meta, &flows).to_vec();
    let a = c.send(v1).await;
    assert_eq!((a.kind, a.seq), (AckKind::Ack, 2));
    drop(c);
    core.stop();
    assert_eq!(Store::open(&path, false).unwrap().flow_count("edge-1").unwrap(), 23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_and_conflicting_sequence_numbers_are_refused_and_later_batches_stored() {
    let path = db("seq");
    let core =
        serve("127.0.0.1:0".parse().unwrap(), CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN))).unwrap();
    let (mut c, _) = open(&format!("http://{}", core.addr), Some(TOKEN)).await.unwrap();
    // 10^18 is far beyond what any spool could number: refused, nothing changes.
    let a = c.send(batch("edge-1", 1_000_000_000_000_000_000, 2)).await;
    assert_eq!((a.kind, a.code), (AckKind::Rejected, code(tonic::Code::OutOfRange)), "{}", a.reason);
    assert!(a.reason.contains("too far ahead"), "{}", a.reason);
    // 2^63 and above do not fit: refused.
    let a = c.send(batch("edge-1", 1 << 63, 2)).await;
    assert_eq!((a.kind, a.code), (AckKind::Rejected, code(tonic::Code::OutOfRange)), "{}", a.reason);
    // Later batches are stored, not taken for duplicates.
    let a = c.send(batch("edge-1", 5, 4)).await;
    assert_eq!((a.kind, a.seq), (AckKind::Ack, 5));
    // A resend under 5 with other content is a conflict, refused and alarmed.
    let a = c.send(batch("edge-1", 5, 6)).await;
    assert_eq!((a.kind, a.code), (AckKind::Rejected, code(tonic::Code::AlreadyExists)), "{}", a.reason);
    assert!(a.reason.contains("conflicting resend"), "{}", a.reason);
    // The same content again is a duplicate: acknowledged.
    let a = c.send(batch("edge-1", 5, 4)).await;
    assert_eq!((a.kind, a.seq), (AckKind::Ack, 5));
    // Below the last and never stored: out of order.
    let a = c.send(batch("edge-1", 3, 4)).await;
    assert_eq!((a.kind, a.code), (AckKind::Rejected, code(tonic::Code::FailedPrecondition)), "{}", a.reason);
    let a = c.send(batch("edge-1", 6, 1)).await;
    assert_eq!((a.kind, a.seq), (AckKind::Ack, 6));
    for (reason, n) in [("seq_too_far", 1), ("seq_range", 1), ("seq_conflict", 1), ("seq_order", 1)] {
        assert_eq!(core.counters.refusals_of(reason), n, "{reason}");
    }
    let text = core.counters.exposition().encode();
    assert!(
        text.contains("wirefold_core_refused_batches_total{sensor=\"edge-1\",reason=\"seq_conflict\"} 1"),
        "{text}"
    );
    drop(c);
    core.stop();
    let s = Store::open(&path, false).unwrap();
    assert_eq!((s.flow_count("edge-1").unwrap(), s.last_seq("edge-1").unwrap()), (5, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_an_invalid_flow_is_refused_whole_naming_the_flow_and_rule() {
    let path = db("semantic");
    let core =
        serve("127.0.0.1:0".parse().unwrap(), CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN))).unwrap();
    let (mut c, _) = open(&format!("http://{}", core.addr), Some(TOKEN)).await.unwrap();
    type Spoil = fn(usize, &mut FlowRec);
    // (last before first cannot be encoded by the builder; the unit tests of
    // `validate` cover it.)
    let cases: [(&str, Spoil); 7] = [
        ("time_future", |i, f| {
            if i == 3 {
                f.last_ns = u64::MAX / 2
            }
        }),
        ("bytes_per_packet", |i, f| {
            if i == 3 {
                f.fwd_bytes = 7
            }
        }),
        ("no_packets", |i, f| {
            if i == 3 {
                (f.fwd_packets, f.fwd_bytes) = (0, 0)
            }
        }),
        ("end_reason", |i, f| {
            if i == 3 {
                f.end_reason = 255
            }
        }),
        ("score", |i, f| {
            if i == 3 {
                f.score = f32::INFINITY
            }
        }),
        ("score", |i, f| {
            if i == 3 {
                f.score = f32::NAN
            }
        }),
        ("tcp_flags", |i, f| {
            if i == 3 {
                (f.proto, f.tcp_flags) = (17, 2)
            }
        }),
    ];
    for (rule, spoil) in cases {
        let a = c.send(spoiled("edge-1", 1, 8, spoil)).await;
        assert_eq!((a.kind, a.code), (AckKind::Rejected, code(tonic::Code::InvalidArgument)), "{rule}: {}", a.reason);
        assert!(a.reason.contains("flow 3") && a.reason.contains(rule), "{rule}: {}", a.reason);
    }
    let a = c.send(batch("edge-1", 1, 8)).await;
    assert_eq!((a.kind, a.seq), (AckKind::Ack, 1));
    drop(c);
    core.stop();
    assert_eq!(Store::open(&path, false).unwrap().flow_count("edge-1").unwrap(), 8, "only the valid batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stream_fences_the_first_and_nothing_acked_is_lost() {
    let path = db("fence");
    let core =
        serve("127.0.0.1:0".parse().unwrap(), CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN))).unwrap();
    let url = format!("http://{}", core.addr);
    let (mut a, _) = open(&url, Some(TOKEN)).await.unwrap();
    assert_eq!(a.send(batch("edge-1", 1, 5)).await.seq, 1);
    let (mut b, resume) = open(&url, Some(TOKEN)).await.unwrap();
    assert_eq!(resume, 1);
    // The older stream is closed with a reason.
    let e = tokio::time::timeout(Duration::from_secs(5), a.acks.message()).await.unwrap().expect_err("fenced");
    assert_eq!(e.code(), tonic::Code::Aborted, "{e:?}");
    assert!(e.message().contains("superseded"), "{}", e.message());
    assert_eq!(core.counters.fenced.load(Relaxed), 1);
    // Interleaved senders on one token: every acknowledged batch is stored.
    let mut acked_flows = 5;
    for seq in 2..=20u64 {
        let ack = b.send(batch("edge-1", seq, 3)).await;
        assert_eq!((ack.kind, ack.seq), (AckKind::Ack, seq));
        acked_flows += 3;
    }
    let _ = a.tx.send(FlowBatchBytes(batch("edge-1", 21, 3).into())).await;
    drop((a, b));
    core.stop();
    assert_eq!(Store::open(&path, false).unwrap().flow_count("edge-1").unwrap(), acked_flows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_acks_cannot_grow_the_core() {
    let path = db("noread");
    let mut cfg = CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN));
    cfg.max_message = 2 << 20;
    let core = serve("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let url = format!("http://{}", core.addr);
    let (c, _) = open(&url, Some(TOKEN)).await.unwrap();
    // Batches naming a 1 MiB sensor id: each refused; the reason does not
    // echo the id, and answers queue up to a fixed bound, then the core
    // stops reading (flow control holds the sender).
    let meta = BatchMeta { sensor_id: "x".repeat(1 << 20), seq: 1, scale: 1.0, ..Default::default() };
    let big: bytes::Bytes = BatchBuilder::new().build(&meta, &[]).to_vec().into();
    let mut sent = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        match tokio::time::timeout(Duration::from_millis(500), c.tx.send(FlowBatchBytes(big.clone()))).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    assert!(sent > 100, "{sent} sent");
    let hwm_kb = peak_rss_kb();
    assert!(hwm_kb < 320 * 1024, "peak memory {hwm_kb} kB with {sent} unanswered 1 MiB batches");
    // The core serves others meanwhile; the answers are short.
    let mut acks = c.acks;
    let first = acks.message().await.unwrap().unwrap();
    assert_eq!(first.code, code(tonic::Code::PermissionDenied));
    assert!(first.reason.len() <= wirefold_core::service::MAX_REASON, "{} bytes", first.reason.len());
    assert!(first.reason.contains("an id of 1048576 bytes"), "{}", first.reason);
    drop((c.tx, acks));
    let (mut d, _) = open(&url, Some(TOKEN)).await.unwrap();
    assert_eq!(d.send(batch("edge-1", 1, 2)).await.seq, 1);
    assert_eq!(core.counters.totals().flows, 2);
    drop(d);
    core.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_law_is_per_sensor_across_streams() {
    let path = db("rate4");
    let mut cfg = CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN));
    cfg.rate_flows_per_s = Some(400.0);
    cfg.burst_flows = 200.0;
    let core = serve("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let url = format!("http://{}", core.addr);
    let t = Instant::now();
    // Four streams one after the other (a newer one fences the older), 200
    // flows each: a fresh stream gets no fresh bucket.
    let mut seq = 0;
    for _ in 0..4 {
        let (mut c, _) = open(&url, Some(TOKEN)).await.unwrap();
        for _ in 0..2 {
            seq += 1;
            assert_eq!(c.send(batch("edge-1", seq, 100)).await.seq, seq);
        }
    }
    let took = t.elapsed();
    // 800 flows, 200 of them from the burst, at 400 flows/s: at least 1.5 s.
    assert!(took >= Duration::from_millis(1450), "{took:?}: 4 streams passed more than the rate");
    core.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_retried_and_nothing_is_lost() {
    let path = db("locked");
    let mut cfg = CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN));
    cfg.store_retry_for = Duration::from_secs(1);
    let core = serve("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let url = format!("http://{}", core.addr);
    let (mut c, _) = open(&url, Some(TOKEN)).await.unwrap();
    assert_eq!(c.send(batch("edge-1", 1, 4)).await.seq, 1);
    // Another process-like holder takes the write lock for 4 s.
    let p2 = path.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&p2).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(4));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    // The store retries for a second, then says UNAVAILABLE and ends the
    // stream: the batch is not stored and the sender must keep it.
    let a = c.send(batch("edge-1", 2, 4)).await;
    assert_eq!((a.kind, a.code), (AckKind::Rejected, code(tonic::Code::Unavailable)), "{}", a.reason);
    assert!(a.reason.contains("resend"), "{}", a.reason);
    let e = c.acks.message().await.expect_err("the stream ends");
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(core.counters.store_errors.load(Relaxed) >= 1);
    holder.join().unwrap();
    // After the lock is gone the resend is stored, once.
    let (mut c, resume) = open(&url, Some(TOKEN)).await.unwrap();
    assert_eq!(resume, 1);
    assert_eq!(c.send(batch("edge-1", 2, 4)).await.seq, 2);
    assert_eq!(core.counters.totals().failed, 1);
    drop(c);
    core.stop();
    assert_eq!(Store::open(&path, false).unwrap().flow_count("edge-1").unwrap(), 8);
}

#[test]
fn plain_text_off_loopback_is_refused_unless_allowed() {
    let path = db("plain");
    let cfg = CoreConfig::new(path.clone(), Tokens::single("edge-1", TOKEN));
    let e = serve("0.0.0.0:0".parse().unwrap(), cfg.clone()).unwrap_err();
    assert!(matches!(e, wirefold_core::ServeError::Plaintext(_)), "{e}");
    assert!(e.to_string().contains("--allow-plaintext") && e.to_string().contains("--tls-cert"), "{e}");
    let mut cfg = cfg;
    cfg.allow_plaintext = true;
    let core = serve("0.0.0.0:0".parse().unwrap(), cfg).unwrap();
    assert_eq!(core.counters.plaintext.load(Relaxed), 1);
    assert!(core.counters.exposition().encode().contains("wirefold_core_plaintext 1"));
    core.stop();
}
