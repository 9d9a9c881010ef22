//! Signed requests and admin reads, through a blocking reqwest client.

use std::time::Duration;

use hookd_core::{SIGNATURE_HEADER, Secret};

use crate::daemon::Daemon;
use crate::env::SECRET;

/// [`SECRET`] as a `Secret`.
pub fn secret() -> Secret {
    Secret::new(SECRET).unwrap_or_else(|e| panic!("the test secret is valid: {e}"))
}

/// The `x-protocol-signature` value for `body` under [`SECRET`].
pub fn sign(body: &[u8]) -> String {
    hookd_core::sign(&secret(), body)
}

/// A small envelope of type `event_type` with id `id`.
pub fn event(id: &str, event_type: &str) -> Vec<u8> {
    format!(
        r#"{{"id":"{id}","type":"{event_type}","payload":{{"id":"p-{id}","message":"hello"}}}}"#
    )
    .into_bytes()
}

/// A blocking client with a 30 s timeout.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("cannot build an HTTP client: {e}"))
}

impl Daemon {
    /// POSTs a correctly signed body.
    #[track_caller]
    pub fn post(&self, body: &[u8]) -> reqwest::blocking::Response {
        self.post_with(body, Some(&sign(body)))
    }

    /// POSTs `body` with `signature` as the signature header (none if `None`).
    #[track_caller]
    pub fn post_with(&self, body: &[u8], signature: Option<&str>) -> reqwest::blocking::Response {
        let mut request = client().post(self.url()).body(body.to_vec());
        if let Some(sig) = signature {
            request = request.header(SIGNATURE_HEADER, sig);
        }
        request
            .send()
            .unwrap_or_else(|e| panic!("request not answered: {e}"))
    }

    /// The text of `/metrics`.
    #[track_caller]
    pub fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("/metrics not answered: {e}"))
    }

    /// The value of one metric sample, named as `/metrics` prints it (`name{labels}`), 0 when
    /// absent.
    #[track_caller]
    pub fn metric(&self, sample: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `GET /plugins`, parsed: as a user's script reads it, by key.
    #[track_caller]
    pub fn plugins(&self) -> Vec<serde_json::Value> {
        client()
            .get(self.admin_url("/plugins"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("/plugins not answered: {e}"))
    }
}
