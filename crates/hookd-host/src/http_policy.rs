//! Outgoing HTTP policy: the plugin's origin allow-list, the classes of addresses a name may
//! resolve to, the per-delivery caps on requests, timeouts, and the request and response size
//! caps, applied to every `wasi:http` request. Connections themselves (resolve, check, connect,
//! keep alive) are [`crate::outgoing`]'s.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hookd_config::{Origin, PluginSpec};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::warn;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::outgoing::{OutgoingPool, PooledBody, Target, Timeouts};

/// Requests one delivery may have in flight at once; more wait for a slot.
pub(crate) const MAX_IN_FLIGHT_PER_DELIVERY: usize = 16;
/// Requests one delivery may have outstanding, in flight or waiting for a slot; one more is
/// refused at once (`connection-limit-reached`), so a flood holds no more host state than this.
pub(crate) const MAX_OUTSTANDING_PER_DELIVERY: usize = 64;
/// Largest body a plugin may send in one request; a longer one fails
/// (`HTTP-request-body-size`).
pub(crate) const MAX_REQUEST_BODY_BYTES: u64 = 8 << 20;

/// What one plugin may reach, for one delivery.
pub(crate) struct HttpPolicy {
    plugin: Arc<str>,
    allow: Arc<[Origin]>,
    /// Connect, first-byte and between-bytes timeout (the plugin may ask for less, never more).
    timeout: Duration,
    max_response_bytes: u64,
    /// `capabilities.http_allow_private_addresses`.
    allow_private_addresses: bool,
    /// The plugin's connections, shared by its deliveries.
    pool: OutgoingPool,
    /// This delivery's requests.
    requests: Arc<DeliveryRequests>,
}

/// The requests of one delivery: slots in flight, outstanding (in flight or waiting), and
/// the order in which they get their slots.
struct DeliveryRequests {
    in_flight: Arc<Semaphore>,
    outstanding: Arc<Semaphore>,
    turns: Turns,
    /// Whether the log was already told that this delivery hit its cap.
    cap_logged: AtomicBool,
}

/// Hands out slots in the order the plugin made its requests. A plugin that waits for its
/// answers in that order (as most do) then never waits for a request whose slot is taken
/// by a later request's answer it has not read yet, in its delivery or in another one.
struct Turns {
    issued: AtomicU64,
    /// The next ticket to be served, and tickets finished out of order (dropped early).
    state: Mutex<(u64, BTreeSet<u64>)>,
    next: watch::Sender<u64>,
}

impl Turns {
    fn new() -> Turns {
        Turns {
            issued: AtomicU64::new(0),
            state: Mutex::new((0, BTreeSet::new())),
            next: watch::Sender::new(0),
        }
    }
}

/// One request's place in [`Turns`]; its turn ends when this is dropped.
struct Turn {
    requests: Arc<DeliveryRequests>,
    ticket: u64,
}

impl Turn {
    fn take(requests: &Arc<DeliveryRequests>) -> Turn {
        Turn {
            requests: requests.clone(),
            ticket: requests.turns.issued.fetch_add(1, Ordering::Relaxed),
        }
    }

    async fn wait(&self) {
        let mut next = self.requests.turns.next.subscribe();
        // The sender lives in `self.requests`: this cannot fail while `self` exists.
        let _ = next.wait_for(|n| *n >= self.ticket).await;
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let turns = &self.requests.turns;
        let mut state = turns.state.lock().unwrap_or_else(|e| e.into_inner());
        let (next, finished) = &mut *state;
        finished.insert(self.ticket);
        while finished.remove(next) {
            *next += 1;
        }
        turns.next.send_replace(*next);
    }
}

impl HttpPolicy {
    /// The policy of one delivery of the plugin `spec`, sending through the plugin's `pool`.
    pub(crate) fn new(spec: &PluginSpec, pool: &OutgoingPool) -> HttpPolicy {
        HttpPolicy {
            plugin: spec.name.as_str().into(),
            allow: spec.capabilities.http.clone().into(),
            timeout: spec.capabilities.http_timeout,
            max_response_bytes: spec.capabilities.http_max_response_bytes,
            allow_private_addresses: spec.capabilities.http_allow_private_addresses,
            pool: pool.clone(),
            requests: Arc::new(DeliveryRequests {
                in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_DELIVERY)),
                outstanding: Arc::new(Semaphore::new(MAX_OUTSTANDING_PER_DELIVERY)),
                turns: Turns::new(),
                cap_logged: AtomicBool::new(false),
            }),
        }
    }

    /// Where a request to `uri` may go: its origin must be in the allow-list, and only an IP
    /// literal or `localhost` written in the origin, or the manifest's explicit opt-in, lets
    /// it reach a non-public address (checked when the name is resolved). A refusal is logged.
    pub(crate) fn route(&self, uri: &http::Uri) -> Result<Target, Denied> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let written = uri.host().unwrap_or_default().to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = written.trim_matches(['[', ']']).to_owned();
        let Some(origin) = allowing(&self.allow, &scheme, &written, port) else {
            warn!(plugin = %self.plugin, %scheme, %host, port, "outgoing request refused: origin not allowed");
            return Err(Denied { scheme, host, port });
        };
        Ok(Target {
            tls: scheme == "https",
            host,
            port,
            allow_non_public: origin.names_host_literally() || self.allow_private_addresses,
        })
    }

    pub(crate) fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The manifest's `http_timeout_ms`: the longest any part of a request may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The manifest's `http_max_response_bytes`.
    pub(crate) fn max_response_bytes(&self) -> u64 {
        self.max_response_bytes
    }

    pub(crate) fn pool(&self) -> &OutgoingPool {
        &self.pool
    }

    /// A slot among the delivery's requests in flight (the plugin's are the pool's).
    pub(crate) async fn delivery_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.requests.in_flight.clone().acquire_owned().await.ok()
    }
}

/// A request whose origin the allow-list does not name.
#[derive(Debug)]
pub(crate) struct Denied {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl From<Denied> for Error {
    fn from(_: Denied) -> Error {
        Error::HttpRequestDenied
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> ResponseFuture {
        drop(fut);
        let uri = request.uri().clone();
        let target = match self.route(&uri) {
            Ok(target) => target,
            Err(denied) => return Box::new(async move { Err(denied.into()) }),
        };
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_REQUEST_BODY_BYTES) {
            warn!(plugin = %self.plugin, host = %target.host, bytes = declared, limit = MAX_REQUEST_BODY_BYTES,
                "outgoing request refused: body over the size cap");
            return Box::new(async {
                Err(Error::HttpRequestBodySize(Some(MAX_REQUEST_BODY_BYTES)))
            });
        }
        // Taken here, while the guest waits in `handle`, so a flood is refused before it
        // becomes host tasks.
        let requests = &self.requests;
        let Ok(outstanding) = requests.outstanding.clone().try_acquire_owned() else {
            if !requests.cap_logged.swap(true, Ordering::Relaxed) {
                warn!(plugin = %self.plugin, limit = MAX_OUTSTANDING_PER_DELIVERY,
                    "outgoing request refused: too many requests at once in one delivery (logged once per delivery)");
            }
            return Box::new(async { Err(Error::ConnectionLimitReached) });
        };

        let limit = self.timeout;
        let cap = |asked: Option<Duration>| asked.map_or(limit, |d| d.min(limit));
        let timeouts = Timeouts {
            connect: cap(options.and_then(|o| o.connect_timeout)),
            first_byte: cap(options.and_then(|o| o.first_byte_timeout)),
            between_bytes: cap(options.and_then(|o| o.between_bytes_timeout)),
        };
        let turn = Turn::take(requests);
        let pool = self.pool.clone();
        let max_response_bytes = self.max_response_bytes;
        let plugin = self.plugin.clone();
        Box::new(async move {
            // In turn, a slot of this delivery first, then one of the plugin: a delivery
            // waiting for its own slot holds none of the plugin's.
            let slots = tokio::time::timeout(limit, async {
                turn.wait().await;
                let delivery = turn.requests.in_flight.clone().acquire_owned().await.ok()?;
                let plugin = pool.request_slot().await?;
                Some((delivery, plugin))
            })
            .await;
            drop(turn);
            let Ok(Some((delivery_slot, plugin_slot))) = slots else {
                warn!(%plugin, "outgoing request refused: no free request slot in time");
                return Err(Error::ConnectionLimitReached);
            };

            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .parse()
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            // The connection is to the origin itself, so the request line is origin-form.
            *request.uri_mut() = path;
            let request = request.map(|body| {
                CappedRequestBody {
                    inner: body,
                    remaining: MAX_REQUEST_BODY_BYTES,
                }
                .boxed_unsync()
            });
            let response = pool.send(&target, request, timeouts, plugin_slot).await?;
            let response = response.map(|body| {
                ResponseBody {
                    inner: body,
                    remaining: max_response_bytes,
                    limit: max_response_bytes,
                    between_bytes: timeouts.between_bytes,
                    deadline: None,
                    armed: false,
                    slots: Some((outstanding, delivery_slot)),
                }
                .boxed_unsync()
            });
            Ok((
                response,
                // The connection is driven by its own task (it outlives this request).
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

/// The first origin of `allow` that allows `scheme://host:port`, `host` as the URI writes it
/// (an IPv6 literal in brackets, as origins write it too).
fn allowing<'a>(allow: &'a [Origin], scheme: &str, host: &str, port: u16) -> Option<&'a Origin> {
    allow.iter().find(|o| o.allows(scheme, host, port))
}

/// A request body that fails once it has produced more than [`MAX_REQUEST_BODY_BYTES`].
struct CappedRequestBody {
    inner: WasiBody,
    remaining: u64,
}

impl Body for CappedRequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(
                            MAX_REQUEST_BODY_BYTES,
                        )))));
                    }
                    self.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body with the between-bytes timeout and the size cap. It holds the request's
/// slots in its delivery until it ends or is dropped (the plugin's slot is the pool's).
struct ResponseBody {
    inner: PooledBody,
    remaining: u64,
    limit: u64,
    between_bytes: Duration,
    /// The between-bytes timer, armed when the body first waits after a frame: most small
    /// answers arrive whole with their head and never need it.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
    slots: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.slots = None;
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            this.limit,
                        )))));
                    }
                    this.remaining -= len;
                }
                this.armed = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.slots = None;
                Poll::Ready(Some(Err(if e.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::Hyper(e)
                })))
            }
            Poll::Ready(None) => {
                this.slots = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let between_bytes = this.between_bytes;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(between_bytes)));
                if !this.armed {
                    deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + between_bytes);
                    this.armed = true;
                }
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.slots = None;
                        Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_as_written_ipv6_literals_included() {
        let allow: Vec<Origin> = ["http://[::1]:8080", "https://*.example.com"]
            .iter()
            .map(|o| Origin::parse(o).unwrap())
            .collect();
        let first = allowing(&allow, "http", "[::1]", 8080).unwrap();
        assert!(first.names_host_literally());
        let wildcard = allowing(&allow, "https", "api.example.com", 443).unwrap();
        assert!(!wildcard.names_host_literally());
        assert!(allowing(&allow, "http", "[::2]", 8080).is_none());
        assert!(allowing(&allow, "https", "example.com", 443).is_none());
    }
}
