//! QUIC client Initials in real captures: SNI and first ALPN of every
//! ClientHello against tshark (which decrypts Initial packets itself).

mod common;

use std::collections::BTreeMap;

use common::{decode, frames, tshark, DirKey};
use wirefold_inspect::quic::{InitialCrypto, QuicError, DEFAULT_CRYPTO_BYTES, DEFAULT_SCRATCH_BYTES};
use wirefold_inspect::tls::Transport;

#[derive(Debug, Clone, PartialEq)]
struct Hello {
    sni: String,
    alpn: String,
    ja4: String,
}

/// Every UDP direction whose datagrams yield a client ClientHello, and the
/// first error of each direction that yields none.
fn hellos(file: &str) -> (BTreeMap<DirKey, Hello>, BTreeMap<DirKey, QuicError>) {
    let mut dirs: BTreeMap<DirKey, Vec<Vec<u8>>> = BTreeMap::new();
    for (link, f) in frames(file) {
        if let Some(p) = decode(link, &f) {
            if p.proto == 17 {
                dirs.entry((p.src, p.sport, p.dst, p.dport)).or_default().push(p.payload);
            }
        }
    }
    let (mut ok, mut bad) = (BTreeMap::new(), BTreeMap::new());
    for (k, datagrams) in dirs {
        let mut buf = [0u8; DEFAULT_CRYPTO_BYTES];
        let mut scratch = [0u8; DEFAULT_SCRATCH_BYTES];
        let mut c = InitialCrypto::new(&mut buf);
        let mut first_err: Option<QuicError> = None;
        let mut found = None;
        for d in &datagrams {
            if let Err(e) = c.push_datagram(d, &mut scratch) {
                first_err.get_or_insert(e);
                continue;
            }
            match c.client_hello() {
                Ok(ch) => {
                    found = Some(Hello {
                        sni: ch.server_name().unwrap_or("").to_owned(),
                        alpn: ch.first_alpn().map(|a| String::from_utf8_lossy(a).into_owned()).unwrap_or_default(),
                        ja4: ch.ja4(Transport::Quic).unwrap().as_str().to_owned(),
                    });
                    break;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match found {
            Some(h) => {
                ok.insert(k, h);
            }
            None => {
                bad.insert(k, first_err.unwrap_or(QuicError::Incomplete));
            }
        }
    }
    (ok, bad)
}

/// (capture, extra tshark args, ClientHellos expected)
const CAPTURES: &[(&str, &[&str], usize)] = &[
    ("ja4__chrome-cloudflare-quic-with-secrets.pcapng", &[], 1),
    ("ja4__quic-tls-handshake.pcap", &[], 1),
    ("ja4__quic-with-several-tls-frames.pcap", &[], 1),
    ("zeek__quic__quicv2-http3-443.pcap", &[], 1),
    ("zeek__quic__curl-8.1.2-dev-http3-www-google-de.pcap", &[], 1),
    ("zeek__quic__quicdoq.pcap", &["-d", "udp.port==853,quic"], 1),
    // The client Initial was captured with a 256-byte snap length.
    ("tcpdump__quic_handshake_truncated.pcap", &[], 0),
];

#[test]
fn quic_sni_alpn_match_tshark() {
    for &(file, extra, expected) in CAPTURES {
        let (got, errors) = hellos(file);
        for (k, h) in &got {
            println!("{file} {k:?}: sni={:?} alpn={:?} ja4={}", h.sni, h.alpn, h.ja4);
            assert!(h.ja4.starts_with('q'), "{file}");
        }
        assert_eq!(got.len(), expected, "{file}: errors {errors:?}");
        let mut args: Vec<&str> = extra.to_vec();
        args.extend_from_slice(&[
            "-Y",
            "quic && tls.handshake.type==1",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
            "-e",
            "udp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.dst",
            "-e",
            "udp.dstport",
            "-e",
            "tls.handshake.extensions_server_name",
            "-e",
            "tls.handshake.extensions_alpn_str",
            "-E",
            "occurrence=f",
        ]);
        let Some(out) = tshark(file, &args) else { continue };
        let mut want: BTreeMap<DirKey, (String, String)> = BTreeMap::new();
        for line in out.lines() {
            let c: Vec<&str> = line.split('\t').collect();
            let ip = |a: &str, b: &str| if a.is_empty() { b } else { a }.parse().unwrap();
            let key = (ip(c[0], c[1]), c[2].parse().unwrap(), ip(c[3], c[4]), c[5].parse().unwrap());
            want.entry(key).or_insert_with(|| (c[6].to_owned(), c[7].to_owned()));
        }
        assert_eq!(want.len(), got.len(), "{file}: tshark {want:?}, we {got:?}");
        for (k, (sni, alpn)) in &want {
            let g = got.get(k).unwrap_or_else(|| panic!("{file} {k:?}: tshark saw a ClientHello, we did not"));
            assert_eq!((&g.sni, &g.alpn), (sni, alpn), "{file} {k:?}");
        }
        println!("{file}: {} ClientHello(s) agree with tshark", want.len());
    }
}

#[test]
fn truncated_initial_is_a_named_error() {
    let (got, errors) = hellos("tcpdump__quic_handshake_truncated.pcap");
    assert!(got.is_empty());
    let client = errors.iter().find(|(k, _)| k.3 == 443).map(|(_, e)| *e);
    assert_eq!(client, Some(QuicError::Malformed), "{errors:?}");
}
