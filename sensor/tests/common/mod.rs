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

/// The ONNX Runtime library for embedding: `ORT_DYLIB_PATH`, or the one
/// `./deploy/test.sh` installs into `.local/venv`.
pub fn ort_lib() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(p));
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/venv/lib");
    let py = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("python")))?;
    let capi = py.path().join("site-packages/onnxruntime/capi");
    std::fs::read_dir(capi)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so.1")))
}

/// A `wirefold` command with the ONNX Runtime found.
pub fn wirefold_cmd() -> Command {
    let mut c = Command::new(bin());
    if let Some(p) = ort_lib() {
        c.env("ORT_DYLIB_PATH", p);
    }
    c
}

/// Run `wirefold` with arguments.
pub fn wirefold(args: &[&str]) -> Output {
    wirefold_cmd().args(args).output().expect("run wirefold")
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

/// A flow's key as the tests compare it: protocol, VLAN list, and the
/// endpoint pair in canonical order.
pub type Key = (u64, String, (String, u64), (String, u64));

/// Flows aggregated per key and per direction: (lo→hi packets, lo→hi bytes,
/// hi→lo packets, hi→lo bytes). Robust to where records were split.
pub fn by_key(flows: &[serde_json::Value]) -> std::collections::BTreeMap<Key, [u64; 4]> {
    let mut m = std::collections::BTreeMap::new();
    for f in flows {
        let a = (f["src_ip"].as_str().unwrap().to_string(), f["src_port"].as_u64().unwrap());
        let b = (f["dst_ip"].as_str().unwrap().to_string(), f["dst_port"].as_u64().unwrap());
        let fwd = [f["fwd_packets"].as_u64().unwrap(), f["fwd_bytes"].as_u64().unwrap()];
        let rev = [f["rev_packets"].as_u64().unwrap(), f["rev_bytes"].as_u64().unwrap()];
        let (lo, hi, up, down) = if a <= b { (a, b, fwd, rev) } else { (b, a, rev, fwd) };
        let e: &mut [u64; 4] = m.entry((f["proto"].as_u64().unwrap(), f["vlan"].to_string(), lo, hi)).or_default();
        for (i, v) in [up[0], up[1], down[0], down[1]].into_iter().enumerate() {
            e[i] += v;
        }
    }
    m
}

/// Samples: (name, labels) → value.
pub type Samples = std::collections::BTreeMap<(String, std::collections::BTreeMap<String, String>), f64>;

pub fn parse_metrics(text: &str) -> Samples {
    let mut m = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").expect("label");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (series.to_string(), std::collections::BTreeMap::new()),
        };
        m.insert((name, labels), value.parse().expect("value"));
    }
    m
}

/// Sum of a metric over the samples whose labels include `with`.
pub fn metric_sum(s: &Samples, name: &str, with: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|((n, l), _)| n == name && with.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, v)| *v)
        .sum()
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `path` over HTTP/1.0: the status code and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut s, format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Write a secret file (a tokens file) that only its owner may read, as
/// the core demands.
#[allow(dead_code)]
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
