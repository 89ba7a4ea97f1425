//! The bare DPDK read loop: receive bursts on one queue and free them, for
//! a given number of seconds; prints packets per second. `bench/dpdk.sh` runs
//! it next to `wirefold capture --dpdk` as the ceiling the PMD itself sets
//! (for net_pcap, its own copy out of the file buffer).
//!
//! cargo run --release -p dpdk-shim --example rxonly -- SECONDS MBUFS EAL-ARGS...
use dpdk_shim::{Eal, Mempool, Port, RxBurst};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: rxonly SECONDS MBUFS EAL-ARGS...");
        std::process::exit(2);
    }
    let secs: f64 = args[1].parse().expect("SECONDS");
    let mbufs: u32 = args[2].parse().expect("MBUFS");
    let eal = Eal::init(&args[3..]).unwrap_or_else(|e| {
        eprintln!("rxonly: {e}");
        std::process::exit(2)
    });
    let pool = Mempool::new(&eal, "rxonly", mbufs, 2048 + 128).expect("mempool");
    let port = Port::start(&eal, 0, 1, 1024, &pool).expect("port 0");
    let mut q = port.rx_queue(0);
    let mut burst = RxBurst::new();
    // Warm up for a second, then count.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(1) {
        q.rx_into(&mut burst);
    }
    let (t0, mut n, mut bytes) = (Instant::now(), 0u64, 0u64);
    let until = Duration::from_secs_f64(secs);
    while t0.elapsed() < until {
        for _ in 0..1024 {
            let got = q.rx_into(&mut burst);
            n += got as u64;
            for i in 0..got {
                bytes += burst.get(i).1 as u64;
            }
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    drop(burst);
    println!("rxonly: {:.0} pkt/s ({} packets, {} bytes, {:.2} s)", n as f64 / dt, n, bytes, dt);
}
