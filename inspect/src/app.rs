//! Picking one `app` label for a flow from what the parsers recognized.

/// What the dissectors recognized in a flow's first packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dissected {
    /// A QUIC Initial packet decrypted.
    pub quic: bool,
    /// A TLS ClientHello or ServerHello parsed over TCP.
    pub tls: bool,
    /// A DNS message parsed.
    pub dns: bool,
    /// An HTTP/1.x request or response head parsed.
    pub http: bool,
    /// An SSH identification line parsed.
    pub ssh: bool,
}

/// The application label of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum App {
    /// QUIC (HTTP/3, DoQ, …).
    Quic,
    /// TLS over TCP.
    Tls,
    /// DNS.
    Dns,
    /// HTTP/1.x.
    Http,
    /// SSH.
    Ssh,
    /// Nothing recognized.
    Unknown,
}

impl App {
    /// Every label, for pre-registering metrics.
    pub const ALL: &'static [App] = &[App::Quic, App::Tls, App::Dns, App::Http, App::Ssh, App::Unknown];

    /// The label: `quic`, `tls`, `dns`, `http`, `ssh` or `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            App::Quic => "quic",
            App::Tls => "tls",
            App::Dns => "dns",
            App::Http => "http",
            App::Ssh => "ssh",
            App::Unknown => "unknown",
        }
    }
}

/// Picks the label: the first recognized of `quic`, `tls`, `dns`, `http`,
/// `ssh`, in that order, else `unknown`.
///
/// The order puts the strongest evidence first: a QUIC Initial that
/// decrypted and a TLS handshake that parsed are structured, checked
/// messages (and TLS wins over what it may tunnel); a DNS message is binary
/// and checked; an HTTP head or an SSH line is a text line that other
/// protocols can resemble.
pub fn pick_app(d: &Dissected) -> App {
    if d.quic {
        App::Quic
    } else if d.tls {
        App::Tls
    } else if d.dns {
        App::Dns
    } else if d.http {
        App::Http
    } else if d.ssh {
        App::Ssh
    } else {
        App::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        assert_eq!(pick_app(&Dissected::default()).name(), "unknown");
        assert_eq!(pick_app(&Dissected { http: true, tls: true, ..Default::default() }), App::Tls);
        assert_eq!(pick_app(&Dissected { ssh: true, ..Default::default() }).name(), "ssh");
        assert_eq!(pick_app(&Dissected { dns: true, quic: true, ..Default::default() }), App::Quic);
        assert_eq!(App::ALL.len(), 6);
    }
}
