//! The plugin manifest (`NAME.toml`) parser on arbitrary text: never panics, and every problem
//! has a message.
#![no_main]

use std::path::Path;

use hookd_config::plugin::parse_sidecar;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let toml = Path::new("/nonexistent/plugins/fuzzed.toml");
    let wasm = Path::new("/nonexistent/plugins/fuzzed.wasm");
    match parse_sidecar(text, toml, wasm) {
        Ok(spec) => assert_eq!(spec.name, "fuzzed"),
        Err(errors) => {
            for e in errors.iter() {
                assert!(!e.to_string().is_empty());
            }
        }
    }
});
