//! The embed-and-export stage on its own thread: the packet loop hands over
//! batches of finished flows and goes on; feature extraction, inference,
//! quantization, JSON, FlowBatch encoding and writing happen on another core.
use crate::embed;
use crate::flow::FinishedFlow;
use crate::record::FlowRecord;
use crossbeam::channel::{bounded, Sender};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use wirefold_core::telemetry::{local_histogram, Exposition, Latency};
use wirefold_embeddings::{Embedder, F};
use wirefold_schema::{write_framed, BatchBuilder, BatchMeta, FlowRec};

/// Flows per sealed FlowBatch.
pub const FLOWS_PER_BATCH: usize = 1024;

/// Where the export thread writes, and what it computes.
#[derive(Default)]
pub struct ExportOptions {
    /// JSON Lines flow records.
    pub json: Option<Box<dyn Write + Send>>,
    /// The (unstandardised) feature rows as CSV, for training.
    pub features: Option<Box<dyn Write + Send>>,
    /// Length-prefixed FlowBatch buffers.
    pub batches: Option<Box<dyn Write + Send>>,
    /// The model; `None` exports flows without embeddings.
    pub embedder: Option<Embedder>,
    /// Sensor id written into FlowBatches.
    pub sensor_id: String,
    /// Stream sealed FlowBatches to a core.
    pub stream: Option<crate::stream::Streamer>,
    /// Flows per sealed FlowBatch (0 means [`FLOWS_PER_BATCH`]).
    pub flows_per_batch: usize,
    /// Seal a partly filled FlowBatch once its oldest flow waited this long
    /// (zero means one second).
    pub max_batch_age: std::time::Duration,
    /// How many of the largest flows to keep for the summary.
    pub top: usize,
    /// Record packet-to-export latency (live capture: packet times are wall-clock times).
    pub live: bool,
    /// Export flows as IPFIX to collectors.
    pub ipfix: Option<crate::ipfix::IpfixSink>,
}

/// What the export thread publishes for `/metrics`.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Finished flows received from the flow tables.
    pub flows: AtomicU64,
    /// Flows embedded by the model.
    pub embedded: AtomicU64,
    /// Model runs (one per batch of flows).
    pub embed_batches: AtomicU64,
    /// FlowBatches sealed.
    pub batches: AtomicU64,
    /// Bytes of sealed FlowBatches.
    pub batch_bytes: AtomicU64,
    /// Time per model run.
    pub embed_latency: Latency,
    /// From a flow's last packet to its record leaving the sensor (live capture only).
    pub export_latency: Latency,
    /// One per IPFIX collector.
    pub ipfix: Vec<Arc<crate::ipfix::CollectorCounters>>,
}

impl ExportCounters {
    /// Add the export families.
    pub fn exposition(&self, e: &mut Exposition) {
        e.counter_of("wirefold_export_flows_total", "Finished flows handed to the export stage.", &self.flows);
        e.counter_of("wirefold_embedded_flows_total", "Flows embedded by the ONNX model.", &self.embedded);
        e.counter_of(
            "wirefold_embed_batches_total",
            "Model runs (one per batch of finished flows).",
            &self.embed_batches,
        );
        e.counter_of("wirefold_export_batches_total", "FlowBatches sealed.", &self.batches);
        e.counter_of("wirefold_export_batch_bytes_total", "Bytes of sealed FlowBatches.", &self.batch_bytes);
        e.summary(
            "wirefold_embed_batch_seconds",
            "Time to embed one batch of flows (features, inference, quantization; quantiles over the last 1-2 minutes).",
            &[],
            &self.embed_latency,
        );
        e.summary(
            "wirefold_flow_export_latency_seconds",
            "Live capture: from a flow's last packet to its record leaving the sensor (includes the idle timeout for idle flows).",
            &[],
            &self.export_latency,
        );
    }
}

impl std::fmt::Debug for ExportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportOptions")
            .field("embed", &self.embedder.is_some())
            .field("stream", &self.stream.is_some())
            .field("top", &self.top)
            .finish()
    }
}

/// What the export thread did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExportReport {
    /// The largest flows.
    pub top: Vec<FlowRecord>,
    /// The highest-scoring flows (with a model).
    pub top_scored: Vec<FlowRecord>,
    /// Flows embedded.
    pub embedded: u64,
    /// FlowBatches written.
    pub batches: u64,
    /// Bytes of FlowBatch buffers written (without length prefixes).
    pub batch_bytes: u64,
    /// Streaming to a core, when on.
    pub stream: Option<StreamReport>,
    /// IPFIX export, one per collector.
    pub ipfix: Vec<crate::ipfix::IpfixReport>,
}

/// What streaming to the core did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct StreamReport {
    /// Batches sent (with resends).
    pub sent: u64,
    /// Batches acknowledged as durably stored.
    pub acked: u64,
    /// Batches resent after a reconnect.
    pub resent: u64,
    /// Batches the core refused.
    pub rejected: u64,
    /// Batches dropped because the spool was full.
    pub spool_dropped: u64,
    /// Reconnects.
    pub reconnects: u64,
    /// Batches still in the spool at exit.
    pub spool_batches: u64,
    /// Why streaming stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

struct Stage {
    o: ExportOptions,
    line: Vec<u8>,
    best: Vec<FlowRecord>,
    scored: Vec<FlowRecord>,
    rows: Vec<[f32; F]>,
    emb: Vec<[i8; 32]>,
    scores: Vec<f32>,
    pending: Vec<FlowRec>,
    pending_info: Vec<wirefold_schema::FlowInfoRec>,
    builder: BatchBuilder,
    seq: u64,
    report: ExportReport,
    pending_since: Option<std::time::Instant>,
    counters: Arc<ExportCounters>,
    lat: hdrhistogram::Histogram<u64>,
    lat_sum: u128,
}

impl Stage {
    fn batch(&mut self, batch: &[FinishedFlow]) -> std::io::Result<()> {
        self.counters.flows.fetch_add(batch.len() as u64, Relaxed);
        let embed_start = std::time::Instant::now();
        let batch_now = if self.o.live { now_ns() } else { 0 };
        let need_rows = self.o.embedder.is_some() || self.o.features.is_some();
        if need_rows {
            self.rows.clear();
            self.rows.extend(batch.iter().map(embed::features));
        }
        if let Some(w) = self.o.features.as_mut() {
            for r in &self.rows {
                self.line.clear();
                for (i, v) in r.iter().enumerate() {
                    if i > 0 {
                        self.line.push(b',');
                    }
                    write!(self.line, "{v}")?;
                }
                self.line.push(b'\n');
                w.write_all(&self.line)?;
            }
        }
        let embedded = match self.o.embedder.as_mut() {
            Some(e) => {
                e.embed(&self.rows, &mut self.emb, &mut self.scores).map_err(std::io::Error::other)?;
                self.counters.embedded.fetch_add(batch.len() as u64, Relaxed);
                self.counters.embed_batches.fetch_add(1, Relaxed);
                self.counters.embed_latency.record(embed_start.elapsed());
                true
            }
            None => false,
        };
        for (i, f) in batch.iter().enumerate() {
            let (emb, score) = if embedded { (self.emb[i], self.scores[i]) } else { ([0i8; 32], 0.0) };
            if self.o.json.is_some() || self.o.top > 0 {
                let mut rec = FlowRecord::from(f);
                if embedded {
                    rec.score = Some(score);
                    rec.embedding = Some(emb.to_vec());
                }
                if let Some(w) = self.o.json.as_mut() {
                    self.line.clear();
                    serde_json::to_writer(&mut self.line, &rec)?;
                    self.line.push(b'\n');
                    w.write_all(&self.line)?;
                }
                if self.o.top > 0 {
                    if embedded {
                        self.scored.push(rec.clone());
                        if self.scored.len() >= self.o.top * 8 {
                            keep_top_scored(&mut self.scored, self.o.top);
                        }
                    }
                    self.best.push(rec);
                    if self.best.len() >= self.o.top * 8 {
                        keep_top(&mut self.best, self.o.top);
                    }
                }
            }
            if let Some(x) = self.o.ipfix.as_mut() {
                x.push(f, emb, score);
            }
            let batched = self.o.batches.is_some() || self.o.stream.is_some();
            if !batched && self.o.live {
                // Unbatched output leaves now; batched flows are timed when sealed.
                self.record_latency(batch_now, f.flow.last_ns);
            }
            if batched {
                if self.pending.is_empty() {
                    self.pending_since = Some(std::time::Instant::now());
                }
                if let Some(i) = embed::flow_info(f, self.pending.len() as u32) {
                    self.pending_info.push(i);
                }
                self.pending.push(embed::flow_rec(f, emb, score));
                let cap = if self.o.flows_per_batch == 0 { FLOWS_PER_BATCH } else { self.o.flows_per_batch };
                if self.pending.len() >= cap {
                    self.seal()?;
                }
            }
        }
        if let Some(x) = self.o.ipfix.as_mut() {
            x.flush();
        }
        self.merge_latency();
        Ok(())
    }

    fn record_latency(&mut self, now: u64, last_ns: u64) {
        let d = now.saturating_sub(last_ns);
        if self.lat.record(d.clamp(1_000, 3_600_000_000_000)).is_ok() {
            self.lat_sum += d as u128;
        }
    }

    fn merge_latency(&mut self) {
        self.counters.export_latency.merge(&mut self.lat, self.lat_sum);
        self.lat_sum = 0;
    }

    /// Seal by age: a quiet link still delivers its flows promptly.
    fn seal_if_old(&mut self) -> std::io::Result<()> {
        let age = if self.o.max_batch_age.is_zero() { std::time::Duration::from_secs(1) } else { self.o.max_batch_age };
        if self.pending_since.is_some_and(|t| t.elapsed() >= age) {
            self.seal()?;
        }
        Ok(())
    }

    fn seal(&mut self) -> std::io::Result<()> {
        self.pending_since = None;
        if self.pending.is_empty() {
            return Ok(());
        }
        self.seq = match &self.o.stream {
            Some(s) => s.next_seq(),
            None => self.seq + 1,
        };
        let (model_id, scale) = match &self.o.embedder {
            Some(e) => (e.card().model_id.clone(), e.card().int8_scale),
            None => (String::new(), 0.0),
        };
        let meta = BatchMeta {
            sensor_id: self.o.sensor_id.clone(),
            seq: self.seq,
            schema_version: 0,
            model_id,
            scale,
            created_ns: now_ns(),
        };
        if self.o.live {
            let now = meta.created_ns;
            for i in 0..self.pending.len() {
                let last = self.pending[i].last_ns;
                self.record_latency(now, last);
            }
            self.merge_latency();
        }
        let buf = self.builder.build_with_info(&meta, &self.pending, &self.pending_info);
        self.counters.batches.fetch_add(1, Relaxed);
        self.counters.batch_bytes.fetch_add(buf.len() as u64, Relaxed);
        if let Some(w) = self.o.batches.as_mut() {
            write_framed(w, buf)?;
        }
        if let Some(s) = self.o.stream.as_mut() {
            s.submit(self.seq, buf.to_vec())?;
        }
        self.pending.clear();
        self.pending_info.clear();
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<ExportReport> {
        self.seal()?;
        for w in [self.o.json.as_mut(), self.o.features.as_mut(), self.o.batches.as_mut()].into_iter().flatten() {
            w.flush()?;
        }
        if let Some(x) = self.o.ipfix.take() {
            self.report.ipfix = x.finish();
            for r in &self.report.ipfix {
                let mtu = if r.mtu > 0 { format!(", path MTU {}", r.mtu) } else { String::new() };
                eprintln!(
                    "ipfix {}: {} messages, {} records, {} dropped, {} send errors{mtu}",
                    r.collector, r.messages, r.records, r.dropped, r.send_errors
                );
            }
        }
        keep_top(&mut self.best, self.o.top);
        self.report.top = std::mem::take(&mut self.best);
        keep_top_scored(&mut self.scored, self.o.top);
        self.report.top_scored = std::mem::take(&mut self.scored);
        // The report's totals are the published counters: one count, two readers.
        self.report.embedded = self.counters.embedded.load(Relaxed);
        self.report.batches = self.counters.batches.load(Relaxed);
        self.report.batch_bytes = self.counters.batch_bytes.load(Relaxed);
        if let Some(s) = self.o.stream.take() {
            let c = s.counters.clone();
            let r = s.finish();
            self.report.stream = Some(StreamReport {
                sent: c.sent.load(Relaxed),
                acked: c.acked.load(Relaxed),
                resent: c.resent.load(Relaxed),
                rejected: c.rejected.load(Relaxed),
                spool_dropped: c.spool_dropped.load(Relaxed),
                reconnects: c.reconnects.load(Relaxed),
                spool_batches: c.spool_batches.load(Relaxed),
                error: r.err().map(|e| e.to_string()),
            });
        }
        Ok(self.report)
    }
}

const BATCH: usize = 512;
/// Batches queued before the packet loop waits for the writer (bounded memory).
const QUEUE: usize = 16;

/// The export thread. Producers (one per flow table) get a [`FlowSink`] each.
#[derive(Debug)]
pub struct Exporter {
    tx: Option<Sender<Vec<FinishedFlow>>>,
    handle: Option<JoinHandle<std::io::Result<ExportReport>>>,
    /// What the export thread publishes.
    pub counters: Arc<ExportCounters>,
    /// The streamer's counters, when streaming.
    pub stream_counters: Option<Arc<crate::stream::StreamCounters>>,
}

/// A producer's handle on the writer: batches flows and sends them over.
#[derive(Debug)]
pub struct FlowSink {
    tx: Sender<Vec<FinishedFlow>>,
    batch: Vec<FinishedFlow>,
}

impl FlowSink {
    /// Queue one finished flow.
    pub fn push(&mut self, f: FinishedFlow) -> std::io::Result<()> {
        self.batch.push(f);
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Send what is batched.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.tx.send(full).map_err(|_| std::io::Error::other("the output thread stopped (see its error)"))
    }
}

impl Exporter {
    /// Start the export thread.
    pub fn spawn(o: ExportOptions) -> Self {
        let (tx, rx) = bounded::<Vec<FinishedFlow>>(QUEUE);
        let ipfix = o.ipfix.as_ref().map(|x| x.counters()).unwrap_or_default();
        let counters = Arc::new(ExportCounters { ipfix, ..ExportCounters::default() });
        let stream_counters = o.stream.as_ref().map(|s| s.counters.clone());
        let c2 = counters.clone();
        let handle = std::thread::Builder::new()
            .name("wirefold-export".into())
            .spawn(move || -> std::io::Result<ExportReport> {
                let mut st = Stage {
                    o,
                    line: Vec::with_capacity(2048),
                    best: Vec::new(),
                    scored: Vec::new(),
                    rows: Vec::new(),
                    emb: Vec::new(),
                    scores: Vec::new(),
                    pending: Vec::with_capacity(FLOWS_PER_BATCH),
                    pending_info: Vec::with_capacity(FLOWS_PER_BATCH),
                    builder: BatchBuilder::new(),
                    seq: 0,
                    report: ExportReport::default(),
                    pending_since: None,
                    counters: c2,
                    lat: local_histogram(),
                    lat_sum: 0,
                };
                if let Some(w) = st.o.features.as_mut() {
                    writeln!(w, "{}", wirefold_embeddings::features::csv_header())?;
                }
                loop {
                    match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                        Ok(batch) => st.batch(&batch)?,
                        Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                        Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
                    }
                    st.seal_if_old()?;
                }
                st.finish()
            })
            .expect("spawn the export thread");
        Self { tx: Some(tx), handle: Some(handle), counters, stream_counters }
    }

    /// A new producer handle.
    pub fn sink(&self) -> FlowSink {
        FlowSink { tx: self.tx.clone().expect("writer is running"), batch: Vec::with_capacity(BATCH) }
    }

    /// Wait for every producer's flows to be written (drop or flush the
    /// [`FlowSink`]s first), flush, and report.
    pub fn finish(mut self) -> std::io::Result<ExportReport> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| std::io::Error::other("output thread panicked"))?,
            None => Err(std::io::Error::other("output thread already finished")),
        }
    }
}

fn keep_top_scored(v: &mut Vec<FlowRecord>, n: usize) {
    v.sort_by(|a, b| b.score.unwrap_or(0.0).total_cmp(&a.score.unwrap_or(0.0)).then(a.first_ts.total_cmp(&b.first_ts)));
    v.truncate(n);
}

fn keep_top(v: &mut Vec<FlowRecord>, n: usize) {
    v.sort_by_key(|r| std::cmp::Reverse(r.fwd_bytes + r.rev_bytes));
    v.truncate(n);
}
