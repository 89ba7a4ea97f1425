//! Helpers shared by the integration tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `wirefold` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wirefold"))
}

/// The captures bundled with the repository.
pub fn pcaps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pcaps")
}

/// One bundled capture.
pub fn pcap(name: &str) -> PathBuf {
    let p = pcaps().join(name);
    assert!(p.exists(), "missing test capture {}", p.display());
    p
}

/// The developers' full corpus, when it is present next to the checkout
/// (or named by `WIREFOLD_CORPUS`). Tests use it in addition to the bundled
/// captures, never instead of them.
pub fn shared_corpus() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("WIREFOLD_CORPUS") {
        let p = PathBuf::from(p);
        return p.is_dir().then_some(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/pcaps");
    p.is_dir().then_some(p)
}

/// Capture files in a folder, sorted.
pub fn captures_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pcap") | Some("pcapng")))
        .collect();
    v.sort();
    v
}

/// Run `wirefold` with arguments.
pub fn wirefold(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run wirefold")
}

/// Parse JSON Lines.
pub fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out).lines().map(|l| serde_json::from_str(l).expect("valid JSON line")).collect()
}

/// A scratch directory unique to this test process and name.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wirefold-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
