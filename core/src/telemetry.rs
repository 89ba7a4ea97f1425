//! Prometheus exposition shared by the sensor and the core: a scrape-time
//! builder of metric families (the `prometheus` crate's data model and text
//! encoder), latency summaries backed by hdrhistogram, and a small HTTP
//! server for `/metrics`.
//!
//! Counters live where the work happens (plain per-thread counters published
//! to atomics now and then); a scrape reads them and builds the families, so
//! nothing is registered ahead of time and every family is present, at zero,
//! from the first scrape.
use crate::listen::{ListenCounters, ListenLimits};
use hdrhistogram::Histogram;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary};
use prometheus::{Encoder, TextEncoder};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `--metrics ADDR`, shared by every subcommand that runs.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Telemetry")]
pub struct TelemetryArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9462, or port 0 for any free port).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// Metric families being built for one scrape.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<MetricFamily>,
}

fn labels(l: &[(&str, &str)]) -> Vec<LabelPair> {
    l.iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name(k.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect()
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, name: &str, help: &str, t: MetricType) -> &mut MetricFamily {
        let i = match self.families.iter().position(|f| f.name() == name) {
            Some(i) => i,
            None => {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(t);
                self.families.push(f);
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// A counter sample (`name` should end in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, l: &[(&str, &str)], value: f64) {
        let mut c = Counter::default();
        c.set_value(value);
        let mut m = Metric::from_label(labels(l));
        m.set_counter(c);
        self.family(name, help, MetricType::COUNTER).mut_metric().push(m);
    }

    /// A gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, l: &[(&str, &str)], value: f64) {
        let mut g = Gauge::default();
        g.set_value(value);
        let mut m = Metric::from_label(labels(l));
        m.set_gauge(g);
        self.family(name, help, MetricType::GAUGE).mut_metric().push(m);
    }

    /// An unlabelled counter read from an atomic.
    pub fn counter_of(&mut self, name: &str, help: &str, v: &std::sync::atomic::AtomicU64) {
        self.counter(name, help, &[], v.load(Relaxed) as f64);
    }

    /// An unlabelled gauge read from an atomic.
    pub fn gauge_of(&mut self, name: &str, help: &str, v: &std::sync::atomic::AtomicU64) {
        self.gauge(name, help, &[], v.load(Relaxed) as f64);
    }

    /// A summary sample from a [`Latency`] (in seconds).
    pub fn summary(&mut self, name: &str, help: &str, l: &[(&str, &str)], lat: &Latency) {
        let s = lat.snapshot();
        let mut sum = Summary::default();
        sum.set_sample_count(s.count);
        sum.set_sample_sum(s.sum_seconds);
        sum.set_quantile(
            s.quantiles
                .iter()
                .map(|(q, v)| {
                    let mut x = Quantile::default();
                    x.set_quantile(*q);
                    x.set_value(*v);
                    x
                })
                .collect(),
        );
        let mut m = Metric::from_label(labels(l));
        m.set_summary(sum);
        self.family(name, help, MetricType::SUMMARY).mut_metric().push(m);
    }

    /// Add everything from another exposition.
    pub fn extend(&mut self, other: Exposition) {
        self.families.extend(other.families);
    }

    /// Names of the families built so far.
    pub fn names(&self) -> Vec<String> {
        self.families.iter().map(|f| f.name().to_string()).collect()
    }

    /// The Prometheus text format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.families, &mut buf) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Quantiles a latency summary reports.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];
/// Quantiles cover roughly the last one to two of these windows.
pub const WINDOW: Duration = Duration::from_secs(60);

/// A latency distribution for a Prometheus summary: hdrhistogram with two
/// significant digits from 1 µs to 1 hour. Quantiles cover the last one to
/// two minutes (two rotating histograms); count and sum cover the process's
/// life. Recorded once per batch (or merged from a per-batch local
/// histogram), never per packet, so the lock is cheap.
#[derive(Debug)]
pub struct Latency {
    inner: Mutex<LatencyInner>,
}

#[derive(Debug)]
struct LatencyInner {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    rotated: Instant,
    count: u64,
    sum_ns: u128,
}

/// What a scrape reports for a [`Latency`].
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// Observations since start.
    pub count: u64,
    /// Their sum, seconds.
    pub sum_seconds: f64,
    /// (quantile, seconds) over the recent window; empty when nothing was recorded recently.
    pub quantiles: Vec<(f64, f64)>,
}

/// Lowest and highest trackable values, nanoseconds.
const LOW_NS: u64 = 1_000;
const HIGH_NS: u64 = 3_600_000_000_000;

/// A histogram with the bounds [`Latency`] uses, for batching records locally.
pub fn local_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOW_NS, HIGH_NS, 2).expect("valid histogram bounds")
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty distribution.
    pub fn new() -> Self {
        Latency {
            inner: Mutex::new(LatencyInner {
                current: local_histogram(),
                previous: local_histogram(),
                rotated: Instant::now(),
                count: 0,
                sum_ns: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LatencyInner> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.rotated.elapsed() >= WINDOW {
            let LatencyInner { current, previous, .. } = &mut *g;
            std::mem::swap(current, previous);
            current.reset();
            g.rotated = Instant::now();
        }
        g
    }

    /// Record one duration.
    pub fn record(&self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        let mut g = self.lock();
        g.current.saturating_record(ns.clamp(LOW_NS, HIGH_NS));
        g.count += 1;
        g.sum_ns += ns as u128;
    }

    /// Merge a local histogram of nanosecond values (see [`local_histogram`]),
    /// with the exact sum of what it holds, and reset it.
    pub fn merge(&self, local: &mut Histogram<u64>, sum_ns: u128) {
        if local.is_empty() {
            return;
        }
        let mut g = self.lock();
        let _ = g.current.add(&*local);
        g.count += local.len();
        g.sum_ns += sum_ns;
        local.reset();
    }

    /// Count, sum and recent quantiles.
    pub fn snapshot(&self) -> LatencySnapshot {
        let g = self.lock();
        let mut both = g.current.clone();
        let _ = both.add(&g.previous);
        let quantiles = if both.is_empty() {
            Vec::new()
        } else {
            QUANTILES.iter().map(|q| (*q, both.value_at_quantile(*q) as f64 / 1e9)).collect()
        };
        LatencySnapshot { count: g.count, sum_seconds: g.sum_ns as f64 / 1e9, quantiles }
    }
}

/// The `/metrics` HTTP endpoint on a thread of its own: HTTP/1.1 (hyper)
/// behind the same accept loop as the gRPC port ([`crate::listen`]): at
/// most [`METRICS_MAX_CONNECTIONS`] connections, a 5 s handshake and header
/// timeout, 10 s idle timeout, 16 KiB of request head, one request per
/// connection.
pub struct MetricsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its listener's counters.
    pub counters: Arc<ListenCounters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer").field("addr", &self.addr).finish()
    }
}

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Connections the metrics endpoint holds open at once.
pub const METRICS_MAX_CONNECTIONS: usize = 32;
/// Largest request head (request line and headers) the metrics endpoint reads.
pub const METRICS_MAX_HEAD: usize = 16 << 10;

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("cannot serve metrics on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        error: std::io::Error,
    },
    /// The thread or its runtime could not start.
    #[error("cannot start the metrics server: {0}")]
    Start(std::io::Error),
}

impl MetricsServer {
    /// Listen on `addr` and answer `GET /metrics` with what `render` builds.
    pub fn start(
        addr: SocketAddr,
        render: impl Fn() -> Exposition + Send + Sync + 'static,
    ) -> Result<MetricsServer, MetricsError> {
        let std_listener = std::net::TcpListener::bind(addr).map_err(|error| MetricsError::Bind { addr, error })?;
        std_listener.set_nonblocking(true).map_err(MetricsError::Start)?;
        let bound = std_listener.local_addr().map_err(MetricsError::Start)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(MetricsError::Start)?;
        let counters = Arc::new(ListenCounters::default());
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let c2 = counters.clone();
        let render = Arc::new(render);
        let thread = std::thread::Builder::new()
            .name("wirefold-metrics".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("wirefold metrics: {e}");
                            return;
                        }
                    };
                    let limits = ListenLimits {
                        max_connections: METRICS_MAX_CONNECTIONS,
                        handshake_timeout: Duration::from_secs(5),
                        idle_timeout: Duration::from_secs(10),
                    };
                    let mut conns = crate::listen::accept_loop(listener, limits, c2, "wirefold metrics");
                    let mut stop_rx = stop_rx;
                    loop {
                        let conn = tokio::select! {
                            c = conns.recv() => match c { Some(Ok(c)) => c, Some(Err(_)) => continue, None => return },
                            _ = &mut stop_rx => return,
                        };
                        let render = render.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                                let render = render.clone();
                                async move { Ok::<_, std::convert::Infallible>(respond(&req, &*render)) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .timer(hyper_util::rt::TokioTimer::new())
                                .header_read_timeout(Duration::from_secs(5))
                                .max_buf_size(METRICS_MAX_HEAD)
                                .keep_alive(false)
                                .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                                .await;
                        });
                    }
                });
            })
            .map_err(MetricsError::Start)?;
        Ok(MetricsServer { addr: bound, counters, stop: Some(stop), thread: Some(thread) })
    }

    /// Stop serving.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(
    req: &hyper::Request<hyper::body::Incoming>,
    render: &dyn Fn() -> Exposition,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use hyper::{header, Method, Response, StatusCode};
    let text = |status: StatusCode, body: String, ctype: &'static str| {
        let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(ctype));
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => text(StatusCode::OK, render().encode(), CONTENT_TYPE),
        (&Method::GET, "/") => text(StatusCode::OK, "wirefold: metrics are at /metrics\n".into(), "text/plain"),
        _ => text(StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n".into(), "text/plain"),
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_and_sum() {
        let l = Latency::new();
        assert_eq!(l.snapshot().quantiles, vec![]);
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.snapshot();
        assert_eq!(s.count, 100);
        assert!((s.sum_seconds - 5.05).abs() < 1e-9, "{}", s.sum_seconds);
        let p50 = s.quantiles.iter().find(|(q, _)| *q == 0.5).unwrap().1;
        let p99 = s.quantiles.iter().find(|(q, _)| *q == 0.99).unwrap().1;
        assert!((0.049..=0.051).contains(&p50), "p50 {p50}");
        assert!((0.098..=0.1).contains(&p99), "p99 {p99}");
        let mut local = local_histogram();
        local.record(2_000_000_000).unwrap();
        l.merge(&mut local, 2_000_000_000);
        assert!(local.is_empty());
        assert_eq!(l.snapshot().count, 101);
    }

    #[test]
    fn exposition_text() {
        let mut e = Exposition::new();
        e.counter("wirefold_test_total", "A test.", &[("reason", "a")], 3.0);
        e.counter("wirefold_test_total", "A test.", &[("reason", "b")], 4.0);
        e.gauge("wirefold_depth", "Depth.", &[], 7.0);
        let l = Latency::new();
        l.record(Duration::from_millis(5));
        e.summary("wirefold_lat_seconds", "Latency.", &[], &l);
        let t = e.encode();
        assert!(t.contains("# TYPE wirefold_test_total counter\n"), "{t}");
        assert!(t.contains("wirefold_test_total{reason=\"a\"} 3\n"), "{t}");
        assert!(t.contains("wirefold_test_total{reason=\"b\"} 4\n"), "{t}");
        assert!(t.contains("wirefold_depth 7\n"), "{t}");
        assert!(t.contains("wirefold_lat_seconds_count 1\n"), "{t}");
        assert!(t.contains("wirefold_lat_seconds{quantile=\"0.99\"} 0.005"), "{t}");
        assert_eq!(e.names(), vec!["wirefold_test_total", "wirefold_depth", "wirefold_lat_seconds"]);
    }

    #[test]
    fn serves_metrics_over_http() {
        use std::io::{Read, Write};
        let srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), || {
            let mut e = Exposition::new();
            e.gauge("wirefold_up", "Up.", &[], 1.0);
            e
        })
        .unwrap();
        let get = |path: &str| {
            let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("/metrics");
        assert!(ok.starts_with("HTTP/1.1 200") || ok.starts_with("HTTP/1.0 200"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("wirefold_up 1"), "{ok}");
        assert!(get("/nope").contains(" 404 "));
        // A request head over the limit is refused, and the server goes on.
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 << 10));
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(!out.contains("wirefold_up"), "{out}");
        assert!(get("/metrics").contains("wirefold_up 1"));
        srv.stop();
    }
}
