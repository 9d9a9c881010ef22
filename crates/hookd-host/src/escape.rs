//! Strings a plugin hands back (retry and give-up reasons, log lines), made safe to store and
//! print: cut to a length, with control characters written as escapes.

/// Longest `retry` / `give-up` reason kept; the rest is cut.
pub const MAX_REASON_BYTES: usize = 2 * 1024;

/// A string a plugin chose (a retry or give-up reason), made safe to store and print: cut to
/// [`MAX_REASON_BYTES`] and with control characters (terminal escape sequences among them)
/// written as escapes.
pub(crate) fn plugin_text(text: &str) -> String {
    escape_controls(text, MAX_REASON_BYTES)
}

/// `text` with control characters written as escapes (`\u{1b}`), cut after about
/// `max_bytes`: safe to print on a terminal whatever a plugin put in it.
pub fn escape_controls(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes));
    for c in text.chars() {
        if out.len() >= max_bytes {
            out.push_str(" [cut]");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_text_is_cut() {
        for (text, max_bytes, expected) in [
            ("plain", 100, "plain"),
            ("\u{1b}[31mred", 100, "\\u{1b}[31mred"),
            ("line\nnext\r", 100, "line\\nnext\\r"),
            ("abcdef", 3, "abc [cut]"),
            ("", 0, ""),
        ] {
            assert_eq!(escape_controls(text, max_bytes), expected, "{text:?}");
        }
        assert!(plugin_text(&"x".repeat(10_000)).len() <= MAX_REASON_BYTES + " [cut]".len());
    }
}
