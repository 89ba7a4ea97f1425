//! DNS, HTTP and SSH parsers on real captures against tshark's fields.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::{decode, frames, reassemble, tcp_directions, tshark, DirKey};
use wirefold_inspect::{dns, http, ssh};

fn fields(file: &str, filter: &str, f: &[&str]) -> Option<Vec<Vec<String>>> {
    let mut args = vec!["-Y", filter, "-T", "fields", "-E", "occurrence=f"];
    for x in f {
        args.push("-e");
        args.push(x);
    }
    let out = tshark(file, &args)?;
    Some(out.lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect())
}

fn ip(a: &str, b: &str) -> IpAddr {
    if a.is_empty() { b } else { a }.parse().unwrap()
}

#[test]
fn dns_matches_tshark() {
    let mut total = 0;
    for file in ["zeek__dns-edns-ecs.pcap", "zeek__dns__mdns.pcap", "zeek__ipv6-fragmented-dns.pcap"] {
        let frames = frames(file);
        // Our own reading of every unfragmented UDP frame.
        let ours: Vec<Option<Vec<u8>>> =
            frames.iter().map(|(l, f)| decode(*l, f).filter(|p| p.proto == 17).map(|p| p.payload)).collect();
        let f = [
            "frame.number",
            "dns.qry.name",
            "dns.qry.type",
            "dns.flags.rcode",
            "dns.flags.response",
            "dns.count.answers",
        ];
        let Some(rows) = fields(file, "(dns || mdns) && udp", &f) else { return };
        let mut n = 0;
        for r in rows {
            let frame: usize = r[0].parse().unwrap();
            // Fragmented datagrams: tshark reports the reassembled message; we skip them.
            let Some(Some(payload)) = ours.get(frame - 1) else { continue };
            let got = dns::parse_udp(payload);
            if r[1].is_empty() && r[2].is_empty() {
                assert_eq!(got.map(|_| ()), Err(dns::DnsError::NoQuestion), "{file} frame {frame}");
                n += 1;
                continue;
            }
            let m = got.unwrap_or_else(|e| panic!("{file} frame {frame}: {e}"));
            let name = if r[1] == "<Root>" { "." } else { r[1].as_str() };
            assert_eq!(m.qname.as_str(), name, "{file} frame {frame}");
            assert_eq!(m.qtype.to_string(), r[2], "{file} frame {frame}");
            // tshark shows the rcode for responses only.
            if !r[3].is_empty() {
                assert_eq!(m.rcode.to_string(), r[3], "{file} frame {frame}");
            }
            assert_eq!(m.is_response, r[4] == "1" || r[4] == "True", "{file} frame {frame}");
            assert_eq!(m.answers.to_string(), r[5], "{file} frame {frame}");
            n += 1;
        }
        println!("{file}: {n} DNS messages agree with tshark");
        assert!(n > 0, "{file}");
        total += n;
    }
    assert!(total > 20);
}

#[test]
fn http_matches_tshark() {
    for file in ["zeek__http__bro.org.pcap", "zeek__http-vlan-0.pcap"] {
        let dirs = tcp_directions(file);
        let f = ["ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport"];
        let mut req = f.to_vec();
        req.extend(["http.request.method", "http.host"]);
        let mut resp = f.to_vec();
        resp.push("http.response.code");
        let Some(reqs) = fields(file, "http.request", &req) else { return };
        let Some(resps) = fields(file, "http.response", &resp) else { return };
        let key = |r: &[String]| -> DirKey {
            (ip(&r[0], &r[1]), r[2].parse().unwrap(), ip(&r[3], &r[4]), r[5].parse().unwrap())
        };
        // The first request and response of each connection.
        let mut first_req: BTreeMap<DirKey, (String, String)> = BTreeMap::new();
        for r in &reqs {
            first_req.entry(key(r)).or_insert_with(|| (r[6].clone(), r[7].clone()));
        }
        let mut first_resp: BTreeMap<DirKey, String> = BTreeMap::new();
        for r in &resps {
            first_resp.entry(key(r)).or_insert_with(|| r[6].clone());
        }
        for (k, (method, host)) in &first_req {
            let s = reassemble(&dirs[k], http::MAX_HEAD);
            let q = http::parse_request(&s).unwrap_or_else(|e| panic!("{file} {k:?}: {e}"));
            assert_eq!(q.method, method, "{file} {k:?}");
            assert_eq!(String::from_utf8_lossy(q.host.unwrap_or(b"")), *host, "{file} {k:?}");
            assert!(q.uri_len() > 0);
        }
        for (k, code) in &first_resp {
            let s = reassemble(&dirs[k], http::MAX_HEAD);
            let r = http::parse_response(&s).unwrap_or_else(|e| panic!("{file} {k:?}: {e}"));
            assert_eq!(r.status.to_string(), *code, "{file} {k:?}");
        }
        println!("{file}: {} requests, {} responses agree with tshark", first_req.len(), first_resp.len());
        assert!(!first_req.is_empty() && !first_resp.is_empty());
    }
}

#[test]
fn ssh_banners_match_tshark() {
    let file = "zeek__ssh__sshguess.pcap";
    let dirs = tcp_directions(file);
    let f = ["ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport", "ssh.protocol"];
    let Some(rows) = fields(file, "ssh.protocol", &f) else { return };
    let mut n = 0;
    let mut seen = std::collections::BTreeSet::new();
    for r in rows {
        let k: DirKey = (ip(&r[0], &r[1]), r[2].parse().unwrap(), ip(&r[3], &r[4]), r[5].parse().unwrap());
        if !seen.insert(k) {
            continue;
        }
        let s = reassemble(&dirs[&k], 512);
        let b = ssh::parse_banner(&s).unwrap_or_else(|e| panic!("{k:?}: {e}"));
        assert_eq!(b.line, r[6], "{k:?}");
        n += 1;
    }
    println!("{file}: {n} SSH banners agree with tshark");
    assert!(n > 0);
}
