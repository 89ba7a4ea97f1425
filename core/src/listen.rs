//! Listener hygiene shared by the gRPC port and the metrics port.
//!
//! One accept loop per listener that
//! - caps open connections (beyond the cap a new connection is closed at
//!   once and counted, so held-open sockets cannot exhaust descriptors);
//! - backs off on accept errors (`EMFILE` and friends) instead of spinning,
//!   logging once per interval;
//! - wraps each connection in [`Guarded`], which closes it when the peer
//!   does not complete a handshake in time (64 bytes read and one written
//!   within the handshake timeout) or makes no progress for the idle timeout.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenLimits {
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// Time for a new connection to send 64 bytes and take one.
    pub handshake_timeout: Duration,
    /// Time without any progress (bytes read or written) before a connection is closed.
    pub idle_timeout: Duration,
}

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenCounters {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections closed at once because the cap was reached.
    pub refused: AtomicU64,
    /// Accept calls that failed (for example `EMFILE`: out of descriptors).
    pub accept_errors: AtomicU64,
    /// Connections closed by the handshake or idle timeout.
    pub timed_out: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
}

/// Bytes a connection must send within the handshake timeout.
const HANDSHAKE_BYTES: u64 = 64;

/// A connection under the listener's timeouts; counted open until dropped.
#[derive(Debug)]
pub struct Guarded {
    io: TcpStream,
    deadline: Pin<Box<Sleep>>,
    idle: Duration,
    read: u64,
    written: u64,
    counters: Arc<ListenCounters>,
}

impl Guarded {
    fn handshaken(&self) -> bool {
        self.read >= HANDSHAKE_BYTES && self.written > 0
    }

    /// Progress was made: push the deadline out (during the handshake the
    /// deadline stays absolute).
    fn progress(&mut self) {
        if self.handshaken() {
            self.deadline.as_mut().reset(tokio::time::Instant::now() + self.idle);
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.counters.timed_out.fetch_add(1, Relaxed);
            let what = if self.handshaken() { "idle timeout" } else { "handshake timeout" };
            return Some(io::Error::new(io::ErrorKind::TimedOut, what));
        }
        None
    }

    /// Account for a write's outcome: progress on bytes written, the
    /// deadline while it is pending.
    fn wrote(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.written += n as u64;
                    self.progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.io.peer_addr()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Relaxed);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    self.read += n;
                    self.progress();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        self.wrote(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Whether an accept error means the process (or system) is out of a
/// resource, so that retrying at once would spin.
fn resource_error(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Run the accept loop of `listener` on the current runtime; guarded
/// connections arrive on the returned channel. `name` prefixes log lines.
pub fn accept_loop(
    listener: TcpListener,
    limits: ListenLimits,
    counters: Arc<ListenCounters>,
    name: &'static str,
) -> mpsc::Receiver<io::Result<Guarded>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(5);
        let mut last_log: Option<Instant> = None;
        let mut unlogged = 0u64;
        let mut log = |msg: String| {
            unlogged += 1;
            if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                eprintln!("{name}: {msg} ({unlogged} such events since the last message)");
                last_log = Some(Instant::now());
                unlogged = 0;
            }
        };
        loop {
            let (io, _peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        counters.accept_errors.fetch_add(1, Relaxed);
                        if resource_error(&e) {
                            log(format!("accept failed: {e}; backing off {} ms", backoff.as_millis()));
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        } else {
                            log(format!("accept failed: {e}"));
                        }
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            backoff = Duration::from_millis(5);
            if counters.open.load(Relaxed) as usize >= limits.max_connections {
                counters.refused.fetch_add(1, Relaxed);
                log(format!("{} connections open, the cap: closing a new one", limits.max_connections));
                drop(io);
                continue;
            }
            let _ = io.set_nodelay(true);
            counters.open.fetch_add(1, Relaxed);
            counters.accepted.fetch_add(1, Relaxed);
            let g = Guarded {
                io,
                deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
                idle: limits.idle_timeout,
                read: 0,
                written: 0,
                counters: counters.clone(),
            };
            if tx.send(Ok(g)).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The soft limit on open descriptors of this process, from
/// `/proc/self/limits` (`None` when unknown or unlimited).
pub fn descriptor_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(max: usize) -> ListenLimits {
        ListenLimits {
            max_connections: max,
            handshake_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
        }
    }

    #[tokio::test]
    async fn cap_and_timeouts_close_connections() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = Arc::new(ListenCounters::default());
        let mut rx = accept_loop(l, limits(2), c.clone(), "test");
        // An echo server over guarded connections.
        tokio::spawn(async move {
            while let Some(Ok(mut g)) = rx.recv().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 256];
                    loop {
                        match g.read(&mut b).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if g.write_all(&b[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        let silent = TcpStream::connect(addr).await.unwrap();
        let mut talker = TcpStream::connect(addr).await.unwrap();
        talker.write_all(&[7u8; 64]).await.unwrap();
        let mut echo = [0u8; 64];
        talker.read_exact(&mut echo).await.unwrap();
        // The third is over the cap and closed at once.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut b = [0u8; 1];
        assert_eq!(tokio::time::timeout(Duration::from_secs(2), third.read(&mut b)).await.unwrap().unwrap_or(0), 0);
        assert_eq!(c.refused.load(Relaxed), 1);
        // The silent one is closed by the handshake timeout; the talker lives
        // on while it talks, then is closed by the idle timeout.
        tokio::time::sleep(Duration::from_millis(450)).await;
        talker.write_all(&[1]).await.unwrap();
        talker.read_exact(&mut b).await.unwrap();
        let mut silent = silent;
        assert_eq!(silent.read(&mut b).await.unwrap_or(0), 0, "the silent connection is closed");
        let t0 = Instant::now();
        assert_eq!(talker.read(&mut b).await.unwrap_or(0), 0);
        assert!(t0.elapsed() >= Duration::from_millis(400), "closed after the idle timeout, not before");
        assert_eq!(c.timed_out.load(Relaxed), 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(c.open.load(Relaxed), 0);
    }

    #[test]
    fn reads_the_descriptor_limit() {
        assert!(descriptor_limit().is_some_and(|n| n > 0));
    }
}
