//! The admin interface of a running core: HTTP/1.1 JSON on its own
//! listener (hyper, behind the same accept loop as the other ports), one
//! `POST /admin` with `Authorization: Bearer TOKEN` and a JSON command:
//!
//! ```text
//! {"cmd":"show"}
//! {"cmd":"set","gate":"score","key":"threshold","value":"0.7"}
//! {"cmd":"rollback","version":3}
//! {"cmd":"ack","sensor":"edge-1"}
//! ```
//! Answers 200 with a JSON body, 400 with `{"error": ...}` for a refused
//! command (recorded in the ledger as `admin_refused`, nothing changed),
//! 401 for a missing or wrong token. Commands run on the store thread, in
//! order with the batches.
use crate::listen::{ListenCounters, ListenLimits};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, oneshot};

/// An admin command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum AdminCommand {
    /// The configuration (with `describe()`), its versions, each sensor's gate state.
    Show,
    /// Set one field: `gates.<gate>.<key> = <value>` (a new version).
    Set {
        /// The gate (table): score, novelty, burst, budget, drift, ledger.
        gate: String,
        /// The field, for example `mode` or `threshold`.
        key: String,
        /// The value as text: a number, true/false, or a word (mode names).
        value: String,
    },
    /// Restore an earlier version (as a new version).
    Rollback {
        /// The version to restore.
        version: u64,
    },
    /// Acknowledge a sensor's drift alert.
    Ack {
        /// The sensor.
        sensor: String,
    },
}

/// A command on its way to the store thread.
#[derive(Debug)]
pub struct AdminRequest {
    /// The command.
    pub cmd: AdminCommand,
    /// The answer: a JSON body, or why it was refused.
    pub done: oneshot::Sender<Result<String, String>>,
}

/// Where the admin listener listens and the token it takes.
#[derive(Debug, Clone)]
pub struct AdminListen {
    /// Address.
    pub addr: SocketAddr,
    /// The admin token (compared as a SHA-256 digest, in constant time).
    pub token: String,
}

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No connection, or the exchange broke.
    #[error("admin endpoint {addr}: {error}")]
    Io {
        /// Address.
        addr: SocketAddr,
        /// The error.
        error: std::io::Error,
    },
    /// The core refused the command (400), or the token (401).
    #[error("refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The core's reason.
        message: String,
    },
    /// The answer was not HTTP.
    #[error("admin endpoint {0}: malformed answer")]
    Malformed(SocketAddr),
}

/// Largest admin request body.
pub const ADMIN_MAX_BODY: usize = 64 << 10;

type Body = http_body_util::Full<bytes::Bytes>;

fn reply(status: hyper::StatusCode, body: String) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

fn err_json(e: &str) -> String {
    serde_json::json!({ "error": e }).to_string()
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    token: Arc<[u8; 32]>,
    tx: mpsc::Sender<AdminRequest>,
) -> hyper::Response<Body> {
    use http_body_util::BodyExt;
    use hyper::StatusCode;
    let got = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| -> [u8; 32] { Sha256::digest(t.as_bytes()).into() });
    if !got.is_some_and(|g| bool::from(g.ct_eq(&*token))) {
        return reply(StatusCode::UNAUTHORIZED, err_json("missing or wrong admin token"));
    }
    if req.method() != hyper::Method::POST || req.uri().path() != "/admin" {
        return reply(StatusCode::NOT_FOUND, err_json("POST /admin with a JSON command"));
    }
    let body = match http_body_util::Limited::new(req.into_body(), ADMIN_MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::PAYLOAD_TOO_LARGE, err_json(&e.to_string())),
    };
    let cmd: AdminCommand = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return reply(StatusCode::BAD_REQUEST, err_json(&format!("bad command: {e}"))),
    };
    let (done, rx) = oneshot::channel();
    if tx.send(AdminRequest { cmd, done }).await.is_err() {
        return reply(StatusCode::SERVICE_UNAVAILABLE, err_json("the core is stopping"));
    }
    match rx.await {
        Ok(Ok(body)) => reply(StatusCode::OK, body),
        Ok(Err(e)) => reply(StatusCode::BAD_REQUEST, err_json(&e)),
        Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, err_json("the core is stopping")),
    }
}

/// Serve the admin endpoint on `listener` (inside the core's runtime) until the task is dropped.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    token: &str,
    tx: mpsc::Sender<AdminRequest>,
    counters: Arc<ListenCounters>,
) {
    let token: Arc<[u8; 32]> = Arc::new(Sha256::digest(token.as_bytes()).into());
    let limits = ListenLimits {
        max_connections: 16,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
    };
    let mut conns = crate::listen::accept_loop(listener, limits, counters, "wirefold admin");
    while let Some(c) = conns.recv().await {
        let Ok(conn) = c else { continue };
        let (token, tx) = (token.clone(), tx.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (token, tx) = (token.clone(), tx.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(req, token, tx).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .max_buf_size(16 << 10)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                .await;
        });
    }
}

/// Send one command to a core's admin endpoint (blocking; for the CLI).
/// Returns the JSON answer.
pub fn admin_request(addr: SocketAddr, token: &str, command: &AdminCommand) -> Result<String, AdminError> {
    let io = |error| AdminError::Io { addr, error };
    let body = serde_json::to_string(command).unwrap_or_default();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(io)?;
    write!(
        s,
        "POST /admin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(io)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(io)?;
    let status: u16 = out
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| out.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or(AdminError::Malformed(addr))?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).ok_or(AdminError::Malformed(addr))?;
    if status == 200 {
        Ok(body)
    } else {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_string))
            .unwrap_or(body);
        Err(AdminError::Refused { status, message })
    }
}
