//! Behaviour the fuzzers (fuzz/) ran into, pinned. Each input is the one the fuzzer found; each
//! time the behaviour was right and the fuzz target's expectation was too narrow.

use hookd_core::{Envelope, Limits, Secret, Verifier, sign};

/// fuzz/artifacts/signature/crash-924e…: a `shA256=` prefix verified. The prefix is matched
/// in any case, like the hex digits after it.
#[test]
fn a_sha256_prefix_in_mixed_case_verifies() {
    let secret = Secret::new("hookd-fuzz-secret-0123456789").unwrap();
    let verifier = Verifier::new([&secret]).unwrap();
    let body = br#"{"id":"a","type":"message.created","payload":{}}"#;
    let signature = sign(&secret, body);
    for prefix in ["sha256=", "SHA256=", "shA256=", "Sha256="] {
        let header = format!("{prefix}{}", signature.to_uppercase());
        assert!(
            verifier.verify(body, Some(header.as_bytes())).is_ok(),
            "{prefix}"
        );
    }
    let wrong = format!("sha256={}", "0".repeat(64));
    assert!(verifier.verify(body, Some(wrong.as_bytes())).is_err());
}

/// fuzz/artifacts/envelope/crash-171c…: a payload number far beyond the range of an f64
/// (`692233200008e8888…`) is valid JSON; the envelope keeps the payload verbatim and does not
/// round it, so a plugin sees exactly what Protocol signed.
#[test]
fn a_payload_number_beyond_f64_range_is_kept_verbatim() {
    let number = format!("692233200008e{}", "8".repeat(80));
    let body =
        format!(r#"{{"id":"n1","type":"message.updated","payload":{{"updated_at":{number}}}}}"#);
    let envelope = Envelope::parse(body.as_bytes(), Limits::default()).unwrap();
    assert_eq!(
        envelope.payload_json(),
        format!(r#"{{"updated_at":{number}}}"#)
    );
    // A typed reading reports it instead of inventing a value.
    assert!(envelope.payload().is_err());
}
