//! The tokens file: one `SENSOR_ID TOKEN` pair per line; `#` starts a comment.
use std::collections::HashMap;

/// Token → sensor id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    by_token: HashMap<String, String>,
}

impl Tokens {
    /// Parse the file's text. Errors name the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut by_token = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [sensor, token] = parts[..] else {
                return Err(format!("line {}: expected 'SENSOR_ID TOKEN', found '{line}'", i + 1));
            };
            if token.len() < 8 {
                return Err(format!("line {}: the token for sensor '{sensor}' is shorter than 8 characters", i + 1));
            }
            if by_token.insert(token.to_string(), sensor.to_string()).is_some() {
                return Err(format!("line {}: token for sensor '{sensor}' is used twice", i + 1));
            }
        }
        Ok(Tokens { by_token })
    }

    /// Read and parse a file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))
    }

    /// One sensor with one token.
    pub fn single(sensor: &str, token: &str) -> Self {
        let mut by_token = HashMap::new();
        by_token.insert(token.to_string(), sensor.to_string());
        Tokens { by_token }
    }

    /// The sensor a token belongs to.
    pub fn sensor(&self, token: &str) -> Option<&str> {
        self.by_token.get(token).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_comments() {
        let t = Tokens::parse("# sensors\nedge-1 s3cr3t-token-1\n\nedge-2  another-token # trailing\n").unwrap();
        assert_eq!(t.sensor("s3cr3t-token-1"), Some("edge-1"));
        assert_eq!(t.sensor("another-token"), Some("edge-2"));
        assert_eq!(t.sensor("nope"), None);
        assert!(Tokens::parse("edge-1\n").unwrap_err().contains("line 1"));
        assert!(Tokens::parse("a short\n").unwrap_err().contains("shorter than 8"));
        assert!(Tokens::parse("a tok-tok-1\nb tok-tok-1\n").unwrap_err().contains("used twice"));
    }
}
