//! The seed's example `message.updated` event, signed with the documented example secret.
//!
//! The expected signature was computed outside Rust, by two independent implementations:
//!
//! ```text
//! $ python3 -c "import hmac,hashlib; print(hmac.new(b'hookd-example-secret-do-not-use-in-production',
//!       open('examples/events/message.updated.json','rb').read(), hashlib.sha256).hexdigest())"
//! $ openssl dgst -sha256 -hmac 'hookd-example-secret-do-not-use-in-production' \
//!       examples/events/message.updated.json
//! ```
//! Both printed the value below.

use hookd_core::{Envelope, EventType, Limits, Payload, Secret, Verifier, sign};

const SECRET: &str = "hookd-example-secret-do-not-use-in-production";
const BODY: &[u8] = include_bytes!("../../../examples/events/message.updated.json");
const SIGNATURE_BY_PYTHON_AND_OPENSSL: &str =
    "bbecd4120561c99bd3d0e5078af49908d1fd6762b4bde20944f0644d282b01da";

#[test]
fn seed_event_signature_matches_independent_implementations() {
    let secret = Secret::new(SECRET).unwrap();
    assert_eq!(sign(&secret, BODY), SIGNATURE_BY_PYTHON_AND_OPENSSL);
    let verifier = Verifier::new([&secret]).unwrap();
    assert_eq!(
        verifier.verify(BODY, Some(SIGNATURE_BY_PYTHON_AND_OPENSSL.as_bytes())),
        Ok(())
    );
}

#[test]
fn seed_event_parses_as_documented() {
    let env = Envelope::parse(BODY, Limits::default()).unwrap();
    assert_eq!(env.id, "a056V7R7NmNRjl70");
    assert_eq!(env.event_type, EventType::parse("message.updated"));
    let Payload::Message(message) = env.payload().unwrap() else {
        panic!("a message.updated payload is a message");
    };
    assert_eq!(message.id.as_deref(), Some("SIuAFUNKdSYHZF2w"));
    assert_eq!(
        message.contact.as_ref().and_then(|c| c.username.as_deref()),
        Some("KevinMcCallister")
    );
    assert_eq!(message.read_at, Some(705103200));
    assert!(message.message.unwrap().starts_with("I’m traveling"));
}
