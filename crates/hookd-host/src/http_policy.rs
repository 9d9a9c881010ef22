//! Outgoing HTTP policy: the plugin's origin allow-list, a check of the resolved addresses,
//! timeouts, and a response size cap, applied to every `wasi:http` request.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hookd_config::Origin;
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use tracing::warn;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// What one plugin may reach.
#[derive(Clone)]
pub(crate) struct HttpPolicy {
    pub plugin: Arc<str>,
    pub allow: Arc<[Origin]>,
    /// Connect and first-byte timeout (the plugin may ask for less, never more).
    pub timeout: Duration,
    pub max_response_bytes: u64,
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
        let policy = self.clone();
        Box::new(async move {
            let uri = request.uri().clone();
            let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            let Some(origin) = policy.allow.iter().find(|o| o.allows(&scheme, &host, port)) else {
                warn!(plugin = %policy.plugin, %scheme, %host, port, "outgoing request refused: origin not allowed");
                return Err(Error::HttpRequestDenied);
            };

            // Resolve here, check every address, and (for plain HTTP) connect to the address
            // that was checked, so DNS cannot point an allowed name at an internal service.
            let addrs: Vec<_> = tokio::time::timeout(
                policy.timeout,
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            .map_err(|_| Error::DnsTimeout)?
            .map_err(|_| Error::DnsError {
                rcode: None,
                info_code: None,
            })?
            .collect();
            let Some(first) = addrs.first().copied() else {
                return Err(Error::DestinationNotFound);
            };
            let explicit = origin.names_host_literally();
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip()) && !explicit) {
                warn!(plugin = %policy.plugin, %host, address = %bad.ip(), "outgoing request refused: resolves to a non-public address");
                return Err(Error::DestinationIpProhibited);
            }
            if scheme == "http" {
                let path = uri.path_and_query().map_or("/", |p| p.as_str());
                let pinned = format!("http://{first}{path}");
                *request.uri_mut() = pinned.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
            }
            // (HTTPS keeps the name for certificate checks; the certificate binds it.)

            let cap = |asked: Option<Duration>| {
                Some(asked.map_or(policy.timeout, |d| d.min(policy.timeout)))
            };
            let options = RequestOptions {
                connect_timeout: cap(options.and_then(|o| o.connect_timeout)),
                first_byte_timeout: cap(options.and_then(|o| o.first_byte_timeout)),
                between_bytes_timeout: cap(options.and_then(|o| o.between_bytes_timeout)),
            };
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let limit = policy.max_response_bytes;
            let response = response.map(|body| {
                CappedBody {
                    inner: body.boxed_unsync(),
                    remaining: limit,
                    limit,
                }
                .boxed_unsync()
            });
            Ok((
                response,
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

/// Addresses a plugin may reach without naming them explicitly.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64/10 CGNAT
                || v4.octets()[0] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80) // link local
        }
    }
}

/// A response body that fails once it has produced more than `limit` bytes.
struct CappedBody {
    inner: WasiBody,
    remaining: u64,
    limit: u64,
}

impl Body for CappedBody {
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
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            self.limit,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
