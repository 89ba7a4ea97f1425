//! The zero-copy feeder on the real EAL: a `net_ring` device fed by a
//! `Replayer` on a worker lcore delivers the frames intact and in order,
//! across many passes and across reference-count refills.
use dpdk_shim::{Eal, Mempool, Port, Replayer, RxBurst, CREDIT};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

#[test]
fn net_ring_fed_by_a_replayer_delivers_the_frames_in_order() {
    let args: Vec<String> = [
        "test",
        "--no-huge",
        "-m",
        "512",
        "--no-shconf",
        "--no-pci",
        "-l",
        "0-1",
        "--vdev",
        "net_ring0",
        "--log-level",
        "error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal: &'static Eal = Box::leak(Box::new(Eal::init(&args).expect("EAL")));
    let worker = eal.worker_lcores()[0];
    let pool: &'static Mempool<'static> = Box::leak(Box::new(Mempool::new(eal, "t", 8192, 2048 + 128).unwrap()));
    let port = Port::start(eal, 0, 1, 1024, pool).expect("net_ring0");
    let frames: Vec<Vec<u8>> =
        (0..3u8).map(|i| (0..60 + 7 * i as usize).map(|b| b as u8 ^ (i * 85)).collect()).collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let mut feeder = Replayer::new(pool, port.tx_queue(), &refs).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, (tx, rx)) = (stop.clone(), std::sync::mpsc::channel());
    let l = eal.launch(worker, move || tx.send(feeder.run(&s2)).unwrap()).unwrap();
    // Enough packets that every mbuf's reference count is refilled twice.
    let want = 3 * 2 * CREDIT as u64 + 1000;
    let mut q = port.rx_queue(0);
    let mut burst = RxBurst::new();
    let mut got = 0u64;
    while got < want {
        let n = q.rx_into(&mut burst);
        for i in 0..n {
            let (data, len) = burst.get(i);
            let f = &frames[(got % 3) as usize];
            assert_eq!(data, &f[..], "packet {got}");
            assert_eq!(len as usize, f.len());
            got += 1;
        }
    }
    burst.clear();
    stop.store(true, Relaxed);
    l.wait();
    let sent = rx.recv().unwrap();
    assert!(sent >= got, "sent {sent}, read {got}");
}
