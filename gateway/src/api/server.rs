//! The HTTP server around the router: accept loop, connection cap,
//! timeouts, `Host` check, bounded stop.
//!
//! - **Connection cap** (`api.max_connections`): a semaphore permit per
//!   served connection; a connection accepted beyond the cap is answered
//!   503 (best effort, never waiting on the client) and closed at once, and
//!   counted in `overpass_api_connections_refused_total`. Each connection
//!   is a file descriptor: the cap keeps the API from taking the ones the
//!   dataplane, netlink and the state dir need (see LimitNOFILE in
//!   `deploy/overpass.service`).
//! - **Header timeout** (`api.header_timeout`): hyper's HTTP/1 header read
//!   timer. It runs whenever the server waits for a request head, so it
//!   closes a half-sent request and a kept-alive connection that sends no
//!   next request.
//! - **Idle timeout** (`api.idle_timeout`): a connection on which the
//!   server waits on the socket (a request body, room for the response) and
//!   no byte moves for this long is closed ([`IdleIo`]; hyper has no such
//!   timer for HTTP/1 servers).
//! - **Bounded stop** (`api.shutdown_timeout`): [`Server::stop`] stops
//!   accepting; a connection that never got a whole request head (nothing
//!   of ours in flight: a half-sent request, a silent client) is closed at
//!   once; the others are asked to finish (hyper-util's graceful shutdown:
//!   idle ones close now, one with a request in progress after its
//!   response); whatever is left when the timeout passes is closed. It
//!   returns within `shutdown_timeout` (plus scheduling slack) whatever
//!   clients do.
//! - **Host check** ([`super::host`]): on a loopback listener only
//!   loopback names are answered (DNS rebinding).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::host::{self, HostPolicy};
use super::{AppState, ErrorBody, ErrorDetail, router};
use crate::config::ApiConfig;

/// How the server treats connections (from `[api]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
    /// `api.allowed_hosts`.
    pub allowed_hosts: Vec<String>,
}

impl ServerOptions {
    /// The options of a (validated) `[api]` section.
    pub fn from_config(api: &ApiConfig) -> ServerOptions {
        ServerOptions {
            header_timeout: Duration::from_secs(api.header_timeout),
            idle_timeout: Duration::from_secs(api.idle_timeout),
            max_connections: api.max_connections,
            shutdown_timeout: Duration::from_secs(api.shutdown_timeout),
            allowed_hosts: api.allowed_hosts.clone(),
        }
    }
}

impl Default for ServerOptions {
    /// The defaults of `[api]`.
    fn default() -> Self {
        ServerOptions::from_config(&ApiConfig::default())
    }
}

/// Connection counters, reported in `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections being served now.
    pub open: AtomicU64,
    /// Connections admitted since start.
    pub accepted: AtomicU64,
    /// Connections refused because `api.max_connections` were open.
    pub refused: AtomicU64,
    /// Connections closed by the header or idle timeout.
    pub timed_out: AtomicU64,
    /// The cap in force (0 while no server runs).
    pub max: AtomicU64,
}

/// Decrements `open` however the connection's task ends (also when it is
/// aborted at the shutdown deadline).
struct OpenGuard(AppState);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.connections.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running HTTP server (stops when dropped or on [`Server::stop`]).
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// [`Server::start_with`] with the default options.
    pub fn start(listen: SocketAddr, state: AppState) -> anyhow::Result<Server> {
        Server::start_with(listen, state, ServerOptions::default())
    }

    /// Binds `listen` and serves `state` from a 2-thread runtime. Call from
    /// the host namespace (not the dataplane's).
    pub fn start_with(
        listen: SocketAddr,
        state: AppState,
        opts: ServerOptions,
    ) -> anyhow::Result<Server> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("overpass-api")
            .enable_all()
            .build()
            .context("building the API runtime")?;
        let listener = rt
            .block_on(TcpListener::bind(listen))
            .with_context(|| format!("api.listen: binding {listen}"))?;
        let addr = listener.local_addr()?;
        let policy = HostPolicy::new(addr, &opts.allowed_hosts).map_err(anyhow::Error::msg)?;
        let app = router(state.clone()).layer(axum::middleware::from_fn_with_state(
            Arc::new(policy),
            host::check_host,
        ));
        state
            .connections
            .max
            .store(opts.max_connections as u64, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("overpass-http".into())
            .spawn(move || {
                let deadline = rt.block_on(serve(listener, app, state, opts, rx));
                // Handlers still on the blocking pool get what is left of
                // the stop's budget; connections are gone already.
                rt.shutdown_timeout(deadline.saturating_duration_since(Instant::now()));
            })
            .context("spawning the API thread")?;
        tracing::info!(%addr, "API listening on http://{addr}/api/v1 (OpenAPI at /api/v1/openapi.json)");
        Ok(Server {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops: no new connections, requests in progress get until
    /// `api.shutdown_timeout` to finish, then every connection is closed.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// The accept loop, then the bounded stop; returns the stop's deadline.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    state: AppState,
    opts: ServerOptions,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Instant {
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    let busy = busy_response(opts.max_connections);
    let graceful = GracefulShutdown::new();
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let mut conns = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout);
    let stats = &state.connections;
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            // Reap finished connections' tasks as they end.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("API accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "API connection refused: api.max_connections reached");
            // Best effort, never waiting: the socket buffer takes it or not.
            let _ = stream.try_write(&busy);
            drop(stream);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(state.clone());
        let io = TokioIo::new(IdleIo::new(stream, opts.idle_timeout, state.clone()));
        let asked = Arc::new(AtomicBool::new(false));
        let service = Marked {
            inner: TowerToHyperService::new(app.clone()),
            asked: asked.clone(),
        };
        let conn = graceful.watch(http.serve_connection(io, service));
        let mut stopping = stopping_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                r = &mut conn => Some(r),
                _ = stopping.wait_for(|s| *s) => None,
            };
            let ended = match ended {
                Some(r) => r,
                // Stopping, and this connection never got as far as a
                // request (a half-sent head, or nothing): nothing of ours
                // is in flight, close it now.
                None if !asked.load(Ordering::Relaxed) => return,
                // A request was handled here: let it finish (graceful).
                None => conn.await,
            };
            if let Err(e) = ended {
                // The header timer (the idle one counts itself: its error
                // may end in a response rather than here).
                if e.is_timeout() {
                    guard
                        .0
                        .connections
                        .timed_out
                        .fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(%peer, "API connection ended: {e}");
            }
            drop(guard);
        });
    }
    drop(listener);
    let began = Instant::now();
    let deadline = began + opts.shutdown_timeout;
    let open = stats.open.load(Ordering::Relaxed);
    let _ = stopping_tx.send(true);
    let finished = tokio::time::timeout_at(deadline.into(), graceful.shutdown()).await;
    if finished.is_err() {
        tracing::warn!(
            open,
            left = stats.open.load(Ordering::Relaxed),
            "API stop: closing the connections still open after api.shutdown_timeout ({:?})",
            opts.shutdown_timeout
        );
    }
    conns.shutdown().await;
    tracing::info!(
        open,
        took_ms = began.elapsed().as_millis() as u64,
        "API stopped"
    );
    deadline
}

/// The connection's service, marking the connection once it handles a
/// request (the head is complete and the router is called).
#[derive(Debug)]
struct Marked<S> {
    inner: S,
    asked: Arc<AtomicBool>,
}

impl<S: hyper::service::Service<R>, R> hyper::service::Service<R> for Marked<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: R) -> S::Future {
        self.asked.store(true, Ordering::Relaxed);
        self.inner.call(req)
    }
}

/// The whole 503 answer to a connection beyond the cap.
fn busy_response(max: usize) -> Vec<u8> {
    let body = serde_json::to_string(&ErrorBody {
        error: ErrorDetail {
            field: "connection".into(),
            message: format!(
                "the API serves at most {max} connections at once (api.max_connections); retry later"
            ),
        },
    })
    .expect("the error body serialises");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A TCP stream that fails with `TimedOut` when the server has been
/// waiting on it (a read or write pending) and no byte has moved for
/// `timeout`. The timer restarts on every byte read or written.
#[derive(Debug)]
struct IdleIo {
    inner: TcpStream,
    timeout: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Where a timeout is counted (once).
    state: AppState,
    fired: bool,
}

impl IdleIo {
    fn new(inner: TcpStream, timeout: Duration, state: AppState) -> IdleIo {
        IdleIo {
            inner,
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            state,
            fired: false,
        }
    }

    fn moved(&mut self) {
        let next = tokio::time::Instant::now() + self.timeout;
        self.timer.as_mut().reset(next);
    }

    /// The stream is not ready: fail if it has been quiet too long.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                if !std::mem::replace(&mut self.fired, true) {
                    self.state
                        .connections
                        .timed_out
                        .fetch_add(1, Ordering::Relaxed);
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no byte moved for {:?} (api.idle_timeout)", self.timeout),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn wrote(
        &mut self,
        r: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.waiting(cx),
        }
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.waiting(cx),
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(r, cx)
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

/// Descriptors the rest of the gateway may hold at its design limits
/// besides the API's connections: one AF_XDP socket per XSK map slot, one
/// XDP link per served interface (at most one per `ports` map entry), and a
/// margin for the BPF object, netlink, runtimes, stdio, the state dir's
/// files and the attach socket. The arithmetic is in
/// `deploy/overpass.service` (LimitNOFILE).
pub const RESERVED_DESCRIPTORS: u64 =
    overpass_xdp::abi::MAX_XSKS as u64 + overpass_xdp::abi::MAX_PORTS as u64 + 128;

/// A warning when RLIMIT_NOFILE cannot hold `max_connections` API
/// connections next to [`RESERVED_DESCRIPTORS`].
pub fn descriptor_shortfall(max_connections: usize) -> Option<String> {
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok()?;
    let need = max_connections as u64 + RESERVED_DESCRIPTORS;
    (soft < need).then(|| {
        format!(
            "api.max_connections: {max_connections} connections plus up to {RESERVED_DESCRIPTORS} descriptors for the dataplane need {need} file descriptors, but RLIMIT_NOFILE is {soft}; raise it (LimitNOFILE= in the unit) or lower api.max_connections"
        )
    })
}
