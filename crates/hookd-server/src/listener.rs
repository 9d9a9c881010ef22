//! The accept loop: hyper HTTP/1 with a timer, header and connection limits (overall and per
//! client), graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service as _;
use tracing::{debug, info, warn};
use warp::{Filter, Reply};

use crate::IngestMetrics;

/// The client's address, put into every request's extensions for the routes to read.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// What one client (see [`client_key`]) holds at once, shared by its connections. Put into
/// every request's extensions, so the ingest route can count the client's body bytes without
/// a lookup.
#[derive(Debug, Default)]
pub struct ClientShare {
    /// Its open connections; changed only under the [`Clients`] lock.
    connections: AtomicUsize,
    /// Bytes of its request bodies being read now (the ingest route's per-client budget).
    pub body_bytes: AtomicUsize,
}

/// The request's [`ClientShare`], as a request extension.
#[derive(Debug, Clone)]
pub struct Client(pub Arc<ClientShare>);

/// Limits that apply to every connection of a listener.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// A client must send a request's whole header within this time (also bounds idle
    /// keep-alive connections).
    pub header_read_timeout: Duration,
    /// Connections beyond this wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one client may hold; beyond it a new connection of that client is reset
    /// at once, so that one address cannot take every slot.
    pub max_connections_per_client: usize,
    /// How long shutdown waits for in-flight requests before dropping them.
    pub shutdown_grace: Duration,
    /// Where refused connections are counted and logged (in aggregate).
    pub metrics: Option<IngestMetrics>,
}

/// hyper's read buffer per connection may grow to this (its default is about 400 KB): with
/// `max_connections` of them, it is part of what the edge may hold. Also caps a request's
/// header block.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// Serves `routes` on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (up to the grace period), and returns.
pub async fn serve<F>(
    listener: TcpListener,
    routes: F,
    settings: ListenerSettings,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    let service = warp::service(routes);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_headers(64)
        .max_buf_size(MAX_READ_BUFFER)
        .keep_alive(true);
    let http = Arc::new(http);
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let clients = Arc::new(Clients {
        map: Mutex::default(),
        max_per_client: settings.max_connections_per_client.max(1),
    });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = clients.admit(peer.ip()) else {
            // A reset rather than a FIN: no TIME_WAIT left on our side, and the client learns
            // at once. The slot goes back before the next accept.
            let _ = stream.set_zero_linger();
            drop(stream);
            drop(permit);
            if let Some(metrics) = &settings.metrics {
                metrics.refuse_connection(peer);
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = service.clone();
        let client = Client(slot.share.clone());
        let handler = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            req.extensions_mut().insert(client.clone());
            // warp's service is always ready; `call` is all it takes.
            svc.clone().call(req)
        });
        let conn = http.serve_connection(TokioIo::new(stream), handler);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            // After the connection (and every request future it held) is gone.
            drop(slot);
            drop(permit);
        });
    }

    drop(listener);
    let open = graceful.count();
    if open > 0 {
        info!(connections = open, "waiting for in-flight requests");
    }
    if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("shutdown grace period over; dropping the remaining connections");
    }
}

/// Who counts as one client: an IPv4 address, or an IPv6 /64 (what one host or site is
/// usually given, so a client cannot multiply itself by changing its low bits). An
/// IPv4-mapped IPv6 address (a dual-stack listener) is its IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The clients with an open connection, and how many each holds.
struct Clients {
    map: Mutex<HashMap<IpAddr, Arc<ClientShare>>>,
    max_per_client: usize,
}

/// One admitted connection of a client; dropping it gives the client's slot back.
struct ClientSlot {
    clients: Arc<Clients>,
    key: IpAddr,
    share: Arc<ClientShare>,
}

impl Clients {
    /// A slot for a new connection from `ip`, unless its client already holds its share.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let key = client_key(ip);
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let share = map.entry(key).or_default();
        let held = share.connections.load(Ordering::Relaxed);
        if held >= self.max_per_client {
            return None;
        }
        share.connections.store(held + 1, Ordering::Relaxed);
        Some(ClientSlot {
            clients: self.clone(),
            key,
            share: share.clone(),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self
            .clients
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let left = self.share.connections.load(Ordering::Relaxed) - 1;
        self.share.connections.store(left, Ordering::Relaxed);
        // Forget a client with no connection left: the map holds only who is connected now.
        if left == 0 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_ipv4_addresses_and_ipv6_prefixes() {
        let cases = [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff::1", "2001:db8:1:2::"),
            ("2001:db8:1:3::1", "2001:db8:1:3::"),
        ];
        for (ip, key) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(client_key(ip).to_string(), key, "{ip}");
        }
    }

    #[test]
    fn a_client_holds_at_most_its_share_and_gets_slots_back() {
        let clients = Arc::new(Clients {
            map: Mutex::default(),
            max_per_client: 2,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = clients.admit(a).unwrap();
        let _second = clients.admit(a).unwrap();
        assert!(
            clients.admit(a).is_none(),
            "a third slot for the same client"
        );
        assert!(clients.admit(b).is_some(), "another client is not affected");
        drop(first);
        assert!(
            clients.admit(a).is_some(),
            "a slot given back can be taken again"
        );
    }

    #[test]
    fn a_client_with_no_connection_left_is_forgotten() {
        let clients = Arc::new(Clients {
            map: Mutex::default(),
            max_per_client: 4,
        });
        let slots: Vec<_> = (1..=50u8)
            .map(|i| clients.admit(IpAddr::from([198, 51, 100, i])).unwrap())
            .collect();
        assert_eq!(clients.map.lock().unwrap().len(), 50);
        drop(slots);
        assert!(clients.map.lock().unwrap().is_empty());
    }
}
