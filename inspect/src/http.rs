//! HTTP/1.x message heads from the first bytes of a direction: the request
//! line (method, URI length, version) with the `Host` and `User-Agent`
//! headers, or the status line (status code).
//!
//! Bounded: the head must end (`CRLF CRLF`, or bare `LF LF`) within
//! [`MAX_HEAD`] bytes and have at most [`MAX_HEADERS`] header lines; header
//! names compare case-insensitively. [`HttpError::Incomplete`] means the head
//! is cut and more bytes may complete it.

use crate::util::reasons;

/// Most bytes of a request or response head.
pub const MAX_HEAD: usize = 8192;
/// Most header lines examined.
pub const MAX_HEADERS: usize = 100;

reasons! {
    /// Why an HTTP head could not be read.
    pub enum HttpError {
        /// The head is not complete yet.
        Incomplete => "incomplete",
        /// The first line is not an HTTP/1.x request or status line.
        NotHttp => "not_http",
        /// No end of head within [`MAX_HEAD`] bytes, or more than [`MAX_HEADERS`] headers.
        TooLong => "too_long",
        /// A header line without a colon, or a bad status code.
        Malformed => "malformed",
    }
}

/// An HTTP/1.x request head, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method token (`GET`, `POST`, …).
    pub method: &'a str,
    /// The request target.
    pub uri: &'a [u8],
    /// The minor version (0 or 1 for HTTP/1.0, HTTP/1.1).
    pub minor_version: u8,
    /// The first `Host` header's value, trimmed.
    pub host: Option<&'a [u8]>,
    /// The first `User-Agent` header's value, trimmed.
    pub user_agent: Option<&'a [u8]>,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
}

impl Request<'_> {
    /// Length of the request target in bytes.
    pub fn uri_len(&self) -> usize {
        self.uri.len()
    }
}

/// An HTTP/1.x response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// The minor version.
    pub minor_version: u8,
    /// The status code (100–999).
    pub status: u16,
    /// The reason phrase.
    pub reason: &'a [u8],
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
}

/// Splits the head into its first line and the header block; `head_len`.
fn head(buf: &[u8]) -> Result<(&[u8], &[u8], usize), HttpError> {
    let window = buf.get(..buf.len().min(MAX_HEAD)).unwrap_or(buf);
    let mut lines = 0usize;
    let mut line_start = 0usize;
    let mut first_end = None;
    let mut i = 0usize;
    while i < window.len() {
        if window[i] == b'\n' {
            let line = window.get(line_start..i).unwrap_or(&[]);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if first_end.is_none() {
                first_end = Some(line_start + line.len());
            } else if line.is_empty() {
                let first = window.get(..first_end.unwrap_or(0)).unwrap_or(&[]);
                let hdrs = window.get(first_end.unwrap_or(0)..line_start).unwrap_or(&[]);
                return Ok((first, hdrs, i + 1));
            } else {
                lines += 1;
                if lines > MAX_HEADERS {
                    return Err(HttpError::TooLong);
                }
            }
            line_start = i + 1;
        }
        i += 1;
    }
    if buf.len() >= MAX_HEAD {
        Err(HttpError::TooLong)
    } else {
        Err(HttpError::Incomplete)
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(s, |p| p + 1);
    b.get(s..e).unwrap_or(&[])
}

/// Iterates `(name, value)` of a header block (after the first line).
fn headers(block: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8]), HttpError>> {
    block.split(|&c| c == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty()).map(|l| {
        let colon = l.iter().position(|&c| c == b':').ok_or(HttpError::Malformed)?;
        Ok((trim(l.get(..colon).unwrap_or(&[])), trim(l.get(colon + 1..).unwrap_or(&[]))))
    })
}

fn version(v: &[u8]) -> Option<u8> {
    match v {
        b"HTTP/1.0" => Some(0),
        b"HTTP/1.1" => Some(1),
        _ => None,
    }
}

/// True when `buf` starts like an HTTP/1.x request (an upper-case token and a space).
fn looks_like_request(buf: &[u8]) -> bool {
    let n = buf.iter().take(16).take_while(|c| c.is_ascii_uppercase() || **c == b'-' || **c == b'_').count();
    n > 0 && (buf.get(n) == Some(&b' ') || n == buf.len())
}

/// Parses an HTTP/1.x request head from the first bytes of the client direction.
pub fn parse_request(buf: &[u8]) -> Result<Request<'_>, HttpError> {
    if !buf.is_empty() && !looks_like_request(buf) {
        return Err(HttpError::NotHttp);
    }
    let (first, block, head_len) = head(buf)?;
    let mut parts = first.splitn(3, |&c| c == b' ');
    let (Some(m), Some(uri), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(HttpError::NotHttp);
    };
    let minor_version = version(v).ok_or(HttpError::NotHttp)?;
    let method = core::str::from_utf8(m).map_err(|_| HttpError::NotHttp)?;
    let (mut host, mut user_agent) = (None, None);
    for h in headers(block) {
        let (name, value) = h?;
        if host.is_none() && name.eq_ignore_ascii_case(b"host") {
            host = Some(value);
        } else if user_agent.is_none() && name.eq_ignore_ascii_case(b"user-agent") {
            user_agent = Some(value);
        }
    }
    Ok(Request { method, uri, minor_version, host, user_agent, head_len })
}

/// Parses an HTTP/1.x status line and head from the first bytes of the server direction.
pub fn parse_response(buf: &[u8]) -> Result<Response<'_>, HttpError> {
    let prefix = buf.get(..buf.len().min(5)).unwrap_or(&[]);
    if !b"HTTP/".starts_with(prefix) {
        return Err(HttpError::NotHttp);
    }
    let (first, block, head_len) = head(buf)?;
    let mut parts = first.splitn(3, |&c| c == b' ');
    let (Some(v), Some(code)) = (parts.next(), parts.next()) else {
        return Err(HttpError::NotHttp);
    };
    let minor_version = version(v).ok_or(HttpError::NotHttp)?;
    let reason = parts.next().unwrap_or(&[]);
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return Err(HttpError::Malformed);
    }
    let status = code.iter().fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
    for h in headers(block) {
        h?;
    }
    Ok(Response { minor_version, status, reason, head_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request() {
        let r = b"GET /index.html?x=1 HTTP/1.1\r\nhOsT: example.com \r\nUser-Agent: curl/8\r\n\r\nbody";
        let q = parse_request(r).unwrap();
        assert_eq!(q.method, "GET");
        assert_eq!(q.uri_len(), 15);
        assert_eq!(q.host, Some(&b"example.com"[..]));
        assert_eq!(q.user_agent, Some(&b"curl/8"[..]));
        assert_eq!(q.head_len, r.len() - 4);
        for cut in 0..r.len() - 4 {
            assert_eq!(parse_request(&r[..cut]).map(|_| ()), Err(HttpError::Incomplete), "cut {cut}");
        }
        assert_eq!(parse_request(b"\x16\x03\x01").map(|_| ()), Err(HttpError::NotHttp));
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nbad\r\n\r\n").map(|_| ()), Err(HttpError::Malformed));
        let long = [b'A'; MAX_HEAD + 1];
        assert_eq!(parse_request(&long).map(|_| ()), Err(HttpError::NotHttp));
    }

    #[test]
    fn response() {
        let r = parse_response(b"HTTP/1.0 404 Not Found\nServer: x\n\n").unwrap();
        assert_eq!((r.status, r.minor_version, r.reason), (404, 0, &b"Not Found"[..]));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n").map(|_| ()), Err(HttpError::Incomplete));
        assert_eq!(parse_response(b"HTTP/1.1 2x0 OK\r\n\r\n").map(|_| ()), Err(HttpError::Malformed));
        assert_eq!(parse_response(b"SSH-2.0").map(|_| ()), Err(HttpError::NotHttp));
    }
}
