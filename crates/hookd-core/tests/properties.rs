//! Properties of verification and parsing that must hold for every input.

use hookd_core::{Envelope, Limits, Secret, Verifier, sign};
use proptest::prelude::*;

fn secret_strategy() -> impl Strategy<Value = Secret> {
    prop::collection::vec(any::<u8>(), 16..64).prop_map(|b| Secret::new(b).unwrap())
}

proptest! {
    #[test]
    fn sign_then_verify_round_trips(secret in secret_strategy(), body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let verifier = Verifier::new([&secret]).unwrap();
        let sig = sign(&secret, &body);
        prop_assert_eq!(verifier.verify(&body, Some(sig.as_bytes())), Ok(()));
    }

    #[test]
    fn any_bit_flip_in_the_body_is_rejected(
        secret in secret_strategy(),
        body in prop::collection::vec(any::<u8>(), 1..2048),
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let verifier = Verifier::new([&secret]).unwrap();
        let sig = sign(&secret, &body);
        let mut tampered = body.clone();
        tampered[index.index(body.len())] ^= 1 << bit;
        prop_assert!(verifier.verify(&tampered, Some(sig.as_bytes())).is_err());
    }

    #[test]
    fn any_bit_flip_in_the_signature_is_rejected(
        secret in secret_strategy(),
        body in prop::collection::vec(any::<u8>(), 0..512),
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let verifier = Verifier::new([&secret]).unwrap();
        let mut sig = sign(&secret, &body).into_bytes();
        let i = index.index(sig.len());
        sig[i] ^= 1 << bit;
        // A flip that only changes the case of a hex letter names the same digest.
        let same_digest = sig[i].eq_ignore_ascii_case(&sign(&secret, &body).as_bytes()[i]);
        prop_assume!(!same_digest);
        prop_assert!(verifier.verify(&body, Some(&sig)).is_err());
    }

    #[test]
    fn parsing_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::parse(&body, Limits::default());
    }

    #[test]
    fn parsing_never_panics_on_jsonish_input(body in r#"[{}\[\]":, a-z0-9\\]{0,300}"#) {
        let _ = Envelope::parse(body.as_bytes(), Limits { max_bytes: 1024, max_depth: 8 });
    }
}
