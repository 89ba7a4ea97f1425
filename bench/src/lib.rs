//! Shared helpers for Wirefold's benchmark binaries.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::path::Path;
use wirefold_sensor::capture::pcap::PcapFile;
use wirefold_sensor::flow::{EndReason, FinishedFlow, FlowConfig};
use wirefold_sensor::pipeline::Pipeline;

/// Replay `files` and collect every finished flow.
pub fn flows_of(files: &[impl AsRef<Path>]) -> anyhow::Result<Vec<FinishedFlow>> {
    let mut pipe = Pipeline::new(FlowConfig::default());
    let mut flows = Vec::new();
    for f in files {
        let mut src = PcapFile::open(f)?;
        let _ = pipe.run(&mut src, &mut |ff| {
            flows.push(ff);
            Ok(())
        });
    }
    pipe.finish(EndReason::Eof, &mut |ff| {
        flows.push(ff);
        Ok(())
    })?;
    Ok(flows)
}

/// Pin the calling thread to one CPU, so "one core" means one core.
pub fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// The median of some samples.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
