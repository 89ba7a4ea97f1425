//! The tokens file: one `SENSOR_ID TOKEN` pair per line; `#` starts a
//! comment. `TOKEN` is the bearer token itself, or `sha256:HEX`, the SHA-256
//! digest of it (make one with `printf %s "$TOKEN" | sha256sum`), so the
//! file need not hold the secret. Tokens are kept and compared as digests,
//! in constant time. A file that group or others may read is refused, as
//! ssh refuses such a key file.
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Longest sensor id accepted, in bytes (in the tokens file and on the wire).
pub const MAX_SENSOR_ID: usize = 64;
/// Shortest token accepted.
pub const MIN_TOKEN: usize = 8;

/// Why a tokens file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read tokens file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        error: String,
    },
    /// Group or others may read the file.
    #[error("tokens file {path} is accessible by group or others (mode {mode:04o}): run `chmod 600 {path}`")]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is wrong.
    #[error("tokens file {path}: line {line}: {what}")]
    Line {
        /// The file ("" when parsed from text).
        path: String,
        /// Line number, from 1.
        line: usize,
        /// What is wrong with it.
        what: String,
    },
}

impl TokensError {
    /// The same error, naming `path` (parsers do not know the file).
    pub fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            TokensError::Line { line, what, .. } => TokensError::Line { path: path.display().to_string(), line, what },
            other => other,
        }
    }
}

/// Read a secret file (tokens, an admin token), refusing one that group or
/// others may access, as ssh refuses such a key file.
pub fn read_private(path: &std::path::Path) -> Result<String, TokensError> {
    let p = path.display().to_string();
    let read = |e: std::io::Error| TokensError::Read { path: p.clone(), error: e.to_string() };
    let md = std::fs::metadata(path).map_err(read)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = md.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TokensError::Permissions { path: p, mode });
        }
    }
    #[cfg(not(unix))]
    let _ = md;
    std::fs::read_to_string(path).map_err(read)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    digest: [u8; 32],
    sensor: String,
}

/// Token digests and the sensors they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<Entry>,
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Whether a sensor id is acceptable: 1 to 64 bytes of letters, digits, `-`, `_`, `.`.
pub fn valid_sensor_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SENSOR_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Tokens {
    /// Parse the file's text. Errors name the line.
    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |what: String| TokensError::Line { path: String::new(), line: i + 1, what };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [sensor, token] = parts[..] else {
                return Err(err(format!("expected 'SENSOR_ID TOKEN', found {} fields", parts.len())));
            };
            if !valid_sensor_id(sensor) {
                return Err(err(format!(
                    "sensor id of {} bytes: it must be 1 to {MAX_SENSOR_ID} letters, digits, '-', '_' or '.'",
                    sensor.len()
                )));
            }
            let digest = match token.strip_prefix("sha256:") {
                Some(h) => hex32(h).ok_or_else(|| {
                    err(format!("the digest for sensor '{sensor}' is not 64 hexadecimal digits after 'sha256:'"))
                })?,
                None if token.len() < MIN_TOKEN => {
                    return Err(err(format!("the token for sensor '{sensor}' is shorter than {MIN_TOKEN} characters")))
                }
                None => sha256(token),
            };
            if entries.iter().any(|e| e.digest == digest) {
                return Err(err(format!("token for sensor '{sensor}' is used twice")));
            }
            entries.push(Entry { digest, sensor: sensor.to_string() });
        }
        Ok(Tokens { entries })
    }

    /// Read and parse a file, refusing one that group or others may access.
    pub fn load(path: &std::path::Path) -> Result<Self, TokensError> {
        let text = read_private(path)?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    /// One sensor with one token.
    pub fn single(sensor: &str, token: &str) -> Self {
        Tokens { entries: vec![Entry { digest: sha256(token), sensor: sensor.to_string() }] }
    }

    /// The sensor a token belongs to. Every entry is compared, in constant
    /// time, whatever matches.
    pub fn sensor(&self, token: &str) -> Option<&str> {
        let d = sha256(token);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&d)) {
                found = Some(e.sensor.as_str());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_digests_and_comments() {
        let d = "sha256:".to_string() + &"ab".repeat(32);
        let t = Tokens::parse(&format!(
            "# sensors\nedge-1 s3cr3t-token-1\n\nedge-2  another-token # trailing\nedge-3 {d}\n"
        ))
        .unwrap();
        assert_eq!(t.sensor("s3cr3t-token-1"), Some("edge-1"));
        assert_eq!(t.sensor("another-token"), Some("edge-2"));
        assert_eq!(t.sensor("nope"), None);
        let line = |r: Result<Tokens, TokensError>| match r {
            Err(TokensError::Line { line, what, .. }) => (line, what),
            other => panic!("{other:?}"),
        };
        assert_eq!(line(Tokens::parse("edge-1\n")).0, 1);
        assert!(line(Tokens::parse("a short\n")).1.contains("shorter than 8"));
        assert!(line(Tokens::parse("a tok-tok-1\nb tok-tok-1\n")).1.contains("used twice"));
        assert!(line(Tokens::parse("a sha256:12\n")).1.contains("64 hexadecimal"));
        let long = format!("{} token-token\n", "x".repeat(65));
        assert!(line(Tokens::parse(&long)).1.contains("1 to 64"));
    }

    #[test]
    fn a_digest_stands_for_its_token() {
        // printf %s edge-1-secret-token | sha256sum
        let hex: String = sha256("edge-1-secret-token").iter().map(|b| format!("{b:02x}")).collect();
        let t = Tokens::parse(&format!("edge-1 sha256:{hex}\n")).unwrap();
        assert_eq!(t.sensor("edge-1-secret-token"), Some("edge-1"));
        assert_eq!(t.sensor(&format!("sha256:{hex}")), None, "the digest itself is not a token");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!("wirefold-tokens-{}", std::process::id()));
        std::fs::write(&p, "edge-1 edge-1-secret-token\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Tokens::load(&p).unwrap_err();
        assert!(matches!(e, TokensError::Permissions { mode: 0o644, .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Tokens::load(&p).unwrap().sensor("edge-1-secret-token"), Some("edge-1"));
        let _ = std::fs::remove_file(&p);
    }
}
