//! HMAC-SHA256 webhook signatures: the `x-protocol-signature` header.
//!
//! The sender computes `hex(HMAC-SHA256(secret, raw_body))`. We accept the hex in either case,
//! with an optional `sha256=` prefix, and compare in constant time against every configured
//! secret (several secrets exist at once while one is being rotated).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The request header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-protocol-signature";

/// Shortest secret we accept. HMAC takes any key, but a short one is a guessable one.
const MIN_SECRET_BYTES: usize = 16;

/// Length of a SHA-256 digest in bytes.
const DIGEST_BYTES: usize = 32;

/// A webhook signing secret. Its `Debug` form never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

/// Why a secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the secret is empty")]
    Empty,
    #[error("the secret is {len} bytes long; at least {min} are required")]
    TooShort { len: usize, min: usize },
}

impl Secret {
    /// Accepts a secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = bytes.into();
        match bytes.len() {
            0 => Err(SecretError::Empty),
            len if len < MIN_SECRET_BYTES => Err(SecretError::TooShort {
                len,
                min: MIN_SECRET_BYTES,
            }),
            _ => Ok(Self(bytes)),
        }
    }

    /// The raw secret bytes, for signing.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// Why a request's signature was refused. The server maps every variant to the same generic
/// 401 so a client learns nothing about which check failed; the variant is for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is not 64 hex digits")]
    Malformed,
    #[error("the signature does not match any configured secret")]
    Mismatch,
}

impl SignatureError {
    /// A stable, low-cardinality label for metrics (`reason="bad_signature"`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing_signature",
            Self::Malformed | Self::Mismatch => "bad_signature",
        }
    }
}

/// Verifies signatures against one or more secrets.
///
/// Each secret's HMAC key schedule is computed once here and cloned per request.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<HmacSha256>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.keys.len())
            .finish()
    }
}

/// A verifier needs at least one secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no webhook secret is configured")]
pub struct NoSecrets;

impl Verifier {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Result<Self, NoSecrets> {
        let keys: Vec<_> = secrets.into_iter().map(|s| keyed(s.expose())).collect();
        if keys.is_empty() {
            return Err(NoSecrets);
        }
        Ok(Self { keys })
    }

    /// Checks `header` (the raw `x-protocol-signature` value, if any) against `body`.
    ///
    /// Every configured secret is tried, even after a match, so timing does not reveal which
    /// secret (old or new) signed the request.
    pub fn verify(&self, body: &[u8], header: Option<&[u8]>) -> Result<(), SignatureError> {
        let expected = parse_header(header.ok_or(SignatureError::Missing)?)?;
        let mut matched = false;
        for key in &self.keys {
            let mut mac = key.clone();
            mac.update(body);
            matched |= mac.verify_slice(&expected).is_ok();
        }
        if matched {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// Computes the lowercase hex signature of `body`, as Protocol sends it.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let mut mac = keyed(secret.expose());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn keyed(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// Decodes `[sha256=]<64 hex digits>` (either case) into digest bytes.
fn parse_header(value: &[u8]) -> Result<[u8; DIGEST_BYTES], SignatureError> {
    const PREFIX: &[u8] = b"sha256=";
    let hex_part = match value.get(..PREFIX.len()) {
        Some(head) if head.eq_ignore_ascii_case(PREFIX) => &value[PREFIX.len()..],
        _ => value,
    };
    let mut digest = [0u8; DIGEST_BYTES];
    hex::decode_to_slice(hex_part, &mut digest).map_err(|_| SignatureError::Malformed)?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn short_and_empty_secrets_are_refused() {
        assert_eq!(Secret::new(Vec::new()), Err(SecretError::Empty));
        assert_eq!(
            Secret::new(b"short".to_vec()),
            Err(SecretError::TooShort { len: 5, min: 16 })
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = secret("super-secret-value-123");
        assert!(!format!("{s:?}").contains("super"));
    }

    #[test]
    fn header_forms_are_accepted() {
        let s = secret("0123456789abcdef");
        let v = Verifier::new([&s]).unwrap();
        let sig = sign(&s, b"body");
        for form in [
            sig.clone(),
            sig.to_uppercase(),
            format!("sha256={sig}"),
            format!("SHA256={}", sig.to_uppercase()),
        ] {
            assert_eq!(v.verify(b"body", Some(form.as_bytes())), Ok(()), "{form}");
        }
    }

    #[test]
    fn bad_headers_are_classified() {
        let s = secret("0123456789abcdef");
        let v = Verifier::new([&s]).unwrap();
        assert_eq!(v.verify(b"body", None), Err(SignatureError::Missing));
        assert_eq!(v.verify(b"body", Some(b"")), Err(SignatureError::Malformed));
        assert_eq!(
            v.verify(b"body", Some(b"zz")),
            Err(SignatureError::Malformed)
        );
        let short = &sign(&s, b"body")[..62];
        assert_eq!(
            v.verify(b"body", Some(short.as_bytes())),
            Err(SignatureError::Malformed)
        );
        let other = sign(&s, b"other body");
        assert_eq!(
            v.verify(b"body", Some(other.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_configured_secret_verifies() {
        let old = secret("old-secret-0123456789");
        let new = secret("new-secret-0123456789");
        let stranger = secret("not-configured-012345");
        let v = Verifier::new([&old, &new]).unwrap();
        assert!(v.verify(b"x", Some(sign(&old, b"x").as_bytes())).is_ok());
        assert!(v.verify(b"x", Some(sign(&new, b"x").as_bytes())).is_ok());
        assert!(
            v.verify(b"x", Some(sign(&stranger, b"x").as_bytes()))
                .is_err()
        );
    }

    #[test]
    fn a_verifier_needs_a_secret() {
        assert_eq!(Verifier::new([]).unwrap_err(), NoSecrets);
    }
}
