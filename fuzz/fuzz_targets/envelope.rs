//! The envelope parser on arbitrary bytes: never panics; what it accepts under small limits it
//! accepts under the defaults, with the same id and type, and the payload it keeps is JSON.
#![no_main]

use hookd_core::{Envelope, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let small = Limits {
        max_bytes: 512,
        max_depth: 4,
    };
    let loose = Envelope::parse(data, Limits::default());
    if let Ok(envelope) = Envelope::parse(data, small) {
        let loose = loose
            .as_ref()
            .expect("accepted under small limits, refused under the defaults");
        assert_eq!(envelope.id, loose.id);
        assert_eq!(envelope.event_type.as_str(), loose.event_type.as_str());
    }
    if let Ok(envelope) = &loose {
        assert!(!envelope.id.is_empty());
        // JSON by the grammar: numbers are kept verbatim, whatever their range.
        serde_json::from_str::<Box<serde_json::value::RawValue>>(envelope.payload_json())
            .expect("the kept payload is JSON");
    }
});
