//! The SSH identification line (RFC 4253 §4.2): `SSH-protoversion-softwareversion [comments]`.
//!
//! A server may send other lines before it; up to [`MAX_PRELUDE`] bytes of
//! them are skipped. The line must end (LF or CRLF) within [`MAX_BANNER`]
//! bytes (the RFC's 255).

use crate::util::reasons;

/// Most bytes of the identification line, CRLF included.
pub const MAX_BANNER: usize = 255;
/// Most bytes of other lines skipped before it.
pub const MAX_PRELUDE: usize = 1024;

reasons! {
    /// Why no SSH banner was read.
    pub enum SshError {
        /// The line is not complete yet.
        Incomplete => "incomplete",
        /// No `SSH-` line where one should be.
        NotSsh => "not_ssh",
        /// The line is longer than [`MAX_BANNER`].
        TooLong => "too_long",
    }
}

/// A parsed identification line, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banner<'a> {
    /// The whole line without the line end (`SSH-2.0-OpenSSH_9.2p1 Debian-2`).
    pub line: &'a str,
    /// The protocol version (`2.0`, `1.99`, `1.5`).
    pub proto_version: &'a str,
    /// The software version (up to the first space).
    pub software: &'a str,
    /// The comments after the first space, if any.
    pub comments: Option<&'a str>,
}

/// Finds and parses the identification line at the start of a direction.
pub fn parse_banner(buf: &[u8]) -> Result<Banner<'_>, SshError> {
    let mut start = 0usize;
    loop {
        let rest = buf.get(start..).unwrap_or(&[]);
        let probe = rest.get(..rest.len().min(4)).unwrap_or(&[]);
        if b"SSH-".starts_with(probe) {
            if probe.len() < 4 {
                return Err(SshError::Incomplete);
            }
            break;
        }
        // Skip one non-SSH line (servers only), bounded.
        let text = |b: &[u8]| b.iter().all(|&c| c.is_ascii_graphic() || matches!(c, b' ' | b'\t' | b'\r'));
        match rest.iter().take(MAX_PRELUDE).position(|&c| c == b'\n') {
            Some(nl) if start + nl < MAX_PRELUDE && text(rest.get(..nl).unwrap_or(&[])) => start += nl + 1,
            None if buf.len() < MAX_PRELUDE && text(rest) => return Err(SshError::Incomplete),
            _ => return Err(SshError::NotSsh),
        }
    }
    let rest = buf.get(start..).unwrap_or(&[]);
    let window = rest.get(..rest.len().min(MAX_BANNER)).unwrap_or(rest);
    let Some(nl) = window.iter().position(|&c| c == b'\n') else {
        return Err(if rest.len() >= MAX_BANNER { SshError::TooLong } else { SshError::Incomplete });
    };
    let raw = window.get(..nl).unwrap_or(&[]);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let line = core::str::from_utf8(raw).map_err(|_| SshError::NotSsh)?;
    let body = line.get(4..).ok_or(SshError::NotSsh)?;
    let (proto_version, software_etc) = body.split_once('-').ok_or(SshError::NotSsh)?;
    let (software, comments) = match software_etc.split_once(' ') {
        Some((s, c)) => (s, Some(c)),
        None => (software_etc, None),
    };
    Ok(Banner { line, proto_version, software, comments })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners() {
        let b = parse_banner(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n\0\0\0").unwrap();
        assert_eq!((b.proto_version, b.software, b.comments), ("2.0", "OpenSSH_9.2p1", Some("Debian-2+deb12u3")));
        let b = parse_banner(b"hello there\r\nSSH-1.99-Cisco-1.25\n").unwrap();
        assert_eq!((b.proto_version, b.software, b.line), ("1.99", "Cisco-1.25", "SSH-1.99-Cisco-1.25"));
        assert_eq!(parse_banner(b"SS"), Err(SshError::Incomplete));
        assert_eq!(parse_banner(b"SSH-2.0-x"), Err(SshError::Incomplete));
        assert_eq!(parse_banner(b"\x16\x03\x01\x02\x00"), Err(SshError::NotSsh));
        let mut long = b"SSH-2.0-".to_vec();
        long.resize(400, b'a');
        assert_eq!(parse_banner(&long), Err(SshError::TooLong));
    }
}
