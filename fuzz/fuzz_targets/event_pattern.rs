//! Subscription patterns and event types: never panic; a pattern that parses matches exactly
//! the types its segments say (`*` is one whole segment; a lone `*` matches everything).
#![no_main]

use hookd_core::{EventPattern, EventType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (pattern, event_type) = input;
    let parsed_type = EventType::parse(event_type);
    assert_eq!(parsed_type.as_str(), event_type, "a type keeps its text");
    if let Ok(p) = EventPattern::parse(pattern) {
        let segments: Vec<&str> = p.as_str().split('.').collect();
        let subject: Vec<&str> = event_type.split('.').collect();
        let expected = p.as_str() == "*"
            || (segments.len() == subject.len()
                && segments
                    .iter()
                    .zip(&subject)
                    .all(|(p, s)| *p == "*" || p == s));
        assert_eq!(
            p.matches(&parsed_type),
            expected,
            "{} vs {event_type}",
            p.as_str()
        );
    }
});
