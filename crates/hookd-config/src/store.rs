//! `[store]` and `[store.nats]`, checked: the SQLite store's settings, the backend, and the
//! JetStream cluster's servers, login (its secrets read) and limits.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::raw::{NatsSection, Problems, StoreSection, at_least_one_body, dir};
use crate::secrets::SecretSource;
use crate::{NatsCredentials, NatsStoreConfig, StoreBackend, StoreConfig};

/// `[store]`, checked; `max_body_bytes` is `[server]`'s (the queue must hold one body).
pub(crate) fn store_config(
    p: &mut Problems<'_>,
    st: &StoreSection,
    base: &Path,
    max_body_bytes: usize,
) -> StoreConfig {
    StoreConfig {
        dir: dir(p, "store.dir", &st.dir, base),
        dedup_window: Duration::from_secs(p.bounded(
            "store.dedup_window_secs",
            &st.dedup_window_secs,
            1,
            366 * 24 * 3600,
        ) as u64),
        queue_capacity: p.bounded("store.queue_capacity", &st.queue_capacity, 1, 1 << 20),
        max_batch: p.bounded("store.max_batch", &st.max_batch, 1, 1 << 16),
        queue_max_bytes: at_least_one_body(
            p,
            "store.queue_max_bytes",
            &st.queue_max_bytes,
            max_body_bytes,
        ),
        backend: store_backend(p, st, base),
    }
}

/// `[store] backend` and `[store.nats]`.
fn store_backend(p: &mut Problems<'_>, st: &StoreSection, base: &Path) -> StoreBackend {
    match (st.backend.get_ref().as_str(), &st.nats) {
        ("sqlite", None) => StoreBackend::Sqlite,
        ("sqlite", Some(nats)) => {
            p.at(
                "store.nats",
                nats,
                "is set but `store.backend` is \"sqlite\": add `backend = \"nats\"` to `[store]` to use it, or remove it",
            );
            StoreBackend::Sqlite
        }
        ("nats", nats) => {
            let default = NatsSection::default();
            let n = nats.as_ref().map_or(&default, |n| n.get_ref());
            StoreBackend::Nats(Box::new(nats_config(p, n, base)))
        }
        (other, _) => {
            p.at(
                "store.backend",
                &st.backend,
                format!("must be \"sqlite\" or \"nats\", got \"{other}\""),
            );
            StoreBackend::Sqlite
        }
    }
}

fn nats_config(p: &mut Problems<'_>, n: &NatsSection, base: &Path) -> NatsStoreConfig {
    let servers = n.servers.get_ref().clone();
    if servers.is_empty() {
        p.at(
            "store.nats.servers",
            &n.servers,
            "must name at least one server",
        );
    }
    for server in &servers {
        let rest = server
            .split_once("://")
            .map_or(server.as_str(), |(scheme, rest)| {
                if !matches!(scheme, "nats" | "tls") {
                    p.at(
                        "store.nats.servers",
                        &n.servers,
                        format!("`{server}`: the scheme must be nats:// or tls://"),
                    );
                }
                rest
            });
        let port = rest
            .rsplit_once(':')
            .map(|(_, port)| port.trim_end_matches('/'));
        if rest.is_empty() || port.is_some_and(|port| port.parse::<u16>().is_err()) {
            p.at(
                "store.nats.servers",
                &n.servers,
                format!("`{server}` is not a server address (nats://host:4222)"),
            );
        }
    }
    let mut secret = |key: &str, value: &Spanned<String>| -> String {
        match SecretSource::parse(value.get_ref()).read_text(base) {
            Ok(text) => text,
            Err(message) => {
                p.at(key, value, message);
                String::new()
            }
        }
    };
    let auth = match (&n.credentials, &n.user, &n.password, &n.token) {
        (None, None, None, None) => NatsCredentials::None,
        (Some(creds), None, None, None) => {
            NatsCredentials::Creds(secret("store.nats.credentials", creds))
        }
        (None, Some(user), Some(password), None) => NatsCredentials::UserPassword {
            user: user.get_ref().clone(),
            password: secret("store.nats.password", password),
        },
        (None, None, None, Some(token)) => {
            NatsCredentials::Token(secret("store.nats.token", token))
        }
        _ => {
            p.at(
                "store.nats",
                &n.servers,
                "give one way to log in: `credentials`, or `user` with `password`, or `token`",
            );
            NatsCredentials::None
        }
    };
    let prefix = n.prefix.get_ref().clone();
    let valid_prefix = !prefix.is_empty()
        && prefix.len() <= 32
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid_prefix {
        p.at(
            "store.nats.prefix",
            &n.prefix,
            "must be 1 to 32 lowercase letters, digits, `_` or `-`",
        );
    }
    let secs = |v: usize| Duration::from_secs(v as u64);
    let max_event_age = secs(p.bounded(
        "store.nats.max_event_age_secs",
        &n.max_event_age_secs,
        60,
        366 * 24 * 3600,
    ));
    let duplicate_window = secs(p.bounded(
        "store.nats.duplicate_window_secs",
        &n.duplicate_window_secs,
        1,
        24 * 3600,
    ));
    if duplicate_window > max_event_age {
        p.at(
            "store.nats.duplicate_window_secs",
            &n.duplicate_window_secs,
            "must not be longer than `max_event_age_secs`",
        );
    }
    NatsStoreConfig {
        servers,
        auth,
        prefix,
        replicas: p.bounded("store.nats.replicas", &n.replicas, 1, 5),
        connect_timeout: Duration::from_millis(p.bounded(
            "store.nats.connect_timeout_ms",
            &n.connect_timeout_ms,
            100,
            120_000,
        ) as u64),
        request_timeout: Duration::from_millis(p.bounded(
            "store.nats.request_timeout_ms",
            &n.request_timeout_ms,
            100,
            120_000,
        ) as u64),
        ack_wait: secs(p.bounded("store.nats.ack_wait_secs", &n.ack_wait_secs, 1, 3600)),
        duplicate_window,
        max_event_age,
        max_stream_bytes: *n.max_stream_bytes.get_ref(),
        dead_letter_age: secs(p.bounded(
            "store.nats.dead_letter_age_secs",
            &n.dead_letter_age_secs,
            60,
            10 * 366 * 24 * 3600,
        )),
        prefetch: p.bounded("store.nats.prefetch", &n.prefetch, 1, 100_000),
    }
}
