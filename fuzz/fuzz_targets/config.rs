//! The main config parser and validator on arbitrary text: never panics, and every problem it
//! reports has a message. Texts naming secret files are skipped (validation reads them).
#![no_main]

use std::path::Path;

use hookd_config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if text.contains("file:") {
        return;
    }
    if let Err(errors) = Config::from_toml(text, Some(Path::new("/nonexistent/hookd.toml"))) {
        for e in errors.iter() {
            assert!(!e.to_string().is_empty());
        }
    }
});
