//! `POST /webhooks`: read under limits, verify, parse, durably enqueue, answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use hookd_core::{Envelope, Limits, SIGNATURE_HEADER, Verifier};
use hookd_store::{IngestError, NewEvent, Store};
use serde::Serialize;
use tracing::{debug, warn};
use warp::Filter;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::path::FullPath;
use warp::reply::Response;

use crate::listener::PeerAddr;
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
}

/// Everything the ingest route needs, shared by all requests.
pub struct IngestState {
    /// Swapped by a configuration reload; a request uses what it loaded.
    pub limits: ArcSwap<IngestLimits>,
    /// Swapped by a configuration reload (secret rotation).
    pub verifier: ArcSwap<Verifier>,
    pub store: Store,
    pub subscriptions: Arc<dyn Subscriptions>,
    pub metrics: IngestMetrics,
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
        .and(warp::body::stream())
        .then(
            |state: Arc<IngestState>,
             method,
             path: FullPath,
             declared: Option<u64>,
             signature: Option<HeaderValue>,
             peer: Option<PeerAddr>,
             body| {
                let request = Request {
                    method,
                    declared,
                    signature,
                    peer: peer.map(|p| p.0),
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

/// The client's address in log lines; formatted only when a line is written.
#[derive(Clone, Copy)]
struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// The parts of a request the handler looks at.
struct Request {
    method: Method,
    /// The `content-length` header, if any.
    declared: Option<u64>,
    signature: Option<HeaderValue>,
    peer: Option<SocketAddr>,
}

enum BodyError {
    TooLarge,
    Timeout,
    Broken,
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
        } = request;
        let peer = Peer(peer);
        if path != self.limits.load().path {
            self.metrics.reject("not_found");
            debug!(%peer, %method, path, "no such path");
            return error_response(StatusCode::NOT_FOUND, "not found", None);
        }
        if method != Method::POST {
            self.metrics.reject("method_not_allowed");
            debug!(%peer, %method, "method not allowed");
            let mut r = error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", None);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }

        let max = self.limits.load().max_body_bytes;
        if declared.is_some_and(|len| len > max as u64) {
            return self.too_large(peer, declared);
        }

        let bytes = match self.read_body(body, declared).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => return self.too_large(peer, declared),
            Err(BodyError::Timeout) => {
                self.metrics.reject("body_timeout");
                warn!(%peer, "request rejected: body not received in time");
                return error_response(StatusCode::REQUEST_TIMEOUT, "request timeout", None);
            }
            Err(BodyError::Broken) => {
                self.metrics.reject("body_error");
                debug!(%peer, "request body broken off");
                return error_response(StatusCode::BAD_REQUEST, "unreadable body", None);
            }
        };

        let signature = signature.as_ref().map(HeaderValue::as_bytes);
        if let Err(e) = self.verifier.load().verify(&bytes, signature) {
            self.metrics.reject(e.reason());
            // Unauthenticated: log its size and source, nothing of its content.
            warn!(%peer, size = bytes.len(), reason = e.reason(), "request rejected: unauthorized");
            return error_response(StatusCode::UNAUTHORIZED, "unauthorized", None);
        }

        let limits = Limits {
            max_bytes: max,
            max_depth: self.limits.load().max_json_depth,
        };
        let envelope = match Envelope::parse(&bytes, limits) {
            Ok(envelope) => envelope,
            Err(e) => {
                self.metrics.reject(e.reason());
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
        // Kept for the dispatch hint; only routed events need it.
        let hint = routed.then(|| event.clone());
        let outcome = match self.store.submit(event) {
            Ok(committed) => committed.await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(ingested) => {
                self.metrics.events_received.inc();
                if ingested.duplicate {
                    self.metrics.events_duplicate.inc();
                } else if let Some(event) = &hint {
                    self.subscriptions.stored(ingested.seq, event);
                } else {
                    self.metrics.events_unrouted.inc();
                }
                self.metrics
                    .ingest_seconds
                    .observe(started.elapsed().as_secs_f64());
                // Debug, like each delivery: at info, a busy daemon would write a line per
                // event, and journald's rate limit would then drop the warnings that matter.
                // The metrics count them; the store keeps them.
                debug!(
                    event_id = %envelope.id,
                    event_type = %envelope.event_type,
                    duplicate = ingested.duplicate,
                    "event accepted"
                );
                json_response(
                    StatusCode::OK,
                    &Accepted {
                        id: &envelope.id,
                        duplicate: ingested.duplicate,
                    },
                )
            }
            Err(e) => self.unavailable(peer, &envelope, &e),
        }
    }

    async fn read_body<S, B>(&self, body: S, declared: Option<u64>) -> Result<Bytes, BodyError>
    where
        S: Stream<Item = Result<B, warp::Error>> + Send,
        B: Buf,
    {
        let max = self.limits.load().max_body_bytes;
        let read = async move {
            let capacity = declared.map_or(8 * 1024, |d| d as usize).min(max);
            let mut buf = BytesMut::with_capacity(capacity);
            let mut body = std::pin::pin!(body);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|_| BodyError::Broken)?;
                if buf.len() + chunk.remaining() > max {
                    return Err(BodyError::TooLarge);
                }
                buf.put(chunk);
            }
            Ok(buf.freeze())
        };
        tokio::time::timeout(self.limits.load().body_read_timeout, read)
            .await
            .unwrap_or(Err(BodyError::Timeout))
    }

    fn too_large(&self, peer: Peer, declared: Option<u64>) -> Response {
        self.metrics.reject("too_large");
        warn!(%peer, declared_size = ?declared, limit = self.limits.load().max_body_bytes, "request rejected: body too large");
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large",
            Some(format!(
                "the limit is {} bytes",
                self.limits.load().max_body_bytes
            )),
        )
    }

    fn unavailable(&self, peer: Peer, envelope: &Envelope, e: &IngestError) -> Response {
        let reason = match e {
            IngestError::QueueFull => "queue_full",
            IngestError::Closed => "shutting_down",
            IngestError::Store(_) => "store_error",
        };
        self.metrics.reject(reason);
        warn!(%peer, event_id = %envelope.id, error = %e, "event not stored; answered 503");
        let mut r = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            Some(match e {
                IngestError::QueueFull => "the ingest queue is full".to_owned(),
                IngestError::Closed => "the daemon is shutting down".to_owned(),
                IngestError::Store(_) => "the store cannot take the event".to_owned(),
            }),
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.limits.load().retry_after.as_secs().max(1)),
        );
        r
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
