//! A plugin's outgoing HTTP connections: resolved, checked, pinned and pooled.
//!
//! Design decisions:
//! - **Check and connect in one place.** [`OutgoingPool::send`] resolves a name once, checks
//!   every address it got (unless the target may reach non-public addresses), and opens the
//!   socket to one of exactly those addresses. Nothing resolves the name again, so a DNS
//!   answer that changes between the check and the connect cannot reach another host. HTTPS
//!   still validates the certificate against the name (SNI too): the address is pinned, the
//!   identity is the name's.
//! - **Kept alive, per plugin.** Each plugin has its own pool, created when it is loaded
//!   and dropped with it, so one plugin never sends on another's connections (or its TLS
//!   sessions). Idle connections are keyed by (scheme, host, port, address policy) and each
//!   remembers the checked address it is connected to; reusing one needs no DNS.
//! - **Bounded.** At most [`MAX_IN_FLIGHT_PER_PLUGIN`] requests in flight, at most
//!   [`MAX_IDLE_PER_HOST`] idle connections per key and [`MAX_IDLE_PER_PLUGIN`] in all (the
//!   oldest goes first), each closed after [`IDLE_TIMEOUT`] unused: a plugin holds at most
//!   in-flight + idle sockets.
//! - **HTTP/1.1 only**, as `wasmtime-wasi-http`'s own sender: one request per connection at a
//!   time, so a connection returns to the pool once its response was read to the end (or
//!   dropped, when hyper could finish reading it).
//! - **Returned by its answer.** The response body ([`PooledBody`]) puts its connection back
//!   in the pool, and frees the plugin's request slot, the moment it ends or is dropped, when
//!   hyper already has the connection ready for the next request (nearly always: the answer's
//!   last bytes were read in the same pass). Only a connection not ready yet gets a task that
//!   waits for it. A task per request, as before, cost CPU and returned the connection a
//!   moment late, so the next request of the same delivery often opened another.
//! - **A task per connection** drives it, as hyper intends. Driving it instead from the
//!   request and then from the response body, in the plugin's own task, was tried and cost
//!   more CPU per request (137 to 165 µs against 123 to 130 µs for host, guest and server
//!   together, `cargo bench -p hookd-host --bench outgoing`).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};
use wasmtime_wasi_http::{Error, WasiBody};

use crate::address::{AddressClass, classify, describe};

/// Requests one plugin may have in flight at once, over all its deliveries; more wait.
pub(crate) const MAX_IN_FLIGHT_PER_PLUGIN: usize = 64;
/// Idle keep-alive connections kept per (scheme, host, port): as many as can be in flight,
/// so a plugin at its full concurrency to one host does not churn connections.
pub(crate) const MAX_IDLE_PER_HOST: usize = MAX_IN_FLIGHT_PER_PLUGIN;
/// Idle keep-alive connections kept per plugin, over all hosts.
pub(crate) const MAX_IDLE_PER_PLUGIN: usize = 64;
/// An idle connection unused this long is closed: shorter than the keep-alive of common
/// servers (60 s and more), so hookd rarely sends on a connection the server is closing.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a request goes, as the policy allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub tls: bool,
    /// Lowercase, without brackets; a name or an IP literal.
    pub host: String,
    pub port: u16,
    /// The origin names an IP literal or `localhost`, or the manifest opted in: loopback,
    /// private and other non-public addresses may be reached.
    pub allow_non_public: bool,
}

/// Timeouts of one request, already capped by the policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// Resolving, connecting and the TLS handshake, together.
    pub connect: Duration,
    /// From sending the request to the response's head.
    pub first_byte: Duration,
    /// Between two frames of the response body.
    pub between_bytes: Duration,
}

/// Resolves a name to socket addresses.
type Resolve = Arc<
    dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// One plugin's connections; cheap to clone (a handle).
#[derive(Clone)]
pub struct OutgoingPool {
    inner: Arc<Inner>,
}

struct Inner {
    plugin: Arc<str>,
    in_flight: Arc<Semaphore>,
    idle: Mutex<Idle>,
    tls: tokio_rustls::TlsConnector,
    resolve: Resolve,
    opened: AtomicU64,
    reused: AtomicU64,
}

#[derive(Default)]
struct Idle {
    /// Oldest first: a connection is pushed at the back when it becomes idle.
    conns: VecDeque<IdleConn>,
    /// Whether a task is closing expired connections.
    reaper: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    tls: bool,
    host: String,
    port: u16,
    allow_non_public: bool,
}

impl Key {
    fn of(target: &Target) -> Key {
        Key {
            tls: target.tls,
            host: target.host.clone(),
            port: target.port,
            allow_non_public: target.allow_non_public,
        }
    }
}

struct IdleConn {
    key: Key,
    addr: SocketAddr,
    sender: http1::SendRequest<WasiBody>,
    since: Instant,
}

/// A connection taken from the pool or freshly opened, for one request.
struct Conn {
    key: Key,
    addr: SocketAddr,
    sender: http1::SendRequest<WasiBody>,
    reused: bool,
}

/// Connections opened and requests sent on a kept-alive one, since the pool was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutgoingStats {
    pub connections_opened: u64,
    pub requests_reused: u64,
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// TLS as `wasmtime-wasi-http`'s own sender does it (rustls with ring, the webpki roots),
/// HTTP/1.1 announced by ALPN; built once.
fn default_tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            tls_config(roots)
        })
        .clone()
}

fn tls_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // ring supports the safe defaults; this is only reachable with a broken build.
        Err(e) => unreachable!("rustls with ring refuses its default versions: {e}"),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn system_resolver() -> Resolve {
    Arc::new(|host, port| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

impl OutgoingPool {
    /// The pool of plugin `plugin`: system DNS, the webpki roots.
    pub(crate) fn new(plugin: &str) -> OutgoingPool {
        Self::with(plugin, default_tls(), system_resolver())
    }

    fn with(plugin: &str, tls: Arc<rustls::ClientConfig>, resolve: Resolve) -> OutgoingPool {
        OutgoingPool {
            inner: Arc::new(Inner {
                plugin: plugin.into(),
                in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_PLUGIN)),
                idle: Mutex::new(Idle::default()),
                tls: tokio_rustls::TlsConnector::from(tls),
                resolve,
                opened: AtomicU64::new(0),
                reused: AtomicU64::new(0),
            }),
        }
    }

    pub fn stats(&self) -> OutgoingStats {
        OutgoingStats {
            connections_opened: self.inner.opened.load(Ordering::Relaxed),
            requests_reused: self.inner.reused.load(Ordering::Relaxed),
        }
    }

    /// One of the plugin's request slots, waiting for one. [`OutgoingPool::send`]
    /// holds it until the request's connection is back in the pool or closed, so a plugin
    /// has at most [`MAX_IN_FLIGHT_PER_PLUGIN`] connections in use.
    pub(crate) async fn request_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.in_flight.clone().acquire_owned().await.ok()
    }

    /// Sends `request` (origin-form URI, `Host` set) to `target` on a kept-alive connection
    /// or a new one to a checked address, holding the plugin's request `slot`. The connection
    /// returns to the pool (and the slot is freed) once the response body has been read to
    /// its end or dropped.
    pub(crate) async fn send(
        &self,
        target: &Target,
        request: http::Request<WasiBody>,
        timeouts: Timeouts,
        slot: OwnedSemaphorePermit,
    ) -> Result<http::Response<PooledBody>, Error> {
        let key = Key::of(target);
        let mut request = request;
        // A kept-alive connection the server closed while we picked it fails before the
        // request is written; hyper hands the request back, and it goes on a new connection.
        for _ in 0..2 {
            let conn = match self.inner.checkout(&key) {
                Some(conn) => conn,
                None => self.connect(target, &key, timeouts.connect).await?,
            };
            let Conn {
                key,
                addr,
                mut sender,
                reused,
            } = conn;
            let sent = tokio::time::timeout(timeouts.first_byte, sender.try_send_request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)?;
            match sent {
                Ok(response) => {
                    if reused {
                        self.inner.reused.fetch_add(1, Ordering::Relaxed);
                    }
                    let lease = Lease {
                        pool: Arc::downgrade(&self.inner),
                        key,
                        addr,
                        sender,
                        slot,
                    };
                    return Ok(response.map(|inner| PooledBody {
                        inner,
                        lease: Some(lease),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Error::Hyper(e.into_error())),
                },
            }
        }
        Err(Error::ConnectionTerminated)
    }

    /// Resolves `target`, checks the addresses, and connects to the first that answers,
    /// all within `limit`.
    async fn connect(&self, target: &Target, key: &Key, limit: Duration) -> Result<Conn, Error> {
        tokio::time::timeout(limit, self.connect_unbounded(target, key))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
    }

    async fn connect_unbounded(&self, target: &Target, key: &Key) -> Result<Conn, Error> {
        let inner = &self.inner;
        let addrs = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => (inner.resolve)(target.host.clone(), target.port)
                .await
                .map_err(|_| Error::DnsError {
                    rcode: None,
                    info_code: None,
                })?,
        };
        if addrs.is_empty() {
            return Err(Error::DestinationNotFound);
        }
        if !target.allow_non_public
            && let Some(bad) = addrs
                .iter()
                .find(|a| classify(a.ip()) != AddressClass::Public)
        {
            warn!(plugin = %inner.plugin, host = %target.host, address = %bad.ip(),
                class = %describe(bad.ip()),
                "outgoing request refused: resolves to a non-public address");
            return Err(Error::DestinationIpProhibited);
        }

        // Only the addresses checked above are dialled.
        let mut last_error = None;
        let mut connected = None;
        for addr in &addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    connected = Some((stream, *addr));
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let Some((tcp, addr)) = connected else {
            return Err(Error::Connect(last_error.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no address")
            })));
        };
        // Requests are written whole by hyper; waiting for ACKs (Nagle) only adds latency.
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if target.tls {
            let name = match target.host.parse::<IpAddr>() {
                Ok(ip) => ServerName::from(ip),
                Err(_) => ServerName::try_from(target.host.clone())
                    .map_err(|_| Error::HttpRequestUriInvalid)?,
            };
            Box::new(inner.tls.connect(name, tcp).await.map_err(Error::Tls)?)
        } else {
            Box::new(tcp)
        };
        let (sender, connection) = http1::Builder::new()
            .handshake::<_, WasiBody>(TokioIo::new(stream))
            .await
            .map_err(Error::Hyper)?;
        // The connection outlives the request (and the delivery): its own task drives it
        // until the pool drops its sender or the peer closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        inner.opened.fetch_add(1, Ordering::Relaxed);
        debug!(plugin = %inner.plugin, host = %target.host, address = %addr, tls = target.tls,
            "outgoing connection opened");
        Ok(Conn {
            key: key.clone(),
            addr,
            sender,
            reused: false,
        })
    }
}

impl Inner {
    /// The most recently used idle connection for `key` that is still open.
    fn checkout(&self, key: &Key) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        idle.conns
            .retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT);
        let at = idle.conns.iter().rposition(|c| &c.key == key)?;
        let c = idle.conns.remove(at)?;
        Some(Conn {
            key: c.key,
            addr: c.addr,
            sender: c.sender,
            reused: true,
        })
    }

    /// Puts the connection back once it can take the next request (its response was read to
    /// the end); a connection closed meanwhile is dropped.
    fn return_when_ready(
        self: &Arc<Self>,
        key: Key,
        addr: SocketAddr,
        mut sender: http1::SendRequest<WasiBody>,
        slot: OwnedSemaphorePermit,
    ) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            if let Some(pool) = pool.upgrade() {
                pool.checkin(key, addr, sender);
            }
            drop(slot);
        });
    }

    fn checkin(self: &Arc<Self>, key: Key, addr: SocketAddr, sender: http1::SendRequest<WasiBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let same_key = idle.conns.iter().filter(|c| c.key == key).count();
        if same_key >= MAX_IDLE_PER_HOST {
            if let Some(at) = idle.conns.iter().position(|c| c.key == key) {
                idle.conns.remove(at);
            }
        } else if idle.conns.len() >= MAX_IDLE_PER_PLUGIN {
            idle.conns.pop_front();
        }
        idle.conns.push_back(IdleConn {
            key,
            addr,
            sender,
            since: Instant::now(),
        });
        if !idle.reaper {
            idle.reaper = true;
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }
}

/// A connection in use by one request, with the plugin's request slot it holds.
struct Lease {
    pool: Weak<Inner>,
    key: Key,
    addr: SocketAddr,
    sender: http1::SendRequest<WasiBody>,
    slot: OwnedSemaphorePermit,
}

impl Lease {
    /// Puts the connection back in the pool if hyper has it ready for the next request, has a
    /// task wait for it if not yet, drops it if it is closing; frees the slot once it is back
    /// or gone.
    fn release(self) {
        let Lease {
            pool,
            key,
            addr,
            mut sender,
            slot,
        } = self;
        // Outside a runtime (a store dropped elsewhere) nothing could reap or await it.
        let (Some(pool), Ok(_)) = (pool.upgrade(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        match sender.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => pool.checkin(key, addr, sender),
            Poll::Ready(Err(_)) => {}
            Poll::Pending => pool.return_when_ready(key, addr, sender, slot),
        }
    }
}

/// A response body on a pooled connection: hyper's, and the connection's [`Lease`], released
/// when the body ends, fails or is dropped.
pub(crate) struct PooledBody {
    inner: hyper::body::Incoming,
    lease: Option<Lease>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("inner", &self.inner)
            .field("leased", &self.lease.is_some())
            .finish()
    }
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        // The last frame of a body of known length ends it too: the connection can take the
        // next request before the reader asks for the end.
        if matches!(polled, Poll::Ready(None | Some(Err(_))))
            || (matches!(polled, Poll::Ready(Some(Ok(_)))) && this.inner.is_end_stream())
        {
            this.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        self.release();
    }
}

/// Closes idle connections past [`IDLE_TIMEOUT`]; ends when none is left (the next
/// `checkin` starts another) or the pool is gone.
async fn reap(pool: Weak<Inner>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT / 4).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        idle.conns
            .retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT);
        if idle.conns.is_empty() {
            idle.reaper = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Empty};
    use std::sync::atomic::AtomicUsize;

    /// A keep-alive HTTP/1.1 server on `addr` answering `ok`, counting accepted connections.
    async fn server(addr: &str) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let local = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (local, accepted)
    }

    fn get(host: &str, port: u16) -> http::Request<WasiBody> {
        http::Request::builder()
            .uri("/")
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
            .unwrap()
    }

    async fn slot(pool: &OutgoingPool) -> OwnedSemaphorePermit {
        pool.request_slot().await.unwrap()
    }

    const TIMEOUTS: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(5),
        between_bytes: Duration::from_secs(5),
    };

    /// A plain-HTTP target on loopback (allowed: the tests' servers are local).
    fn loopback(port: u16) -> Target {
        Target {
            tls: false,
            host: "127.0.0.1".into(),
            port,
            allow_non_public: true,
        }
    }

    /// One GET to `target` through `pool`, with a fresh request slot.
    async fn send(pool: &OutgoingPool, target: &Target, host: &str) -> http::Response<PooledBody> {
        pool.send(target, get(host, target.port), TIMEOUTS, slot(pool).await)
            .await
            .unwrap()
    }

    /// Waits until an idle connection is back in the pool: it returns from its own task once
    /// it is ready.
    async fn back_in_the_pool(pool: &OutgoingPool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.inner.idle.lock().unwrap().conns.is_empty() {
            assert!(Instant::now() < deadline, "the connection never came back");
            tokio::task::yield_now().await;
        }
    }

    /// A resolver that answers `answers[n]` to its n-th question (the last one after that)
    /// and counts the questions.
    fn scripted(answers: Vec<Vec<SocketAddr>>) -> (Resolve, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        let resolve: Resolve = Arc::new(move |_, _| {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)].clone();
            Box::pin(async move { Ok(answer) })
        });
        (resolve, asked)
    }

    #[tokio::test]
    async fn connections_are_reused_across_requests() {
        let (addr, accepted) = server("127.0.0.1:0").await;
        let pool = OutgoingPool::new("t");
        let target = loopback(addr.port());
        for _ in 0..20 {
            let response = send(&pool, &target, "127.0.0.1").await;
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
            back_in_the_pool(&pool).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(
            pool.stats(),
            OutgoingStats {
                connections_opened: 1,
                requests_reused: 19
            }
        );
    }

    #[tokio::test]
    async fn a_small_answer_dropped_unread_keeps_its_connection() {
        let (addr, accepted) = server("127.0.0.1:0").await;
        let pool = OutgoingPool::new("t");
        let target = loopback(addr.port());
        for _ in 0..10 {
            let response = send(&pool, &target, "127.0.0.1").await;
            assert_eq!(response.status(), 200);
            drop(response);
            back_in_the_pool(&pool).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.stats().requests_reused, 9);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_not_reused() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // Answers one request per connection, keeps it alive, then closes it while idle.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    drop(stream);
                    let _ = closed_tx.send(());
                });
            }
        });
        let pool = OutgoingPool::new("t");
        let target = loopback(addr.port());
        for _ in 0..2 {
            let response = send(&pool, &target, "127.0.0.1").await;
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
            closed.recv().await.unwrap();
        }
        // The second request noticed the first connection was closed and opened another.
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.stats().requests_reused, 0);
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_before_any_connection() {
        let (addr, accepted) = server("127.0.0.1:0").await;
        let (resolve, asked) = scripted(vec![vec![addr]]);
        let pool = OutgoingPool::with("t", default_tls(), resolve);
        let mut target = Target {
            tls: false,
            host: "internal.example".into(),
            port: addr.port(),
            allow_non_public: false,
        };
        let refused = pool
            .send(
                &target,
                get("internal.example", addr.port()),
                TIMEOUTS,
                slot(&pool).await,
            )
            .await;
        assert!(
            matches!(refused, Err(Error::DestinationIpProhibited)),
            "{refused:?}"
        );
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(accepted.load(Ordering::SeqCst), 0);

        // Opted in: the same name reaches the server.
        target.allow_non_public = true;
        let response = pool
            .send(
                &target,
                get("internal.example", addr.port()),
                TIMEOUTS,
                slot(&pool).await,
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn only_the_checked_address_is_dialled_whatever_dns_says_next() {
        // DNS rebinding: the first answer is public (and checked), every later one points at
        // a local server. The connection must go to the checked address, never the local one.
        let (local, accepted) = server("127.0.0.1:0").await;
        let public: SocketAddr = SocketAddr::new("1.1.1.1".parse().unwrap(), local.port());
        let (resolve, asked) = scripted(vec![vec![public], vec![local]]);
        let pool = OutgoingPool::with("t", default_tls(), resolve);
        let target = Target {
            tls: false,
            host: "rebind.example".into(),
            port: local.port(),
            allow_non_public: false,
        };
        let short = Timeouts {
            connect: Duration::from_millis(300),
            ..TIMEOUTS
        };
        // 1.1.1.1 on that port does not answer (or the machine has no route): an error.
        let result = pool
            .send(
                &target,
                get("rebind.example", local.port()),
                short,
                slot(&pool).await,
            )
            .await;
        assert!(result.is_err(), "{result:?}");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "resolved once per connection"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "reached the local server"
        );
        // The next attempt resolves again, gets the local address, and refuses it.
        let result = pool
            .send(
                &target,
                get("rebind.example", local.port()),
                short,
                slot(&pool).await,
            )
            .await;
        assert!(
            matches!(result, Err(Error::DestinationIpProhibited)),
            "{result:?}"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "reached the local server"
        );
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_per_host_and_per_plugin() {
        let pool = OutgoingPool::new("t");
        let mut senders = Vec::new();
        // Connections to real servers (the pool keeps only open ones).
        let mut targets = Vec::new();
        for _ in 0..3 {
            let (addr, _) = server("127.0.0.1:0").await;
            targets.push(addr);
        }
        for (i, addr) in targets.iter().enumerate() {
            let n = if i == 0 { MAX_IDLE_PER_HOST + 4 } else { 16 };
            for _ in 0..n {
                let key = Key {
                    tls: false,
                    host: "127.0.0.1".into(),
                    port: addr.port(),
                    allow_non_public: true,
                };
                let target = Target {
                    tls: false,
                    host: key.host.clone(),
                    port: key.port,
                    allow_non_public: true,
                };
                let conn = pool.connect(&target, &key, TIMEOUTS.connect).await.unwrap();
                senders.push((conn.key, conn.addr, conn.sender));
            }
        }
        for (key, addr, sender) in senders {
            pool.inner.checkin(key, addr, sender);
        }
        let idle = pool.inner.idle.lock().unwrap();
        assert_eq!(idle.conns.len(), MAX_IDLE_PER_PLUGIN);
        let per_host = |addr: &SocketAddr| {
            idle.conns
                .iter()
                .filter(|c| c.key.port == addr.port())
                .count()
        };
        // The oldest went first: all of the last two hosts' are kept.
        assert_eq!(per_host(&targets[0]), MAX_IDLE_PER_PLUGIN - 32);
        assert_eq!(per_host(&targets[1]), 16);
        assert_eq!(per_host(&targets[2]), 16);
    }

    /// A TLS server for `localhost` on 127.0.0.1, its certificate from a CA made here; it
    /// records the server name each client asked for (SNI) and counts TLS connections.
    async fn tls_server() -> (u16, rustls::RootCertStore, Arc<Mutex<Vec<String>>>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.into())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let names = Arc::new(Mutex::new(Vec::new()));
        let seen = names.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let name = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                    seen.lock().unwrap().push(name);
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (port, roots, names)
    }

    #[tokio::test]
    async fn https_keeps_the_name_for_sni_and_the_certificate() {
        let (port, roots, names) = tls_server().await;
        let target = Target {
            tls: true,
            host: "localhost".into(),
            port,
            allow_non_public: true,
        };
        let pool = OutgoingPool::with("t", tls_config(roots), system_resolver());
        for _ in 0..3 {
            let response = send(&pool, &target, "localhost").await;
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
            back_in_the_pool(&pool).await;
        }
        // One TLS connection, asked for by name, reused.
        assert_eq!(*names.lock().unwrap(), ["localhost"]);
        assert_eq!(pool.stats().requests_reused, 2);

        // The same server with the public roots only: its certificate is not trusted.
        let public = OutgoingPool::new("t");
        let refused = public
            .send(
                &target,
                get("localhost", port),
                TIMEOUTS,
                slot(&public).await,
            )
            .await;
        assert!(matches!(refused, Err(Error::Tls(_))), "{refused:?}");
    }
}
