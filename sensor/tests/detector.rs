//! The bundled detector on the generator's sample captures, end to end
//! through `wirefold replay` and the real ONNX Runtime: a port scan scores
//! above the model card's threshold, a bulk transfer below it, and every
//! score is a probability.
mod common;
use common::*;
use std::path::{Path, PathBuf};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../embeddings/datagen/samples").join(name)
}

fn threshold() -> f64 {
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../embeddings/model/wirefold-det-v2.card.json"),
        )
        .unwrap(),
    )
    .unwrap();
    card["threshold"].as_f64().expect("the card states the default threshold")
}

fn scores(name: &str) -> Vec<serde_json::Value> {
    assert!(ort_lib().is_some(), "the ONNX Runtime is needed (./deploy/test.sh installs it)");
    let out = wirefold(&["replay", sample(name).to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json_lines(&out.stdout);
    for r in &v {
        let s = r["score"].as_f64().expect("a model gives every flow a score");
        assert!((0.0..=1.0).contains(&s), "score {s} is not a probability");
    }
    v
}

#[test]
fn a_scan_scores_above_the_threshold_and_a_bulk_transfer_below() {
    let t = threshold();
    assert!(t > 0.0 && t < 1.0);
    let scan = scores("nmap_syn.pcap");
    let above = scan.iter().filter(|r| r["score"].as_f64().unwrap() >= t).count();
    assert!(scan.len() > 500, "{} scan flows", scan.len());
    assert!(above as f64 >= 0.95 * scan.len() as f64, "{above} of {} scan flows above {t}", scan.len());
    let bulk = scores("bulk.pcap");
    let big = bulk.iter().max_by_key(|r| r["fwd_bytes"].as_u64().unwrap() + r["rev_bytes"].as_u64().unwrap()).unwrap();
    assert_eq!(big["dst_port"], 5201, "the iperf3 transfer");
    assert!(big["score"].as_f64().unwrap() < t, "bulk transfer scored {} (threshold {t})", big["score"]);
}

#[test]
fn the_top_scored_flows_are_in_the_summary() {
    let out = wirefold(&["replay", "--top", "3", "--no-output", sample("mixed.pcap").to_str().unwrap()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let at = err.find("top 3 flows by score").expect("a scored summary");
    let lines: Vec<&str> = err[at..].lines().skip(1).take(3).collect();
    for l in &lines {
        let s: f64 = l.split_whitespace().next().unwrap().parse().unwrap();
        assert!(s >= threshold(), "{l}");
        assert!(l.contains("10.77.0.66"), "the attacker's flows lead: {l}");
    }
}
