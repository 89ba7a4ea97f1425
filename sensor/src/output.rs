//! Flow-record output on its own thread: the packet loop hands over batches
//! of finished flows and goes on; formatting JSON and writing happen on
//! another core.
use crate::flow::FinishedFlow;
use crate::record::FlowRecord;
use crossbeam::channel::{bounded, Sender};
use std::io::Write;
use std::thread::JoinHandle;

const BATCH: usize = 512;
/// Batches queued before the packet loop waits for the writer (bounded memory).
const QUEUE: usize = 16;

/// Writes flow records as JSON Lines from a background thread, and keeps the
/// N largest flows for the summary. Producers (one per flow worker) get a
/// [`FlowSink`] each.
#[derive(Debug)]
pub struct JsonLinesWriter {
    tx: Option<Sender<Vec<FinishedFlow>>>,
    handle: Option<JoinHandle<std::io::Result<Vec<FlowRecord>>>>,
}

/// A producer's handle on the writer: batches flows and sends them over.
#[derive(Debug)]
pub struct FlowSink {
    tx: Sender<Vec<FinishedFlow>>,
    batch: Vec<FinishedFlow>,
}

impl FlowSink {
    /// Queue one finished flow.
    pub fn push(&mut self, f: &FinishedFlow) -> std::io::Result<()> {
        self.batch.push(*f);
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

impl JsonLinesWriter {
    /// Start the writer thread. `out` of `None` writes nothing (flows are
    /// still counted); `top` is how many of the largest flows to keep.
    pub fn spawn(out: Option<Box<dyn Write + Send>>, top: usize) -> Self {
        let (tx, rx) = bounded::<Vec<FinishedFlow>>(QUEUE);
        let handle = std::thread::Builder::new()
            .name("wirefold-out".into())
            .spawn(move || -> std::io::Result<Vec<FlowRecord>> {
                let mut out = out;
                let mut line = Vec::with_capacity(2048);
                let mut best: Vec<FlowRecord> = Vec::new();
                for batch in rx {
                    for f in &batch {
                        if out.is_none() && top == 0 {
                            continue;
                        }
                        let rec = FlowRecord::from(f);
                        if let Some(w) = out.as_mut() {
                            line.clear();
                            serde_json::to_writer(&mut line, &rec)?;
                            line.push(b'\n');
                            w.write_all(&line)?;
                        }
                        if top > 0 {
                            best.push(rec);
                            if best.len() >= top * 8 {
                                keep_top(&mut best, top);
                            }
                        }
                    }
                }
                if let Some(w) = out.as_mut() {
                    w.flush()?;
                }
                keep_top(&mut best, top);
                Ok(best)
            })
            .expect("spawn the output thread");
        Self { tx: Some(tx), handle: Some(handle) }
    }

    /// A new producer handle.
    pub fn sink(&self) -> FlowSink {
        FlowSink { tx: self.tx.clone().expect("writer is running"), batch: Vec::with_capacity(BATCH) }
    }

    /// Wait for every producer's flows to be written (drop or flush the
    /// [`FlowSink`]s first), flush, and return the largest flows.
    pub fn finish(mut self) -> std::io::Result<Vec<FlowRecord>> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| std::io::Error::other("output thread panicked"))?,
            None => Err(std::io::Error::other("output thread already finished")),
        }
    }
}

fn keep_top(v: &mut Vec<FlowRecord>, n: usize) {
    v.sort_by_key(|r| std::cmp::Reverse(r.fwd_bytes + r.rev_bytes));
    v.truncate(n);
}
