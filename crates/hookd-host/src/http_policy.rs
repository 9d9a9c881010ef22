//! Outgoing HTTP policy: the plugin's origin allow-list, the classes of addresses a name may
//! resolve to, the per-delivery caps on requests, timeouts, and the request and response size
//! caps, applied to every `wasi:http` request. Connections themselves (resolve, check, connect,
//! keep alive) are [`crate::outgoing`]'s.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let written = uri.host().unwrap_or_default().to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = written.trim_matches(['[', ']']).to_owned();
        let Some(origin) = allowing(&self.allow, &scheme, &written, port) else {
            warn!(plugin = %self.plugin, %scheme, %host, port, "outgoing request refused: origin not allowed");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_REQUEST_BODY_BYTES) {
            warn!(plugin = %self.plugin, %host, bytes = declared, limit = MAX_REQUEST_BODY_BYTES,
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

        let target = Target {
            tls: scheme == "https",
            host,
            port,
            // Only an IP literal or `localhost` written in the origin, or the manifest's
            // explicit opt-in, lets a request reach a non-public address.
            allow_non_public: origin.names_host_literally() || self.allow_private_addresses,
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

/// What kind of address an IP is, for the check of the addresses a name resolves to. Only
/// [`AddressClass::Public`] is reachable through a name without the manifest's opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressClass {
    Public,
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `0.0.0.0/8` ("this network").
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT.
    SharedCgnat,
    /// `169.254/16` (cloud metadata endpoints live here), `fe80::/10`.
    LinkLocal,
    /// `fc00::/7`.
    UniqueLocal,
    /// `fec0::/10`, deprecated but still routed inside some networks.
    SiteLocal,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18/15`, `2001:2::/48`.
    Benchmark,
    /// `240/4`, `192.0.0/24`, `192.88.99/24`, `100::/64`, the rest of `2001::/23`,
    /// `5f00::/16`, and IPv6 outside `2000::/3`.
    Reserved,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `::ffff:0:0/96`.
    Ipv4Mapped,
    /// `::/96`, deprecated IPv4-compatible addresses.
    Ipv4Compatible,
    /// `64:ff9b::/96` and `64:ff9b:1::/48`: a NAT64 gateway forwards them to an IPv4 address.
    Nat64,
    /// `2002::/16`.
    SixToFour,
    /// `2001::/32`.
    Teredo,
}

impl AddressClass {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Unspecified => "unspecified",
            AddressClass::ThisNetwork => "this-network",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::SharedCgnat => "shared (CGNAT)",
            AddressClass::LinkLocal => "link-local",
            AddressClass::UniqueLocal => "unique local",
            AddressClass::SiteLocal => "site-local",
            AddressClass::Documentation => "documentation",
            AddressClass::Benchmark => "benchmarking",
            AddressClass::Reserved => "reserved",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Ipv4Mapped => "IPv4-mapped",
            AddressClass::Ipv4Compatible => "IPv4-compatible",
            AddressClass::Nat64 => "NAT64",
            AddressClass::SixToFour => "6to4",
            AddressClass::Teredo => "Teredo",
        }
    }
}

/// The class of `ip`. Addresses that carry an IPv4 address (mapped, compatible, NAT64, 6to4,
/// Teredo) are classed by their form, never as public: what they reach depends on gateways
/// outside hookd's view. [`embedded_ipv4`] says what they carry.
pub(crate) fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        (0, _, _) => AddressClass::ThisNetwork,
        (127, _, _) => AddressClass::Loopback,
        (10, _, _) | (192, 168, _) => AddressClass::Private,
        (172, b, _) if b & 0xf0 == 16 => AddressClass::Private,
        (100, b, _) if b & 0xc0 == 64 => AddressClass::SharedCgnat,
        (169, 254, _) => AddressClass::LinkLocal,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Documentation,
        (198, 18 | 19, _) => AddressClass::Benchmark,
        (192, 0, 0) | (192, 88, 99) => AddressClass::Reserved,
        (a, _, _) if a & 0xf0 == 224 => AddressClass::Multicast,
        (a, _, _) if a & 0xf0 == 240 => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => AddressClass::Ipv4Mapped,
        [0, 0, 0, 0, 0, 0, _, _] => AddressClass::Ipv4Compatible,
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 1, ..] => AddressClass::Nat64,
        [0x100, 0, 0, 0, ..] => AddressClass::Reserved,
        [0x2001, 0, ..] => AddressClass::Teredo,
        [0x2001, 2, 0, ..] => AddressClass::Benchmark,
        [0x2001, 0xdb8, ..] => AddressClass::Documentation,
        [0x2001, b, ..] if b < 0x200 => AddressClass::Reserved,
        [0x2002, ..] => AddressClass::SixToFour,
        [0x3fff, b, ..] if b & 0xf000 == 0 => AddressClass::Documentation,
        [0x5f00, ..] => AddressClass::Reserved,
        [a, ..] if a & 0xfe00 == 0xfc00 => AddressClass::UniqueLocal,
        [a, ..] if a & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        [a, ..] if a & 0xffc0 == 0xfec0 => AddressClass::SiteLocal,
        [a, ..] if a & 0xff00 == 0xff00 => AddressClass::Multicast,
        // Only 2000::/3 is allocated for global unicast.
        [a, ..] if a & 0xe000 != 0x2000 => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped and -compatible (last 32 bits),
/// NAT64 (RFC 6052: last 32 bits of the /96, around the `u` octet of the /48), 6to4 (bits
/// 16-47), Teredo (the client's, bits 96-127 inverted).
pub(crate) fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match classify_v6(ip) {
        AddressClass::Ipv4Mapped | AddressClass::Ipv4Compatible => Some(last),
        AddressClass::Nat64 if o[4] == 0 && o[5] == 1 => {
            Some(Ipv4Addr::new(o[6], o[7], o[9], o[10]))
        }
        AddressClass::Nat64 => Some(last),
        AddressClass::SixToFour => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        AddressClass::Teredo => Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15])),
        _ => None,
    }
}

/// `ip`'s class for a log line, with the class of the IPv4 address it carries, if any:
/// `NAT64, carrying 127.0.0.1 (loopback)`.
pub(crate) fn describe(ip: IpAddr) -> String {
    let class = classify(ip);
    match ip {
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => format!(
                "{}, carrying {v4} ({})",
                class.as_str(),
                classify_v4(v4).as_str()
            ),
            None => class.as_str().to_owned(),
        },
        IpAddr::V4(_) => class.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

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

    #[test]
    fn address_classes() {
        // (address, its class, the class of the IPv4 address it carries)
        let table: &[(&str, AddressClass, Option<AddressClass>)] = &[
            ("93.184.216.34", Public, None),
            ("1.1.1.1", Public, None),
            ("8.8.8.8", Public, None),
            ("0.0.0.0", Unspecified, None),
            ("0.1.2.3", ThisNetwork, None),
            ("127.0.0.1", Loopback, None),
            ("127.0.1.1", Loopback, None),
            ("10.1.2.3", Private, None),
            ("172.16.5.4", Private, None),
            ("172.31.255.255", Private, None),
            ("172.32.0.1", Public, None),
            ("192.168.0.1", Private, None),
            ("100.64.0.1", SharedCgnat, None),
            ("100.127.255.255", SharedCgnat, None),
            ("100.128.0.1", Public, None),
            ("169.254.169.254", LinkLocal, None),
            ("192.0.0.8", Reserved, None),
            ("192.0.2.1", Documentation, None),
            ("198.51.100.7", Documentation, None),
            ("203.0.113.9", Documentation, None),
            ("192.88.99.1", Reserved, None),
            ("198.18.0.1", Benchmark, None),
            ("198.19.255.255", Benchmark, None),
            ("198.20.0.1", Public, None),
            ("224.0.0.1", Multicast, None),
            ("239.255.255.250", Multicast, None),
            ("240.0.0.1", Reserved, None),
            ("255.255.255.255", Broadcast, None),
            ("2606:4700::1111", Public, None),
            ("2a00:1450:4001:80e::200e", Public, None),
            ("::", Unspecified, None),
            ("::1", Loopback, None),
            ("::ffff:127.0.0.1", Ipv4Mapped, Some(Loopback)),
            ("::ffff:93.184.216.34", Ipv4Mapped, Some(Public)),
            ("::10.0.0.1", Ipv4Compatible, Some(Private)),
            ("64:ff9b::7f00:1", Nat64, Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Nat64, Some(LinkLocal)),
            ("64:ff9b::5db8:d822", Nat64, Some(Public)),
            // 64:ff9b:1::/48 with 10.0.0.1 around the `u` octet (RFC 6052 section 2.2).
            ("64:ff9b:1:a00:0:100::", Nat64, Some(Private)),
            ("100::1", Reserved, None),
            // Teredo: the client's address is stored inverted.
            (
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                Teredo,
                Some(Loopback),
            ),
            ("2001:2::1", Benchmark, None),
            ("2001:10::1", Reserved, None),
            ("2001:db8::1", Documentation, None),
            ("2002:7f00:1::1", SixToFour, Some(Loopback)),
            ("2002:a9fe:a9fe::1", SixToFour, Some(LinkLocal)),
            ("3fff::1", Documentation, None),
            ("3fff:1000::1", Public, None),
            ("5f00::1", Reserved, None),
            ("fc00::1", UniqueLocal, None),
            ("fd12:3456::1", UniqueLocal, None),
            ("fe80::1", LinkLocal, None),
            ("fec0::1", SiteLocal, None),
            ("ff02::1", Multicast, None),
            ("4000::1", Reserved, None),
            ("1234::1", Reserved, None),
        ];
        for &(text, class, carried) in table {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(classify(ip), class, "{text}");
            let embedded = match ip {
                IpAddr::V6(v6) => embedded_ipv4(v6).map(classify_v4),
                IpAddr::V4(_) => None,
            };
            assert_eq!(embedded, carried, "{text}: the IPv4 address it carries");
        }
        assert_eq!(
            describe("64:ff9b::7f00:1".parse().unwrap()),
            "NAT64, carrying 127.0.0.1 (loopback)"
        );
        assert_eq!(describe("10.0.0.1".parse().unwrap()), "private");
    }
}
