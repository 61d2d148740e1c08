//! Connection limits (service.md §4): how many connections are open at once, in all and
//! per client address, and how long a connection may stay open before its first request.
//!
//! hyper bounds a request head once it reads one, but the automatic HTTP/1–HTTP/2 choice
//! reads the first bytes before any of its timers run, so a client that connects and
//! sends nothing held its descriptor forever; enough of them and the service stopped
//! answering anyone. Every accepted stream passes through [`Gate::accept`]: over a cap it
//! is closed at once; otherwise it is wrapped in a [`Guarded`] stream that holds its place
//! in the counts until dropped and fails its reads once `first_request` has passed without
//! a request (a middleware calls [`Gate::request_arrived`] for each one).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::limits::limit_key;
use crate::metrics::ConnectionMetrics;

/// The caps and the first-request deadline, and the connections open now.
pub struct Gate {
    max_open: usize,
    max_per_client: usize,
    first_request: Duration,
    /// Proxies count toward `max_open` only: their clients are behind them.
    exempt: Vec<IpAddr>,
    open: Mutex<Open>,
    /// Open, refused at accept, and closed for sending no request in time.
    metrics: ConnectionMetrics,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
    /// Whether each open connection has sent a request yet, by peer socket address.
    started: HashMap<SocketAddr, Arc<AtomicBool>>,
}

impl Gate {
    pub fn new(
        max_open: usize,
        max_per_client: usize,
        first_request: Duration,
        exempt: &[IpAddr],
        metrics: ConnectionMetrics,
    ) -> Self {
        Self {
            max_open: max_open.max(1),
            max_per_client: max_per_client.max(1),
            first_request,
            exempt: exempt.iter().map(|a| a.to_canonical()).collect(),
            open: Mutex::default(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection from `peer`, or refuses it when a cap is reached.
    pub fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) -> io::Result<Guarded> {
        let address = peer.ip().to_canonical();
        let key = (!self.exempt.contains(&address)).then(|| limit_key(address));
        let started = Arc::new(AtomicBool::new(false));
        {
            let mut open = self.lock();
            let of_client = key.map_or(0, |k| open.by_client.get(&k).copied().unwrap_or(0));
            if open.total >= self.max_open || of_client >= self.max_per_client {
                self.metrics.refused.inc();
                return Err(io::Error::other("connection cap reached"));
            }
            open.total += 1;
            self.metrics.open.inc();
            if let Some(k) = key {
                *open.by_client.entry(k).or_insert(0) += 1;
            }
            open.started.insert(peer, started.clone());
        }
        Ok(Guarded {
            inner: stream,
            place: Place { gate: self.clone(), key, peer },
            started,
            deadline: Some(Box::pin(tokio::time::sleep(self.first_request))),
        })
    }

    /// Marks the connection from `peer` as having sent a request: its first-request
    /// deadline no longer applies (hyper's header timeout bounds later heads).
    pub fn request_arrived(&self, peer: SocketAddr) {
        if let Some(started) = self.lock().started.get(&peer) {
            started.store(true, Ordering::Relaxed);
        }
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().total
    }
}

/// A connection's place in the counts, given back when the connection is dropped.
struct Place {
    gate: Arc<Gate>,
    key: Option<IpAddr>,
    peer: SocketAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.total = open.total.saturating_sub(1);
        self.gate.metrics.open.dec();
        if let Some(key) = self.key
            && let Some(count) = open.by_client.get_mut(&key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_client.remove(&key);
            }
        }
        open.started.remove(&self.peer);
    }
}

/// An admitted connection: reads fail with `TimedOut` (and hyper closes it) when no
/// request arrived within the first-request deadline.
pub struct Guarded {
    inner: TcpStream,
    place: Place,
    started: Arc<AtomicBool>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if read.is_pending()
            && let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.deadline = None;
            if !this.started.load(Ordering::Relaxed) {
                this.place.gate.metrics.timed_out.inc();
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request arrived within the timeout of a new connection",
                )));
            }
        }
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// An acceptor that passes every stream through a [`Gate`] before `inner` (plain or
/// TLS), so the TLS handshake too runs under the first-request deadline.
#[derive(Clone)]
pub struct Limited<A> {
    inner: A,
    gate: Arc<Gate>,
}

impl<A> Limited<A> {
    pub fn new(inner: A, gate: Arc<Gate>) -> Self {
        Self { inner, gate }
    }
}

type Accepted<T, S> = Pin<Box<dyn Future<Output = io::Result<(T, S)>> + Send>>;

impl<A, S> Accept<TcpStream, S> for Limited<A>
where
    A: Accept<Guarded, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Accepted<A::Stream, A::Service>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let admitted = stream.peer_addr().and_then(|peer| self.gate.admit(stream, peer));
        match admitted {
            Ok(guarded) => Box::pin(self.inner.accept(guarded, service)),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(listener: &tokio::net::TcpListener, from: &str) -> (TcpStream, TcpStream, SocketAddr) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let client = socket.connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (client, server, peer)
    }

    #[tokio::test]
    async fn caps_count_per_client_and_in_all_and_give_places_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = ConnectionMetrics::default();
        let exempt = ["127.0.0.3".parse().unwrap()];
        let gate = Arc::new(Gate::new(3, 2, Duration::from_secs(60), &exempt, metrics.clone()));
        let mut held = Vec::new();
        for _ in 0..2 {
            let (client, server, peer) = pair(&listener, "127.0.0.1").await;
            held.push((client, gate.admit(server, peer).unwrap()));
        }
        let (_c, server, peer) = pair(&listener, "127.0.0.1").await;
        assert!(gate.admit(server, peer).is_err(), "a third from one client");
        let (client, server, peer) = pair(&listener, "127.0.0.2").await;
        held.push((client, gate.admit(server, peer).unwrap()));
        let (_c, server, peer) = pair(&listener, "127.0.0.3").await;
        assert!(gate.admit(server, peer).is_err(), "a fourth in all, even from a proxy");
        assert_eq!((gate.open(), metrics.open.get(), metrics.refused.get()), (3, 3, 2));
        held.clear();
        assert_eq!((gate.open(), metrics.open.get()), (0, 0));
        let (_c, server, peer) = pair(&listener, "127.0.0.1").await;
        gate.admit(server, peer).unwrap();
    }

    #[tokio::test]
    async fn a_silent_connection_fails_its_read_and_a_started_one_does_not() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = ConnectionMetrics::default();
        let gate = Arc::new(Gate::new(8, 8, Duration::from_millis(200), &[], metrics.clone()));
        let (_silent, server, peer) = pair(&listener, "127.0.0.1").await;
        let mut guarded = gate.admit(server, peer).unwrap();
        let mut buf = [0u8; 8];
        let error =
            tokio::time::timeout(Duration::from_secs(5), guarded.read(&mut buf)).await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(metrics.timed_out.get(), 1);

        let (_talking, server, peer) = pair(&listener, "127.0.0.1").await;
        let mut guarded = gate.admit(server, peer).unwrap();
        gate.request_arrived(peer);
        let waited = tokio::time::timeout(Duration::from_millis(600), guarded.read(&mut buf)).await;
        assert!(waited.is_err(), "still waiting for bytes, not failed");
    }
}
