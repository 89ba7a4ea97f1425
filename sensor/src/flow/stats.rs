//! Per-direction counters and packet-size / inter-arrival statistics.

/// Counters for one direction of a flow. Sizes are bytes at the IP layer;
/// inter-arrival times are nanoseconds between packets of this direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DirStats {
    /// Packets.
    pub packets: u64,
    /// Bytes at the IP layer.
    pub bytes: u64,
    /// Transport payload bytes.
    pub payload_bytes: u64,
    /// Smallest packet.
    pub size_min: u32,
    /// Largest packet.
    pub size_max: u32,
    /// Sum of squared packet sizes (for the standard deviation).
    pub size_sq_sum: f64,
    /// Time of the last packet in this direction.
    pub last_ns: u64,
    /// Smallest inter-arrival time.
    pub iat_min_ns: u64,
    /// Largest inter-arrival time.
    pub iat_max_ns: u64,
    /// Sum of inter-arrival times.
    pub iat_sum_ns: u64,
    /// Sum of squared inter-arrival times, in seconds squared.
    pub iat_sq_sum_s2: f64,
}

/// Minimum, maximum, mean and population standard deviation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
}

fn summary(n: u64, min: f64, max: f64, sum: f64, sq_sum: f64) -> Summary {
    if n == 0 {
        return Summary::default();
    }
    let mean = sum / n as f64;
    let var = (sq_sum / n as f64 - mean * mean).max(0.0);
    Summary { min, max, mean, std: var.sqrt() }
}

impl DirStats {
    /// Count one packet of `size` IP bytes and `payload` transport bytes at `ts_ns`.
    #[inline]
    pub fn add(&mut self, ts_ns: u64, size: u32, payload: u32) {
        if self.packets == 0 {
            self.size_min = size;
            self.size_max = size;
        } else {
            self.size_min = self.size_min.min(size);
            self.size_max = self.size_max.max(size);
            let iat = ts_ns.saturating_sub(self.last_ns);
            if self.packets == 1 {
                self.iat_min_ns = iat;
                self.iat_max_ns = iat;
            } else {
                self.iat_min_ns = self.iat_min_ns.min(iat);
                self.iat_max_ns = self.iat_max_ns.max(iat);
            }
            self.iat_sum_ns += iat;
            let s = iat as f64 / 1e9;
            self.iat_sq_sum_s2 += s * s;
        }
        self.packets += 1;
        self.bytes += size as u64;
        self.payload_bytes += payload as u64;
        self.size_sq_sum += (size as f64) * (size as f64);
        self.last_ns = self.last_ns.max(ts_ns);
    }

    /// Packet-size statistics in bytes.
    pub fn size(&self) -> Summary {
        summary(self.packets, self.size_min as f64, self.size_max as f64, self.bytes as f64, self.size_sq_sum)
    }

    /// Inter-arrival statistics in seconds.
    pub fn iat(&self) -> Summary {
        summary(
            self.packets.saturating_sub(1),
            self.iat_min_ns as f64 / 1e9,
            self.iat_max_ns as f64 / 1e9,
            self.iat_sum_ns as f64 / 1e9,
            self.iat_sq_sum_s2,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_gaps() {
        let mut d = DirStats::default();
        d.add(1_000_000_000, 100, 60);
        d.add(1_500_000_000, 300, 260);
        d.add(3_500_000_000, 200, 160);
        assert_eq!((d.packets, d.bytes, d.payload_bytes), (3, 600, 480));
        let s = d.size();
        assert_eq!((s.min, s.max, s.mean), (100.0, 300.0, 200.0));
        assert!((s.std - 81.6496580927726).abs() < 1e-9);
        let i = d.iat();
        assert_eq!((i.min, i.max), (0.5, 2.0));
        assert!((i.mean - 1.25).abs() < 1e-12);
        assert!((i.std - 0.75).abs() < 1e-9);
    }

    #[test]
    fn one_packet_has_no_gaps_and_no_nan() {
        let mut d = DirStats::default();
        d.add(5, 40, 0);
        let i = d.iat();
        assert_eq!(i, Summary::default());
        assert_eq!(d.size().std, 0.0);
        assert_eq!(DirStats::default().size(), Summary::default());
    }
}
