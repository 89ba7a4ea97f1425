//! Fuzz the HTTP/1.x head and SSH banner parsers and the payload sketch:
//! never a panic; a parsed head's cut prefixes are `Incomplete`; the sketch's
//! values stay in range.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wirefold_inspect::http::{parse_request, parse_response, HttpError};
use wirefold_inspect::sketch::PayloadSketch;
use wirefold_inspect::ssh::parse_banner;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = parse_request(data) {
        assert!(q.head_len <= data.len());
        for cut in [q.head_len / 2, q.head_len - 1] {
            assert_eq!(parse_request(&data[..cut]).map(|_| ()), Err(HttpError::Incomplete));
        }
    }
    if let Ok(r) = parse_response(data) {
        assert!((100..=999).contains(&r.status));
        assert_eq!(parse_response(&data[..r.head_len - 1]).map(|_| ()), Err(HttpError::Incomplete));
    }
    if let Ok(b) = parse_banner(data) {
        assert!(b.line.starts_with("SSH-") && b.line.len() <= 255);
    }
    let mut s = PayloadSketch::new();
    for chunk in data.chunks(7) {
        s.update(chunk);
    }
    let e = s.entropy();
    assert!((0.0..=8.0001).contains(&e));
    assert!((0.0..=1.0).contains(&s.printable_fraction()));
});
