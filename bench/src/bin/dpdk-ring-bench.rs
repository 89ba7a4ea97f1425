//! DPDK capture on one lcore fed without a copy: a `net_ring` device whose
//! rx ring another lcore fills with the frames of a capture, the same mbufs
//! again and again (reference counted, like a NIC's DMA into buffers). Two
//! phases in one run, same feeder: the bare read loop (rx + bulk free), then
//! wirefold's capture path (`DpdkSource` → decode → flow table → export
//! thread). Prints packets per second for each and the ratio.
//!
//! dpdk-ring-bench CAPTURE SECONDS
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wirefold_sensor::capture::dpdk::DpdkSource;
use wirefold_sensor::capture::pcap::PcapFile;
use wirefold_sensor::capture::PacketSource;
use wirefold_sensor::flow::FlowConfig;
use wirefold_sensor::live::{run_source_to_completion, ThreadCounters};
use wirefold_sensor::output::{ExportOptions, Exporter};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 3, "usage: dpdk-ring-bench CAPTURE SECONDS");
    let secs: f64 = args[2].parse()?;
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut src = PcapFile::open(&args[1])?;
    while src.next_batch(&mut |p| {
        if p.data.len() <= 2000 && p.data.len() as u32 == p.wire_len {
            frames.push(p.data.to_vec());
        }
    })? {}
    anyhow::ensure!(!frames.is_empty(), "no usable frames in {}", args[1]);
    let eal_args: Vec<String> =
        ["wirefold-bench", "--no-huge", "-m", "2048", "--no-shconf", "--no-pci", "-l", "0-1", "--vdev", "net_ring0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    // The feeder runs on a worker lcore for the whole run: the EAL and the
    // pool live as long as the process.
    let eal: &'static dpdk_shim::Eal = Box::leak(Box::new(dpdk_shim::Eal::init(&eal_args)?));
    let worker = *eal.worker_lcores().first().ok_or_else(|| anyhow::anyhow!("needs two lcores"))?;
    let pool: &'static dpdk_shim::Mempool<'static> =
        Box::leak(Box::new(dpdk_shim::Mempool::new(eal, "bench", frames.len() as u32 + 16384, 2048 + 128)?));
    let port = dpdk_shim::Port::start(eal, 0, 1, 1024, pool)?;
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let mut feeder = dpdk_shim::Replayer::new(pool, port.tx_queue(), &refs)?;
    let stop_feed = Arc::new(AtomicBool::new(false));
    let sf = stop_feed.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let launched = eal.launch(worker, move || {
        let _ = tx.send(feeder.run(&sf));
    })?;

    // Phase 1: the bare read loop.
    let mut q = port.rx_queue(0);
    let mut burst = dpdk_shim::RxBurst::new();
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(500) {
        q.rx_into(&mut burst);
    }
    let (t0, mut bare) = (Instant::now(), 0u64);
    while t0.elapsed().as_secs_f64() < secs {
        for _ in 0..1024 {
            bare += q.rx_into(&mut burst) as u64;
        }
    }
    let bare_rate = bare as f64 / t0.elapsed().as_secs_f64();
    drop(burst);

    // Phase 2: wirefold's capture path on the same lcore and queue.
    let exporter = Exporter::spawn(ExportOptions::default());
    let counters = ThreadCounters::default();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let timer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(secs));
        s2.store(true, Relaxed);
    });
    let mut src = DpdkSource::new(q);
    let t1 = Instant::now();
    let (dec, flows) =
        run_source_to_completion(&mut src, FlowConfig::default(), exporter.sink(), &counters, &stop, None, &mut || {});
    let wf_rate = dec.packets as f64 / t1.elapsed().as_secs_f64();
    let _ = timer.join();
    stop_feed.store(true, Relaxed);
    launched.wait();
    let fed: u64 = rx.recv().unwrap_or(0);
    drop(src);
    exporter.finish()?;
    println!(
        "net_ring fed by a second lcore ({} frames of {}, same mbufs reference counted; {fed} sent); {secs} s per phase",
        frames.len(),
        args[1]
    );
    println!(
        "  bare read loop (rx + free): {:.2} Mpps; wirefold capture path: {:.2} Mpps ({} malformed, {} flows created)",
        bare_rate / 1e6,
        wf_rate / 1e6,
        dec.malformed_total(),
        flows.created
    );
    println!(
        "dpdk-ring: wirefold {:.2} Mpps, bare {:.2} Mpps, ratio {:.2}",
        wf_rate / 1e6,
        bare_rate / 1e6,
        wf_rate / bare_rate
    );
    drop(port);
    Ok(())
}
