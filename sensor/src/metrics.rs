//! The sensor's Prometheus metrics.
//!
//! Hot loops count in plain per-thread structs ([`DecodeStats`],
//! [`FlowStats`]) and publish them to a [`ThreadCounters`] of atomics once
//! per batch or block, never per packet; a scrape reads the atomics and builds
//! the families (see `wirefold_core::telemetry`). Every family is present from
//! the first scrape, at zero.
use crate::flow::{EndReason, FlowStats, FlowTable};
use crate::output::ExportCounters;
use crate::stream::StreamCounters;
use crate::wire::{DecodeStats, Malformed, Skipped};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use wirefold_core::telemetry::Exposition;
use wirefold_inspect::session::InspectStats;

/// Counters one capture thread (and its flow worker) publishes for the
/// status line and `/metrics`.
#[derive(Debug)]
pub struct ThreadCounters {
    /// Packets received from the socket (or file).
    pub packets: AtomicU64,
    /// Captured bytes received.
    pub bytes: AtomicU64,
    /// Packet records dropped because the ring was full.
    pub ring_drops: AtomicU64,
    /// Kernel: packets handed to the socket.
    pub kernel_packets: AtomicU64,
    /// Kernel: packets dropped (ring full).
    pub kernel_drops: AtomicU64,
    /// Kernel: queue freezes.
    pub kernel_freezes: AtomicU64,
    /// Flows in this thread's table.
    pub active_flows: AtomicU64,
    /// Malformed packets by reason.
    pub malformed: [AtomicU64; Malformed::COUNT],
    /// Skipped packets by reason.
    pub skipped: [AtomicU64; Skipped::COUNT],
    /// Later fragments without a first.
    pub frag_unmatched: AtomicU64,
    /// Flows created.
    pub flows_created: AtomicU64,
    /// Flows ended, by reason.
    pub flows_ended: [AtomicU64; EndReason::COUNT],
    /// Times the table was full and evicted flows.
    pub eviction_passes: AtomicU64,
    /// Packets that made flows.
    pub flow_packets: AtomicU64,
    /// Inspection: flows given a slot, flows refused one, payload packets read.
    pub inspect: [AtomicU64; 3],
    /// Inspection: messages parsed, by parser (tls, quic, dns, http, ssh).
    pub inspect_parsed: [AtomicU64; 5],
    /// Inspection failures in [`InspectStats::errors`] order.
    pub inspect_errors: Box<[AtomicU64]>,
}

impl Default for ThreadCounters {
    fn default() -> Self {
        ThreadCounters {
            packets: AtomicU64::default(),
            bytes: AtomicU64::default(),
            ring_drops: AtomicU64::default(),
            kernel_packets: AtomicU64::default(),
            kernel_drops: AtomicU64::default(),
            kernel_freezes: AtomicU64::default(),
            active_flows: AtomicU64::default(),
            malformed: Default::default(),
            skipped: Default::default(),
            frag_unmatched: AtomicU64::default(),
            flows_created: AtomicU64::default(),
            flows_ended: Default::default(),
            eviction_passes: AtomicU64::default(),
            flow_packets: AtomicU64::default(),
            inspect: Default::default(),
            inspect_parsed: Default::default(),
            inspect_errors: (0..INSPECT_ERRORS).map(|_| AtomicU64::default()).collect(),
        }
    }
}

/// How many (parser, reason) failure counters inspection has.
pub const INSPECT_ERRORS: usize = {
    use wirefold_inspect::{
        dns::DnsError, http::HttpError, quic::QuicError, ssh::SshError, tls::ReassemblyError, tls::TlsError,
    };
    TlsError::COUNT + QuicError::COUNT + DnsError::COUNT + HttpError::COUNT + SshError::COUNT + ReassemblyError::COUNT
};

impl ThreadCounters {
    /// Publish a decoder's counters (called once per batch or block).
    pub fn publish_decode(&self, d: &DecodeStats) {
        for (a, v) in self.malformed.iter().zip(d.malformed.iter()) {
            a.store(*v, Relaxed);
        }
        for (a, v) in self.skipped.iter().zip(d.skipped.iter()) {
            a.store(*v, Relaxed);
        }
        self.frag_unmatched.store(d.frag_unmatched, Relaxed);
    }

    /// Publish a flow table's counters (flows and inspection) with `active` flows held.
    pub fn publish_table(&self, t: &FlowTable, active: usize) {
        self.publish_flows(&t.stats, active);
        if let Some(s) = t.inspect_stats() {
            self.publish_inspect(s);
        }
    }

    /// Publish inspection counters.
    pub fn publish_inspect(&self, s: &InspectStats) {
        for (a, v) in self.inspect.iter().zip([s.flows, s.pool_exhausted, s.packets]) {
            a.store(v, Relaxed);
        }
        for (a, (_, v)) in self.inspect_parsed.iter().zip(s.parsed()) {
            a.store(v, Relaxed);
        }
        for (a, (_, _, v)) in self.inspect_errors.iter().zip(s.errors()) {
            a.store(v, Relaxed);
        }
    }

    /// Publish a flow table's counters and size (called once per batch).
    pub fn publish_flows(&self, f: &FlowStats, active: usize) {
        for (a, v) in self.flows_ended.iter().zip(f.ended.iter()) {
            a.store(*v, Relaxed);
        }
        self.flows_created.store(f.created, Relaxed);
        self.eviction_passes.store(f.eviction_passes, Relaxed);
        self.flow_packets.store(f.packets, Relaxed);
        self.active_flows.store(active as u64, Relaxed);
    }
}

/// DPDK port counters (`rte_eth_stats`), published by the main lcore.
#[derive(Debug, Default)]
pub struct DpdkPortCounters {
    /// The port id.
    pub port: AtomicU64,
    /// Packets received by the port.
    pub ipackets: AtomicU64,
    /// Packets missed because rx queues were full.
    pub imissed: AtomicU64,
    /// Receive errors.
    pub ierrors: AtomicU64,
    /// Receive failures for lack of mbufs.
    pub rx_nombuf: AtomicU64,
}

impl DpdkPortCounters {
    /// Publish one reading of the port's counters.
    pub fn publish(&self, ipackets: u64, imissed: u64, ierrors: u64, rx_nombuf: u64) {
        self.ipackets.store(ipackets, Relaxed);
        self.imissed.store(imissed, Relaxed);
        self.ierrors.store(ierrors, Relaxed);
        self.rx_nombuf.store(rx_nombuf, Relaxed);
    }

    fn exposition(&self, e: &mut Exposition) {
        let port = self.port.load(Relaxed).to_string();
        let l = [("port", port.as_str())];
        for (name, help, v) in [
            ("wirefold_dpdk_ipackets_total", "DPDK: packets received by the port.", &self.ipackets),
            (
                "wirefold_dpdk_imissed_total",
                "DPDK: packets the NIC dropped because an rx queue was full (more queues and lcores).",
                &self.imissed,
            ),
            ("wirefold_dpdk_ierrors_total", "DPDK: receive errors.", &self.ierrors),
            (
                "wirefold_dpdk_rx_nombuf_total",
                "DPDK: receive failures because the mbuf pool ran dry (raise --mbufs).",
                &self.rx_nombuf,
            ),
        ] {
            e.counter(name, help, &l, v.load(Relaxed) as f64);
        }
    }
}

/// A per-thread family: name, help, the counter, and whether it is a counter (else a gauge).
type PerThread = (&'static str, &'static str, fn(&ThreadCounters) -> &AtomicU64, bool);

/// What a sensor's `/metrics` reads.
#[derive(Debug, Clone)]
pub struct SensorMetrics {
    /// The interface (or "replay", or "dpdk:N").
    pub interface: String,
    /// One per capture thread.
    pub threads: Vec<Arc<ThreadCounters>>,
    /// The export thread.
    pub export: Arc<ExportCounters>,
    /// Streaming to a core, when on.
    pub stream: Option<Arc<StreamCounters>>,
    /// An embedded core's counters, when one runs in this process.
    pub core: Option<Arc<wirefold_core::CoreCounters>>,
    /// DPDK port counters (DPDK capture only).
    pub dpdk: Option<Arc<DpdkPortCounters>>,
}

impl SensorMetrics {
    /// Build the metric families.
    pub fn exposition(&self) -> Exposition {
        let mut e = Exposition::new();
        e.gauge(
            "wirefold_build_info",
            "Always 1; labels name the version.",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        let iface = self.interface.as_str();
        let per_thread: [PerThread; 7] = [
            ("wirefold_packets_total", "Packets received, per capture thread.", |c| &c.packets, true),
            ("wirefold_bytes_total", "Captured bytes received, per capture thread.", |c| &c.bytes, true),
            (
                "wirefold_kernel_packets_total",
                "Packets the kernel handed to the capture socket (PACKET_STATISTICS, including its drops).",
                |c| &c.kernel_packets,
                true,
            ),
            (
                "wirefold_kernel_drops_total",
                "Packets the kernel dropped because the capture ring was full (raise --block-count, add threads).",
                |c| &c.kernel_drops,
                true,
            ),
            ("wirefold_kernel_freezes_total", "Times the kernel froze the capture queue.", |c| &c.kernel_freezes, true),
            (
                "wirefold_ring_drops_total",
                "Packet records dropped because a capture-to-flow ring was full (flow workers too slow).",
                |c| &c.ring_drops,
                true,
            ),
            ("wirefold_active_flows", "Flows held in the flow table now.", |c| &c.active_flows, false),
        ];
        for (name, help, f, counter) in per_thread {
            for (i, c) in self.threads.iter().enumerate() {
                let t = i.to_string();
                let l = [("interface", iface), ("thread", t.as_str())];
                let v = f(c).load(Relaxed) as f64;
                if counter {
                    e.counter(name, help, &l, v);
                } else {
                    e.gauge(name, help, &l, v);
                }
            }
        }
        for m in Malformed::ALL {
            for (i, c) in self.threads.iter().enumerate() {
                let t = i.to_string();
                e.counter(
                    "wirefold_malformed_packets_total",
                    "Packets that could not be parsed, by reason (see docs/flow-records.md).",
                    &[("interface", iface), ("thread", &t), ("reason", m.name())],
                    c.malformed[m as usize].load(Relaxed) as f64,
                );
            }
        }
        for s in Skipped::ALL {
            let v: u64 = self.threads.iter().map(|c| c.skipped[s as usize].load(Relaxed)).sum();
            e.counter(
                "wirefold_skipped_packets_total",
                "Packets that make no flow by design (not IP, unsupported link type), by reason.",
                &[("interface", iface), ("reason", s.name())],
                v as f64,
            );
        }
        let sum = |f: fn(&ThreadCounters) -> &AtomicU64| self.threads.iter().map(|c| f(c).load(Relaxed)).sum::<u64>();
        e.counter(
            "wirefold_fragments_unmatched_total",
            "Later IP fragments whose first fragment was never seen.",
            &[("interface", iface)],
            sum(|c| &c.frag_unmatched) as f64,
        );
        e.counter(
            "wirefold_flow_packets_total",
            "Packets that were folded into flows.",
            &[("interface", iface)],
            sum(|c| &c.flow_packets) as f64,
        );
        e.counter(
            "wirefold_flows_created_total",
            "Flows created.",
            &[("interface", iface)],
            sum(|c| &c.flows_created) as f64,
        );
        for r in EndReason::ALL {
            let v: u64 = self.threads.iter().map(|c| c.flows_ended[r as usize].load(Relaxed)).sum();
            e.counter(
                "wirefold_flows_ended_total",
                "Flows ended, by reason (idle, active, fin, rst, evicted, eof, shutdown).",
                &[("interface", iface), ("reason", r.name())],
                v as f64,
            );
        }
        e.counter(
            "wirefold_flow_evictions_total",
            "Times the flow table was full and evicted its least recently seen flows (raise --max-flows).",
            &[("interface", iface)],
            sum(|c| &c.eviction_passes) as f64,
        );
        e.counter(
            "wirefold_inspect_flows_total",
            "Flows whose first payload packets were inspected (given an inspection slot).",
            &[("interface", iface)],
            sum(|c| &c.inspect[0]) as f64,
        );
        e.counter(
            "wirefold_inspect_pool_exhausted_total",
            "Flows not inspected because every inspection slot was busy (raise --inspect-pool).",
            &[("interface", iface)],
            sum(|c| &c.inspect[1]) as f64,
        );
        e.counter(
            "wirefold_inspect_packets_total",
            "Payload packets handed to the inspection parsers.",
            &[("interface", iface)],
            sum(|c| &c.inspect[2]) as f64,
        );
        for (i, p) in ["tls", "quic", "dns", "http", "ssh"].into_iter().enumerate() {
            e.counter(
                "wirefold_inspect_parsed_total",
                "Messages the inspection parsers read (ClientHello/ServerHello, QUIC Initial, DNS, HTTP heads, SSH banners).",
                &[("interface", iface), ("parser", p)],
                self.threads.iter().map(|c| c.inspect_parsed[i].load(Relaxed)).sum::<u64>() as f64,
            );
        }
        for (i, (p, r, _)) in InspectStats::default().errors().enumerate() {
            e.counter(
                "wirefold_inspect_errors_total",
                "Inspection parser failures and reassembly notes, by parser and reason (the flow is still exported).",
                &[("interface", iface), ("parser", p), ("reason", r)],
                self.threads.iter().map(|c| c.inspect_errors[i].load(Relaxed)).sum::<u64>() as f64,
            );
        }
        if let Some(d) = &self.dpdk {
            d.exposition(&mut e);
        }
        self.export.exposition(&mut e);
        crate::ipfix::exposition(&self.export.ipfix, &mut e);
        if let Some(s) = &self.stream {
            stream_exposition(s, &mut e);
        }
        if let Some(c) = &self.core {
            e.extend(c.exposition());
        }
        e
    }
}

fn stream_exposition(s: &StreamCounters, e: &mut Exposition) {
    e.counter_of("wirefold_stream_batches_sent_total", "FlowBatches sent to the core (with resends).", &s.sent);
    e.counter_of(
        "wirefold_stream_batches_acked_total",
        "FlowBatches the core acknowledged as durably stored.",
        &s.acked,
    );
    e.counter_of("wirefold_stream_batches_resent_total", "FlowBatches sent again after a reconnect.", &s.resent);
    e.counter_of(
        "wirefold_stream_batches_rejected_total",
        "FlowBatches the core refused as their own fault (corrupt, invalid, out of sequence): they leave the spool; the log says why.",
        &s.rejected,
    );
    e.counter_of(
        "wirefold_stream_batches_unavailable_total",
        "FlowBatches the core could not store for now (UNAVAILABLE): kept in the spool and resent.",
        &s.unavailable,
    );
    e.counter_of(
        "wirefold_stream_reconnects_total",
        "Times the stream to the core was (re)established after a failure.",
        &s.reconnects,
    );
    e.counter_of("wirefold_spool_dropped_batches_total", "FlowBatches dropped because the spool was full: their flows are lost (raise --spool-max-mib, fix the core link).", &s.spool_dropped);
    e.gauge_of("wirefold_stream_unacked_batches", "FlowBatches sent and not yet acknowledged.", &s.in_flight);
    e.gauge_of("wirefold_spool_bytes", "Bytes of FlowBatches in the spool (not yet acknowledged).", &s.spool_bytes);
    e.gauge_of("wirefold_spool_batches", "FlowBatches in the spool.", &s.spool_batches);
    e.summary(
        "wirefold_stream_batch_rtt_seconds",
        "Batch round trip: sent to acknowledged as stored (quantiles over the last 1-2 minutes).",
        &[],
        &s.rtt,
    );
}
