//! `POST /webhooks`: read under limits, verify, parse, durably enqueue, answer.
//!
//! A body is read into a buffer that grows with the bytes that arrived, never sized from the
//! declared `Content-Length` up front, and each growth is first taken from two byte budgets:
//! all bodies being read at once ([`IngestLimits::max_inflight_body_bytes`]) and those of one
//! client ([`IngestLimits::max_inflight_body_bytes_per_client`]). A growth that does not fit
//! is a 503 with `Retry-After` at once: many slow clients declaring large bodies cost what
//! they sent, within a bound, never an out-of-memory kill.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Buf;
use futures_util::{Stream, StreamExt};
use hookd_core::{Envelope, Limits, SIGNATURE_HEADER, Verifier};
use hookd_storage::{EventLog, NewEvent, StorageError, now_ms};
use serde::Serialize;
use tracing::{debug, warn};
use warp::Filter;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::path::FullPath;
use warp::reply::Response;

use crate::listener::{Client, ClientShare, PeerAddr};
use crate::{IngestMetrics, Subscriptions};

/// Limits on what one ingest request may cost.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    pub path: String,
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    /// The whole body must arrive within this time.
    pub body_read_timeout: Duration,
    /// Sent as `Retry-After` with a 503.
    pub retry_after: Duration,
    /// Bytes of bodies being read at once, all clients together; 503 beyond it.
    pub max_inflight_body_bytes: usize,
    /// The part of it one client (an IPv4 address, an IPv6 /64) may hold; 503 beyond it.
    pub max_inflight_body_bytes_per_client: usize,
}

/// Bytes of the bodies being read now, all clients together.
#[derive(Debug, Default)]
pub struct InflightBodies {
    held: AtomicUsize,
}

impl InflightBodies {
    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// Everything the ingest route needs, shared by all requests.
pub struct IngestState {
    /// Swapped by a configuration reload; a request uses what it loaded.
    pub limits: ArcSwap<IngestLimits>,
    /// Swapped by a configuration reload (secret rotation).
    pub verifier: ArcSwap<Verifier>,
    /// Where events go: they are acknowledged once it says they are durable.
    pub log: Arc<dyn EventLog>,
    pub subscriptions: Arc<dyn Subscriptions>,
    pub metrics: IngestMetrics,
    /// The bytes every body being read holds, against `max_inflight_body_bytes`.
    pub inflight_bodies: InflightBodies,
}

/// The ingest listener's only route: `POST {path}`; any other method there is a 405, any other
/// path a 404.
pub fn ingest_routes(
    state: Arc<IngestState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::any()
        .map(move || state.clone())
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::optional::<u64>(
            header::CONTENT_LENGTH.as_str(),
        ))
        .and(warp::header::optional::<HeaderValue>(SIGNATURE_HEADER))
        .and(warp::ext::optional::<PeerAddr>())
        .and(warp::ext::optional::<Client>())
        .and(warp::body::stream())
        .then(
            |state: Arc<IngestState>,
             method,
             path: FullPath,
             declared: Option<u64>,
             signature: Option<HeaderValue>,
             peer: Option<PeerAddr>,
             client: Option<Client>,
             body| {
                let request = Request {
                    method,
                    declared,
                    signature,
                    peer: peer.map(|p| p.0),
                    client: client.map(|c| c.0),
                };
                async move { state.handle(request, path.as_str(), body).await }
            },
        )
}

#[derive(Serialize)]
struct Accepted<'a> {
    id: &'a str,
    duplicate: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let text = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(text.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(status: StatusCode, error: &str, detail: Option<String>) -> Response {
    json_response(status, &ErrorBody { error, detail })
}

/// The parts of a request the handler looks at.
struct Request {
    method: Method,
    /// The `content-length` header, if any.
    declared: Option<u64>,
    signature: Option<HeaderValue>,
    peer: Option<SocketAddr>,
    /// What the request's client holds (absent when not served by [`crate::serve`]).
    client: Option<Arc<ClientShare>>,
}

enum BodyError {
    TooLarge,
    Timeout,
    Broken,
    /// The bytes would not fit in the in-flight budget (all clients', or this client's).
    Busy,
}

/// The smallest buffer a body of unknown length starts with.
const MIN_BODY_BUFFER: usize = 8 * 1024;

/// The budget bytes one body holds; given back when it is dropped.
struct BodyHold<'a> {
    all: &'a AtomicUsize,
    client: Option<Arc<ClientShare>>,
    bytes: usize,
}

impl BodyHold<'_> {
    /// Takes `n` more bytes from both budgets, or none if either is exhausted.
    fn take(&mut self, n: usize, limits: &IngestLimits) -> bool {
        if self.all.fetch_add(n, Ordering::AcqRel) + n > limits.max_inflight_body_bytes {
            self.all.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        if let Some(client) = &self.client
            && client.body_bytes.fetch_add(n, Ordering::AcqRel) + n
                > limits.max_inflight_body_bytes_per_client
        {
            client.body_bytes.fetch_sub(n, Ordering::AcqRel);
            self.all.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        self.bytes += n;
        true
    }
}

impl Drop for BodyHold<'_> {
    fn drop(&mut self) {
        self.all.fetch_sub(self.bytes, Ordering::AcqRel);
        if let Some(client) = &self.client {
            client.body_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

impl IngestState {
    async fn handle<S, B>(&self, request: Request, path: &str, body: S) -> Response
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        let started = Instant::now();
        let Request {
            method,
            declared,
            signature,
            peer,
            client,
        } = request;
        let limits = self.limits.load();
        if path != limits.path {
            self.metrics.refuse("not_found", peer, None);
            return error_response(StatusCode::NOT_FOUND, "not found", None);
        }
        if method != Method::POST {
            self.metrics.refuse("method_not_allowed", peer, None);
            let mut r = error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", None);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }

        let max = limits.max_body_bytes;
        if declared.is_some_and(|len| len > max as u64) {
            return self.too_large(peer, declared, max);
        }

        let mut hold = BodyHold {
            all: &self.inflight_bodies.held,
            client,
            bytes: 0,
        };
        let bytes = match self.read_body(body, declared, &limits, &mut hold).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => return self.too_large(peer, declared, max),
            Err(BodyError::Timeout) => {
                self.metrics.refuse("body_timeout", peer, declared);
                return error_response(StatusCode::REQUEST_TIMEOUT, "request timeout", None);
            }
            Err(BodyError::Broken) => {
                self.metrics.refuse("body_error", peer, declared);
                return error_response(StatusCode::BAD_REQUEST, "unreadable body", None);
            }
            Err(BodyError::Busy) => {
                self.metrics.refuse("body_budget", peer, declared);
                return self.busy(
                    "too many request bodies are being read at once; retry later".to_owned(),
                );
            }
        };

        let signature = signature.as_ref().map(HeaderValue::as_bytes);
        if let Err(e) = self.verifier.load().verify(&bytes, signature) {
            // Unauthenticated: counted, and logged in aggregate by size and source only.
            self.metrics
                .refuse(e.reason(), peer, Some(bytes.len() as u64));
            return error_response(StatusCode::UNAUTHORIZED, "unauthorized", None);
        }

        let envelope = match Envelope::parse(
            &bytes,
            Limits {
                max_bytes: max,
                max_depth: limits.max_json_depth,
            },
        ) {
            Ok(envelope) => envelope,
            Err(e) => {
                // Signed: only a sender holding the secret gets here, so each is worth its
                // own line with the detail.
                self.metrics.reject(e.reason());
                let peer = display_peer(peer);
                warn!(%peer, size = bytes.len(), error = %e, "request rejected: bad envelope");
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad envelope",
                    Some(e.to_string()),
                );
            }
        };

        let deliveries = self.subscriptions.subscribers(&envelope.event_type);
        let routed = !deliveries.is_empty();
        let event = NewEvent {
            id: envelope.id.clone(),
            event_type: envelope.event_type.as_str().to_owned(),
            payload: envelope.payload_json().to_owned(),
            received_at_ms: now_ms(),
            deliveries,
        };
        let event_id = envelope.id.clone();
        let event_type = envelope.event_type.clone();
        // From here the event's copy in the store's queue is what this request holds, counted
        // against `queue_max_bytes`: the body, its parse and its budget go back before the
        // commit wait.
        drop((envelope, bytes, hold));
        // Kept for the dispatch hint; only routed events need it, and only when hints are taken.
        let hint = (routed && self.subscriptions.takes_hints()).then(|| event.clone());
        let size = event.payload.len() as u64;
        let outcome = match self.log.append(event) {
            Ok(committed) => committed.await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(ingested) => {
                self.metrics.events_received.inc();
                if ingested.duplicate {
                    self.metrics.events_duplicate.inc();
                } else if !routed {
                    self.metrics.events_unrouted.inc();
                } else if let Some(event) = &hint {
                    self.subscriptions.stored(ingested.seq, event);
                }
                self.metrics
                    .ingest_seconds
                    .observe(started.elapsed().as_secs_f64());
                // Debug, like each delivery: at info, a busy daemon would write a line per
                // event, and journald's rate limit would then drop the warnings that matter.
                // The metrics count them; the store keeps them.
                debug!(
                    event_id = %event_id,
                    event_type = %event_type,
                    duplicate = ingested.duplicate,
                    "event accepted"
                );
                json_response(
                    StatusCode::OK,
                    &Accepted {
                        id: &event_id,
                        duplicate: ingested.duplicate,
                    },
                )
            }
            Err(e) => self.unavailable(peer, size, &e),
        }
    }

    /// Reads the body under the byte cap, the deadline and the in-flight budgets.
    async fn read_body<S, B>(
        &self,
        body: S,
        declared: Option<u64>,
        limits: &IngestLimits,
        hold: &mut BodyHold<'_>,
    ) -> Result<Vec<u8>, BodyError>
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        let max = limits.max_body_bytes;
        // The declared length only caps how far the buffer may grow; it never sizes it up
        // front (hyper refuses a body longer than it declared).
        let ceiling = declared.map_or(max, |d| usize::try_from(d).unwrap_or(max).min(max));
        let read = async move {
            let mut buf: Vec<u8> = Vec::new();
            let mut body = std::pin::pin!(body);
            while let Some(chunk) = body.next().await {
                let mut chunk = chunk.map_err(|_| BodyError::Broken)?;
                let needed = buf.len() + chunk.remaining();
                if needed > max {
                    return Err(BodyError::TooLarge);
                }
                if needed > buf.capacity() {
                    // Doubling, from a small start, up to what the request may still need:
                    // the budget holds at most twice the bytes that really arrived.
                    let target = (buf.capacity() * 2)
                        .max(MIN_BODY_BUFFER)
                        .min(ceiling)
                        .max(needed);
                    if !hold.take(target - buf.capacity(), limits) {
                        return Err(BodyError::Busy);
                    }
                    buf.reserve_exact(target - buf.len());
                }
                while chunk.has_remaining() {
                    let part = chunk.chunk();
                    let n = part.len();
                    buf.extend_from_slice(part);
                    chunk.advance(n);
                }
            }
            Ok(buf)
        };
        tokio::time::timeout(limits.body_read_timeout, read)
            .await
            .unwrap_or(Err(BodyError::Timeout))
    }

    fn too_large(&self, peer: Option<SocketAddr>, declared: Option<u64>, max: usize) -> Response {
        self.metrics.refuse("too_large", peer, declared);
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large",
            Some(format!("the limit is {max} bytes")),
        )
    }

    /// 503 with `Retry-After`: the sender should try again soon.
    fn busy(&self, detail: String) -> Response {
        let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", Some(detail));
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.limits.load().retry_after.as_secs().max(1)),
        );
        r
    }

    fn unavailable(&self, peer: Option<SocketAddr>, size: u64, e: &StorageError) -> Response {
        let reason = match e {
            StorageError::QueueFull => "queue_full",
            StorageError::Closed => "shutting_down",
            StorageError::Failed(_) => "store_error",
        };
        // In aggregate too: under overload every request is refused, and a line each would
        // only add to the load. The store's writer logs each failed commit itself.
        self.metrics.refuse(reason, peer, Some(size));
        self.busy(match e {
            StorageError::QueueFull => "the ingest queue is full".to_owned(),
            StorageError::Closed => "the daemon is shutting down".to_owned(),
            StorageError::Failed(_) => "the store cannot take the event".to_owned(),
        })
    }
}

/// The client's address in a log line.
fn display_peer(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string())
}
