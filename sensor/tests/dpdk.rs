//! DPDK capture on the real EAL from Debian's package, with virtual
//! devices: net_pcap reading corpus captures, and net_af_packet on a veth
//! pair fed by tcpreplay. Built and run with `--features dpdk`.
#![cfg(feature = "dpdk")]
mod common;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const EAL: &str = "--no-huge -m 512 --no-shconf --no-pci -l 0";

fn dpdk_capture(
    tag: &str,
    eal: &str,
    extra: &[&str],
    netns: Option<&str>,
) -> (std::process::Output, Vec<Value>, Value) {
    let dir = scratch(&format!("dpdk-{tag}"));
    let out = dir.join("flows.jsonl");
    let sum = dir.join("summary.json");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    cmd.env("ORT_DYLIB_PATH", ort_lib().expect("ONNX Runtime"))
        .args(["capture", "--dpdk", "--eal", eal, "--no-embed", "--status-interval", "0"])
        .args(["--idle-timeout", "never", "--active-timeout", "never"])
        .args(["--out", out.to_str().unwrap(), "--summary-json", sum.to_str().unwrap()])
        .args(extra);
    let o = cmd.output().expect("run wirefold capture --dpdk");
    let flows = std::fs::read(&out).map(|b| json_lines(&b)).unwrap_or_default();
    let summary = std::fs::read(&sum).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
    (o, flows, summary)
}

fn offline(files: &[PathBuf]) -> Vec<Value> {
    let mut args = vec!["replay", "--no-embed", "--idle-timeout", "never", "--active-timeout", "never"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    json_lines(&wirefold(&args).stdout)
}

#[test]
fn net_pcap_flows_equal_offline_replay() {
    for name in [
        "zeek__workshop_2011_browse.pcap",
        "zeek__http-qinq-0.pcap",
        "zeek__dns-edns-ecs.pcap",
        "zeek__tunnels__gre-sample.pcap",
        "zeek__smtp.pcap",
    ] {
        let f = pcap(name);
        let eal = format!("{EAL} --vdev net_pcap0,rx_pcap={}", f.display());
        let (o, flows, summary) = dpdk_capture(name, &eal, &["--idle-exit", "1s"], None);
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let want = by_key(&offline(std::slice::from_ref(&f)));
        assert!(!want.is_empty());
        assert_eq!(by_key(&flows), want, "{name}: DPDK flows differ from replay");
        let d = &summary["live"]["dpdk"];
        assert_eq!(d["imissed"], 0, "{summary}");
        assert_eq!(d["ipackets"], summary["packets"], "{summary}");
    }
}

#[test]
fn net_af_packet_on_veth_equals_offline() {
    // Root-only, like the AF_PACKET tests.
    if std::env::var_os("WIREFOLD_SKIP_LIVE").is_some() {
        return;
    }
    let ns = format!("wfd{}", std::process::id());
    let run = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    run(&["netns", "add", &ns]);
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _guard = Del(ns.clone());
    assert!(Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1"
        ])
        .status()
        .unwrap()
        .success());
    run(&["-n", &ns, "link", "add", "wfa", "type", "veth", "peer", "name", "wfb"]);
    for l in ["wfa", "wfb"] {
        run(&["-n", &ns, "link", "set", l, "mtu", "9000", "up"]);
    }
    let files: Vec<PathBuf> = ["zeek__workshop_2011_browse.pcap", "zeek__smtp.pcap", "zeek__ssh__sshguess.pcap"]
        .iter()
        .map(|f| pcap(f))
        .collect();
    let eal = format!("{EAL} --vdev net_af_packet0,iface=wfb");
    let ns2 = ns.clone();
    let files2 = files.clone();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let o = Command::new("ip")
            .args(["netns", "exec", &ns2, "tcpreplay", "-i", "wfa", "--pps", "3000"])
            .args(&files2)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines()
            .find_map(|l| l.trim().strip_prefix("Successful packets:").map(|v| v.trim().parse::<u64>().unwrap()))
            .unwrap()
    });
    let (o, flows, summary) = dpdk_capture("afp", &eal, &["--idle-exit", "2s"], Some(&ns));
    let sent = sender.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(summary["packets"].as_u64().unwrap(), sent, "{summary}");
    assert_eq!(summary["live"]["dpdk"]["imissed"], 0, "{summary}");
    assert_eq!(by_key(&flows), by_key(&offline(&files)));
}

#[test]
fn dpdk_errors_are_clear_and_exit_2() {
    let check = |eal: &str, extra: &[&str], needle: &str| {
        let (o, _, _) = dpdk_capture("err", eal, extra, None);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains(needle), "expected '{needle}' in: {e}");
    };
    check(&format!("{EAL} --definitely-not-an-eal-flag"), &[], "DPDK: EAL init with arguments");
    check(EAL, &[], "no Ethernet ports");
    let f = pcap("zeek__smtp.pcap");
    check(
        &format!("--no-huge -m 512 --no-shconf --no-pci -l 0-1 --vdev net_pcap0,rx_pcap={}", f.display()),
        &["--queues", "2"],
        "port 0 has 1 rx queues, 2 were asked for",
    );
    check(&format!("{EAL} --vdev net_pcap0,rx_pcap={}", f.display()), &["--queues", "2"], "2 rx queues need 2 lcores");
}

#[test]
fn dpdk_port_counters_reach_metrics() {
    use std::io::{BufRead, BufReader};
    let f = pcap("zeek__workshop_2011_browse.pcap");
    let dir = scratch("dpdk-metrics");
    let sum = dir.join("summary.json");
    let eal = format!("{EAL} --vdev net_pcap0,rx_pcap={}", f.display());
    let mut child = Command::new(bin())
        .env("ORT_DYLIB_PATH", ort_lib().expect("ONNX Runtime"))
        .args(["capture", "--dpdk", "--eal", &eal, "--no-embed", "--no-output", "--idle-exit", "1s"])
        .args(["--summary-json", sum.to_str().unwrap(), "--metrics", "127.0.0.1:0", "--linger", "never"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no metrics line");
        if let Some(rest) = line.split("metrics on http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let t = std::time::Instant::now();
    while !sum.exists() {
        assert!(t.elapsed() < std::time::Duration::from_secs(60), "no summary");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (status, text) = http_get(addr.parse().unwrap(), "/metrics");
    assert_eq!(status, 200);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
    let summary: Value = serde_json::from_slice(&std::fs::read(&sum).unwrap()).unwrap();
    let m = parse_metrics(&text);
    let d = &summary["live"]["dpdk"];
    assert!(d["ipackets"].as_f64().unwrap() > 100.0, "{summary}");
    assert_eq!(metric_sum(&m, "wirefold_dpdk_ipackets_total", &[("port", "0")]), d["ipackets"].as_f64().unwrap());
    assert_eq!(metric_sum(&m, "wirefold_dpdk_imissed_total", &[]), d["imissed"].as_f64().unwrap());
    assert_eq!(metric_sum(&m, "wirefold_dpdk_rx_nombuf_total", &[]), d["rx_nombuf"].as_f64().unwrap());
    assert_eq!(
        metric_sum(&m, "wirefold_packets_total", &[("interface", "dpdk:0")]),
        summary["packets"].as_f64().unwrap()
    );
    assert_eq!(metric_sum(&m, "wirefold_flows_ended_total", &[]), summary["flows_total"].as_f64().unwrap());
}
