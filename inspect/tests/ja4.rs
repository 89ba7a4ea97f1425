//! JA4 / JA4_r / SNI of every ClientHello in the ja4 captures against
//! FoxIO's reference table (`sensor/tests/ja4/expected-ja4.tsv`), and JA3,
//! JA3S and SNI against tshark when it is installed.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::{reassemble, tcp_directions, tshark, DirKey};
use wirefold_inspect::tls::{
    find_client_hello_record, find_handshake, ClientHello, HandshakeCursor, ServerHello, TlsError, Transport,
    CLIENT_HELLO, DEFAULT_STREAM_BYTES, SERVER_HELLO,
};

#[derive(Debug)]
struct Row {
    file: String,
    key: DirKey,
    hello: usize,
    domain: String,
    ja4: String,
    ja4_r: String,
}

fn rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../sensor/tests/ja4/expected-ja4.tsv");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let ip = |s: &str| s.parse::<IpAddr>().unwrap();
            Row {
                file: c[0].into(),
                key: (ip(c[2]), c[3].parse().unwrap(), ip(c[4]), c[5].parse().unwrap()),
                hello: c[7].parse().unwrap(),
                domain: c[8].into(),
                ja4: c[9].into(),
                ja4_r: c[10].into(),
            }
        })
        .collect()
}

/// What one ClientHello gave.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    sni: String,
    ja4: String,
    ja4_r: String,
    ja3: String,
    ja3_md5: String,
}

/// Every ClientHello of a client byte stream, in order.
fn client_hellos(stream: &[u8]) -> Vec<Got> {
    let mut out = Vec::new();
    let start = match stream.first() {
        Some(0x16) => 0,
        _ => match find_client_hello_record(stream) {
            Some(p) => p,
            None => return out,
        },
    };
    let mut at = HandshakeCursor { record: start, skip: 0 };
    let mut scratch = vec![0u8; DEFAULT_STREAM_BYTES];
    loop {
        let next = match find_handshake(stream, at, CLIENT_HELLO, &mut scratch) {
            Ok(h) => {
                let ch = ClientHello::parse(h.body).expect("ClientHello parses");
                out.push(Got {
                    sni: ch.server_name().unwrap_or("").to_owned(),
                    ja4: ch.ja4(Transport::Tcp).unwrap().as_str().to_owned(),
                    ja4_r: ch.ja4_r(Transport::Tcp).unwrap().as_str().to_owned(),
                    ja3: ch.ja3().unwrap().as_str().to_owned(),
                    ja3_md5: ch.ja3_md5().as_str().to_owned(),
                });
                h.next
            }
            Err(TlsError::Incomplete | TlsError::NotTls | TlsError::Malformed | TlsError::Interleaved) => break,
            Err(e) => panic!("unexpected {e}"),
        };
        at = next;
    }
    out
}

/// JA3S of the first ServerHello of a server byte stream.
fn server_hello(stream: &[u8]) -> Option<(String, String, u16)> {
    let start = match stream.first() {
        Some(0x16) => 0,
        _ => stream.windows(6).position(|w| w[0] == 0x16 && w[1] == 3 && w[2] <= 4 && w[5] == SERVER_HELLO)?,
    };
    let mut scratch = vec![0u8; DEFAULT_STREAM_BYTES];
    let h = find_handshake(stream, HandshakeCursor { record: start, skip: 0 }, SERVER_HELLO, &mut scratch).ok()?;
    let sh = ServerHello::parse(h.body).ok()?;
    Some((sh.ja3s().ok()?.as_str().to_owned(), sh.ja3s_md5().as_str().to_owned(), sh.selected_version()))
}

/// Rows whose reference value disagrees with the current JA4 spec:
/// (file, expected JA4 per spec). Checked against the spec value instead.
const SPEC_OVERRIDES: &[(&str, &str, &str)] = &[(
    "ja4__tls-non-ascii-alpn.pcap",
    "t13d1516bd_8daaf6152771_e5627efa2ab1",
    "reference prints '99' for a non-alphanumeric ALPN; the current spec uses the hex digits (bd)",
)];

#[test]
fn ja4_matches_reference_for_every_row() {
    let rows = rows();
    let mut by_file: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        by_file.entry(&r.file).or_default().push(r);
    }
    let (mut matched, mut overridden) = (0, 0);
    let mut failures = Vec::new();
    for (file, want) in &by_file {
        let dirs = tcp_directions(file);
        let mut got: BTreeMap<DirKey, Vec<Got>> = BTreeMap::new();
        for (k, d) in &dirs {
            let hellos = client_hellos(&reassemble(d, DEFAULT_STREAM_BYTES));
            if !hellos.is_empty() {
                got.insert(*k, hellos);
            }
        }
        for r in want {
            let Some(g) = got.get(&r.key).and_then(|v| v.get(r.hello - 1)) else {
                failures.push(format!("{file} {:?} hello {}: no ClientHello found", r.key, r.hello));
                continue;
            };
            let want_ja4 = match SPEC_OVERRIDES.iter().find(|o| o.0 == r.file) {
                Some(o) => {
                    overridden += 1;
                    // Parts b and c must still equal the reference.
                    assert_eq!(g.ja4[10..], r.ja4[10..], "{file}");
                    assert_eq!(g.ja4_r[10..], r.ja4_r[10..], "{file}");
                    o.1.to_owned()
                }
                None => r.ja4.clone(),
            };
            let ja4_r_ok = SPEC_OVERRIDES.iter().any(|o| o.0 == r.file) || g.ja4_r == r.ja4_r;
            if g.ja4 == want_ja4 && ja4_r_ok && g.sni == r.domain {
                matched += 1;
            } else {
                failures.push(format!(
                    "{file} {:?} hello {}:\n  got  {} {} {}\n  want {} {} {}",
                    r.key, r.hello, g.ja4, g.sni, g.ja4_r, want_ja4, r.domain, r.ja4_r
                ));
            }
        }
        // No connection in these files has more ClientHellos than the table lists.
    }
    println!("JA4 rows matched: {matched} of {} ({overridden} checked against the spec value)", rows.len());
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(matched, rows.len());
}

#[test]
fn ja3_ja3s_sni_match_tshark() {
    let rows = rows();
    let mut files: Vec<&str> = rows.iter().map(|r| r.file.as_str()).collect();
    files.dedup();
    let (mut hellos, mut servers) = (0, 0);
    for file in files {
        let args = [
            "-Y",
            "tls.handshake.type==1 || tls.handshake.type==2",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
            "-e",
            "tcp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.dst",
            "-e",
            "tcp.dstport",
            "-e",
            "tls.handshake.type",
            "-e",
            "tls.handshake.ja3",
            "-e",
            "tls.handshake.ja3s",
            "-e",
            "tls.handshake.extensions_server_name",
            "-E",
            "occurrence=f",
        ];
        let Some(out) = tshark(file, &args) else { return };
        let dirs = tcp_directions(file);
        let mut want_ch: BTreeMap<DirKey, Vec<(String, String)>> = BTreeMap::new();
        let mut want_sh: BTreeMap<DirKey, String> = BTreeMap::new();
        for line in out.lines() {
            let c: Vec<&str> = line.split('\t').collect();
            if c.len() < 10 || c[2].is_empty() {
                continue; // not over TCP (e.g. QUIC)
            }
            let ip = |a: &str, b: &str| if a.is_empty() { b } else { a }.parse::<IpAddr>();
            let (Ok(s), Ok(d)) = (ip(c[0], c[1]), ip(c[3], c[4])) else { continue };
            let key = (s, c[2].parse().unwrap(), d, c[5].parse().unwrap());
            match c[6] {
                "1" => want_ch.entry(key).or_default().push((c[7].to_owned(), c[9].to_owned())),
                "2" => {
                    want_sh.entry(key).or_insert_with(|| c[8].to_owned());
                }
                _ => {}
            }
        }
        for (key, want) in &want_ch {
            let Some(d) = dirs.get(key) else { continue };
            let got = client_hellos(&reassemble(d, DEFAULT_STREAM_BYTES));
            for (i, (ja3, sni)) in want.iter().enumerate() {
                let Some(g) = got.get(i) else {
                    panic!("{file} {key:?}: tshark saw ClientHello {}, we did not", i + 1)
                };
                assert_eq!(&g.ja3_md5, ja3, "{file} {key:?} JA3 {}", g.ja3);
                assert_eq!(&g.sni, sni, "{file} {key:?}");
                hellos += 1;
            }
        }
        for (key, want) in &want_sh {
            let Some(d) = dirs.get(key) else { continue };
            let (s, md5, _) = server_hello(&reassemble(d, DEFAULT_STREAM_BYTES))
                .unwrap_or_else(|| panic!("{file} {key:?}: no ServerHello"));
            assert_eq!(&md5, want, "{file} {key:?} JA3S {s}");
            servers += 1;
        }
    }
    println!("tshark agreed on {hellos} ClientHellos (JA3, SNI) and {servers} ServerHellos (JA3S)");
    assert!(hellos > 100 && servers > 50);
}
