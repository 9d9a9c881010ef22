//! A local HTTP server standing in for the Protocol API or a chat webhook: records every
//! request and answers with a status the test controls.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: String,
    pub body: String,
}

/// The fake server; it stops when dropped.
pub struct FakeApi {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// The requests answered with a 2xx: what a plugin got through.
    pub accepted: Arc<Mutex<Vec<Seen>>>,
    pub status: Arc<AtomicU16>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeApi {
    /// Starts it on `127.0.0.1:0`, answering 200 until told otherwise through `status`.
    pub fn start() -> FakeApi {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the fake API's runtime: {e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("cannot bind the fake API: {e}"));
        let base = match listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            Err(e) => panic!("the fake API has no address: {e}"),
        };
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (record, answer, ok) = (seen.clone(), status.clone(), accepted.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (record, answer, ok) = (record.clone(), answer.clone(), ok.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (record, answer, ok) = (record.clone(), answer.clone(), ok.clone());
                            async move {
                                let method = req.method().to_string();
                                let path = req.uri().path().to_owned();
                                let authorization = req
                                    .headers()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let seen = Seen {
                                    method,
                                    path,
                                    authorization,
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                };
                                let status =
                                    hyper::StatusCode::from_u16(answer.load(Ordering::SeqCst))
                                        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                                if status.is_success() {
                                    ok.lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .push(seen.clone());
                                }
                                record.lock().unwrap_or_else(|e| e.into_inner()).push(seen);
                                let mut response = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from_static(b"{}"),
                                ));
                                *response.status_mut() = status;
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApi {
            base,
            seen,
            accepted,
            status,
            _runtime: runtime,
        }
    }

    /// The requests answered with a 2xx so far.
    pub fn accepted(&self) -> Vec<Seen> {
        self.accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
