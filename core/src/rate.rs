//! The per-sensor rate law: a token bucket per sensor, shared by all of that
//! sensor's streams and kept across reconnects, so neither parallel streams
//! nor reconnecting reset it. Time is an argument (no clock is read here),
//! so tests drive it with a virtual clock.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Rate and burst of the law.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Flows per second.
    pub flows_per_s: f64,
    /// Bucket depth in flows.
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ns: u64,
}

/// Token buckets by sensor.
#[derive(Debug)]
pub struct RateLaw {
    rate: Rate,
    buckets: HashMap<Arc<str>, Bucket>,
}

impl RateLaw {
    /// A law of `rate` for every sensor.
    pub fn new(rate: Rate) -> Self {
        RateLaw { rate: Rate { flows_per_s: rate.flows_per_s, burst: rate.burst.max(1.0) }, buckets: HashMap::new() }
    }

    /// Charge `flows` to `sensor` at time `now_ns` (any monotonic clock);
    /// returns how long the caller must wait before handing the batch on
    /// (zero when the bucket covers it). The charge is taken at once, so
    /// the bucket may go into debt: a second stream of the same sensor then
    /// waits for the first one's flows as well.
    pub fn charge(&mut self, sensor: &Arc<str>, flows: usize, now_ns: u64) -> Duration {
        let Rate { flows_per_s, burst } = self.rate;
        let b = self.buckets.entry(sensor.clone()).or_insert(Bucket { tokens: burst, at_ns: now_ns });
        let dt = now_ns.saturating_sub(b.at_ns) as f64 / 1e9;
        b.tokens = (b.tokens + dt * flows_per_s).min(burst);
        b.at_ns = b.at_ns.max(now_ns);
        b.tokens -= flows as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / flows_per_s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_rate_on_a_virtual_clock() {
        let mut law = RateLaw::new(Rate { flows_per_s: 100.0, burst: 50.0 });
        let a: Arc<str> = "a".into();
        assert_eq!(law.charge(&a, 50, 0), Duration::ZERO, "the burst is free");
        assert_eq!(law.charge(&a, 100, 0), Duration::from_secs(1), "100 flows beyond the burst take 1 s");
        // One second later the debt is paid; half a second more buys 50.
        assert_eq!(law.charge(&a, 50, S + S / 2), Duration::ZERO);
        assert!(law.charge(&a, 1, S + S / 2) > Duration::ZERO);
    }

    #[test]
    fn streams_of_one_sensor_share_a_bucket_and_sensors_do_not() {
        let mut law = RateLaw::new(Rate { flows_per_s: 400.0, burst: 400.0 });
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        // Four streams of sensor a each charge 400 flows at t = 0: together
        // they wait as long as one stream sending 1,600 would.
        let waits: Vec<Duration> = (0..4).map(|_| law.charge(&a, 400, 0)).collect();
        assert_eq!(waits[3], Duration::from_secs(3));
        // Over 10 s of virtual time, sensor a gets no more than rate * t + burst.
        let mut t = 0u64;
        let mut sent = 1600u64;
        while t < 10 * S {
            let w = law.charge(&a, 100, t);
            sent += 100;
            t += w.as_nanos() as u64;
        }
        assert!(sent as f64 <= 400.0 * 10.0 + 400.0 + 100.0, "{sent} flows in 10 s");
        // Sensor b is not affected by a's debt.
        assert_eq!(law.charge(&b, 400, t), Duration::ZERO);
    }

    #[test]
    fn a_clock_that_goes_back_buys_nothing() {
        let mut law = RateLaw::new(Rate { flows_per_s: 10.0, burst: 10.0 });
        let a: Arc<str> = "a".into();
        assert_eq!(law.charge(&a, 10, 5 * S), Duration::ZERO);
        assert_eq!(law.charge(&a, 10, S), Duration::from_secs(1));
    }
}
