//! The `x-protocol-signature` header parser and verifier: never panics; whatever verifies is
//! the body's real signature (hex in either case, optionally prefixed `sha256=` in any case).
#![no_main]

use hookd_core::{Secret, Verifier, sign};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new("hookd-fuzz-secret-0123456789").unwrap();
    let verifier = Verifier::new([&secret]).unwrap();
    // First byte: the header's length; then the header; the rest is the body.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (header, body) = rest.split_at(n);
    let expected = sign(&secret, body);
    if verifier.verify(body, Some(header)).is_ok() {
        let text = std::str::from_utf8(header).expect("a verified header is text");
        let text = text.trim();
        // The `sha256=` prefix is optional and matched in any case.
        let hex = match text.get(..7) {
            Some(head) if head.eq_ignore_ascii_case("sha256=") => &text[7..],
            _ => text,
        };
        assert_eq!(
            hex.to_ascii_lowercase(),
            expected,
            "verified a wrong signature"
        );
    }
    assert!(verifier.verify(body, Some(expected.as_bytes())).is_ok());
    assert!(
        verifier
            .verify(
                body,
                Some(format!("sha256={}", expected.to_uppercase()).as_bytes())
            )
            .is_ok()
    );
    assert!(verifier.verify(body, None).is_err());
});
