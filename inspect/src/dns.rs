//! DNS messages (RFC 1035): the header and the first question, from a UDP
//! payload or a TCP stream (with its 2-byte length prefix).
//!
//! The question name is decoded into a bounded inline string
//! ([`MAX_NAME`] bytes, dotted, no trailing dot, `.` for the root), following
//! compression pointers only backwards and at most [`MAX_POINTERS`] times,
//! so a pointer loop ends in [`DnsError::PointerLoop`].

use crate::util::{reasons, BoundedStr, Reader};

/// Most bytes of a decoded name (RFC 1035: 255 on the wire, 253 as text).
pub const MAX_NAME: usize = 255;
/// Most compression pointers followed in one name.
pub const MAX_POINTERS: usize = 16;

/// A decoded domain name.
pub type DnsName = BoundedStr<MAX_NAME>;

reasons! {
    /// Why a DNS message could not be read.
    pub enum DnsError {
        /// Shorter than the 12-byte header (or the TCP length prefix says more is coming).
        Incomplete => "incomplete",
        /// No question (QDCOUNT is 0).
        NoQuestion => "no_question",
        /// The name runs past the message.
        Truncated => "truncated",
        /// A label type other than a plain label or a pointer (0x40, 0x80).
        BadLabel => "bad_label",
        /// A compression pointer that does not point backwards, or too many of them.
        PointerLoop => "pointer_loop",
        /// The name is longer than [`MAX_NAME`].
        NameTooLong => "name_too_long",
    }
}

/// The header fields and the first question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsMessage {
    /// Transaction id.
    pub id: u16,
    /// QR bit: a response.
    pub is_response: bool,
    /// OPCODE.
    pub opcode: u8,
    /// RCODE (the 4 header bits; EDNS extended bits are not added).
    pub rcode: u8,
    /// QDCOUNT.
    pub questions: u16,
    /// ANCOUNT.
    pub answers: u16,
    /// NSCOUNT.
    pub authority: u16,
    /// ARCOUNT.
    pub additional: u16,
    /// The first question's name; non-printable bytes are written as `\DDD`.
    pub qname: DnsName,
    /// The first question's QTYPE.
    pub qtype: u16,
    /// The first question's QCLASS (mDNS' unicast-response bit included).
    pub qclass: u16,
}

/// Parses a DNS message from a UDP payload.
pub fn parse_udp(msg: &[u8]) -> Result<DnsMessage, DnsError> {
    let mut r = Reader::new(msg);
    let (Some(id), Some(flags), Some(qd), Some(an), Some(ns), Some(ar)) =
        (r.u16(), r.u16(), r.u16(), r.u16(), r.u16(), r.u16())
    else {
        return Err(DnsError::Incomplete);
    };
    if qd == 0 {
        return Err(DnsError::NoQuestion);
    }
    let (qname, end) = read_name(msg, 12)?;
    let mut r = Reader::new(msg.get(end..).unwrap_or(&[]));
    let (Some(qtype), Some(qclass)) = (r.u16(), r.u16()) else {
        return Err(DnsError::Truncated);
    };
    Ok(DnsMessage {
        id,
        is_response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        rcode: (flags & 0xf) as u8,
        questions: qd,
        answers: an,
        authority: ns,
        additional: ar,
        qname,
        qtype,
        qclass,
    })
}

/// Parses the first DNS message of a TCP stream (2-byte length prefix).
pub fn parse_tcp(stream: &[u8]) -> Result<DnsMessage, DnsError> {
    let mut r = Reader::new(stream);
    let len = r.u16().ok_or(DnsError::Incomplete)?;
    let msg = r.take(usize::from(len)).ok_or(DnsError::Incomplete)?;
    parse_udp(msg)
}

/// Decodes the name at `start`; returns it and the offset after it (after
/// the first pointer when compressed).
fn read_name(msg: &[u8], start: usize) -> Result<(DnsName, usize), DnsError> {
    let mut name = DnsName::new();
    let mut pos = start;
    let mut end = None;
    let mut jumps = 0;
    let mut floor = start; // pointers must go strictly before the current label
    loop {
        let len = *msg.get(pos).ok_or(DnsError::Truncated)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    if name.is_empty() {
                        name.push_str(".").map_err(|_| DnsError::NameTooLong)?;
                    }
                    return Ok((name, end.unwrap_or(pos + 1)));
                }
                let label = msg.get(pos + 1..pos + 1 + usize::from(len)).ok_or(DnsError::Truncated)?;
                if !name.is_empty() {
                    name.push_str(".").map_err(|_| DnsError::NameTooLong)?;
                }
                for &b in label {
                    let ok = if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                        name.push_ascii(b)
                    } else {
                        name.push_ascii(b'\\').and_then(|_| {
                            name.push_ascii(b'0' + b / 100)?;
                            name.push_ascii(b'0' + (b / 10) % 10)?;
                            name.push_ascii(b'0' + b % 10)
                        })
                    };
                    ok.map_err(|_| DnsError::NameTooLong)?;
                }
                pos += 1 + usize::from(len);
            }
            0xc0 => {
                let lo = *msg.get(pos + 1).ok_or(DnsError::Truncated)?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, lo]));
                jumps += 1;
                if target >= floor || jumps > MAX_POINTERS {
                    return Err(DnsError::PointerLoop);
                }
                end.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            _ => return Err(DnsError::BadLabel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &[u8] =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01";

    #[test]
    fn query_and_tcp() {
        let m = parse_udp(QUERY).unwrap();
        assert_eq!(m.qname.as_str(), "www.example.com");
        assert_eq!((m.qtype, m.qclass, m.is_response, m.rcode, m.answers), (1, 1, false, 0, 0));
        let mut tcp = vec![0, QUERY.len() as u8];
        tcp.extend_from_slice(QUERY);
        assert_eq!(parse_tcp(&tcp), Ok(m));
        assert_eq!(parse_tcp(&tcp[..10]), Err(DnsError::Incomplete));
    }

    #[test]
    fn pointers() {
        // A response whose question name is a pointer back into itself: a loop.
        let mut m = b"\x00\x01\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01".to_vec();
        assert_eq!(parse_udp(&m), Err(DnsError::PointerLoop));
        // A forward pointer is refused too.
        m[13] = 0x0e;
        assert_eq!(parse_udp(&m), Err(DnsError::PointerLoop));
        // Root name, NXDOMAIN.
        let r = parse_udp(b"\x00\x01\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01").unwrap();
        assert_eq!((r.qname.as_str(), r.rcode, r.is_response, r.qtype), (".", 3, true, 2));
        assert_eq!(parse_udp(b"\x00\x01\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00\x40"), Err(DnsError::BadLabel));
        assert_eq!(parse_udp(&QUERY[..20]), Err(DnsError::Truncated));
    }

    #[test]
    fn escapes_odd_bytes() {
        let m = parse_udp(b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03a.\x01\x00\x00\x01\x00\x01").unwrap();
        assert_eq!(m.qname.as_str(), "a\\046\\001");
    }
}
