//! TOML parse errors as located [`ConfigError`]s that never echo a secret.
//!
//! serde's type errors quote the value they refused (`invalid type: string "…", expected a
//! sequence`), so `secrets = "s3cr3t"` written as a string instead of a list would print the
//! secret into a terminal, CI log or the journal. Where an error lies on a key that may hold a
//! secret (`[verify]`, a plugin's `[config]`), the quoted value is cut from the message; the
//! position and what was expected stay. The source line itself is never shown (only
//! [`toml::de::Error::message`] is used, not its `Display`, which quotes the line).

use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::{ConfigError, Location};

/// Whether a dotted key path (array indices left out) may hold a secret.
pub(crate) type SecretKeys = fn(&[&str]) -> bool;

/// In the main config: every `[verify]` key and every `[[plugin]]`'s `config`.
pub(crate) fn main_config_secrets(path: &[&str]) -> bool {
    matches!(
        path,
        ["verify", ..] | ["plugin", "config", ..] | ["store", "nats", ..]
    )
}

/// In a plugin manifest: its `config` (API tokens, webhook URLs with credentials).
pub(crate) fn manifest_secrets(path: &[&str]) -> bool {
    matches!(path, ["config", ..])
}

/// The text standing in for a value that is not shown.
const HIDDEN: &str = "(value not shown: this key may hold a secret)";

/// `e`, located in `text` (read from `path`), with the value cut from its message when it lies
/// on a key `secret` names, or when its position is unknown.
pub(crate) fn parse_error(
    e: &toml::de::Error,
    text: &str,
    path: Option<&Path>,
    secret: SecretKeys,
) -> ConfigError {
    let (location, on_secret) = match e.span() {
        Some(span) => (
            Location::span(path, text, span.clone()),
            key_at(text, span.start).is_none_or(|key| {
                let key: Vec<&str> = key.iter().map(String::as_str).collect();
                secret(&key)
            }),
        ),
        // Nowhere to tell the key from: assume the worst.
        None => (
            Location {
                file: path.map(Path::to_owned),
                line_col: None,
            },
            true,
        ),
    };
    let message = e.message().trim();
    let message = if on_secret {
        redact(message)
    } else {
        message.to_owned()
    };
    ConfigError::new(location, "", message)
}

/// The dotted key (indices left out) whose key or value holds byte `pos` of `text`, the
/// deepest one; `Some(vec![])` when `pos` is outside every key, `None` when `text` could not
/// be read far enough to tell.
fn key_at(text: &str, pos: usize) -> Option<Vec<String>> {
    let (root, _) = DeTable::parse_recoverable(text);
    let mut best: Option<Vec<String>> = None;
    let mut path = Vec::new();
    walk_table(root.get_ref(), pos, &mut path, &mut best);
    Some(best.unwrap_or_default())
}

fn walk_table(
    table: &DeTable<'_>,
    pos: usize,
    path: &mut Vec<String>,
    best: &mut Option<Vec<String>>,
) {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        let (k, v) = (key.span(), value.span());
        // Inclusive end: parsers report a missing `]` or `"` just past the value.
        let holds = |s: &std::ops::Range<usize>| s.start <= pos && pos <= s.end;
        if (holds(&k) || holds(&v)) && best.as_ref().is_none_or(|b| b.len() <= path.len()) {
            *best = Some(path.clone());
        }
        walk_value(value, pos, path, best);
        path.pop();
    }
}

fn walk_value(
    value: &Spanned<DeValue<'_>>,
    pos: usize,
    path: &mut Vec<String>,
    best: &mut Option<Vec<String>>,
) {
    match value.get_ref() {
        DeValue::Table(t) => walk_table(t, pos, path, best),
        DeValue::Array(items) => {
            for item in items.iter() {
                walk_value(item, pos, path, best);
            }
        }
        _ => {}
    }
}

/// `message` without the value serde quoted in it: `invalid type: string "x", expected y`
/// becomes `invalid type: string (value not shown: ...), expected y`. Messages that quote no
/// value (syntax errors, unknown or missing keys) are kept; any double-quoted text left is cut.
fn redact(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        // serde appends `, expected …` last, from the type's own description.
        let (head, expected) = rest
            .rfind(", expected ")
            .map_or((rest, ""), |i| rest.split_at(i));
        // `string "…"`, `integer `5``, `sequence`: the kind is what precedes the value.
        let kind = head
            .split(['"', '`'])
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches(',');
        let kind = if kind.is_empty() || prefix == "unknown variant " {
            "value"
        } else {
            kind
        };
        let prefix = prefix.trim_end();
        let prefix = prefix.strip_suffix(':').unwrap_or(prefix);
        return format!("{prefix}: {kind} {HIDDEN}{expected}");
    }
    // Anything else quoted is cut too.
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        if i % 2 == 0 {
            out.push_str("\"…\"");
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_at_positions() {
        let text = "[verify]\nsecrets = [\"a\", 5]\n\n[[plugin]]\nname = \"x\"\n\
                    [plugin.config]\ntoken = \"t\"\n";
        let at = |needle: &str| {
            let pos = text.find(needle).unwrap();
            key_at(text, pos).unwrap().join(".")
        };
        assert_eq!(at("5]"), "verify.secrets");
        assert_eq!(at("\"t\""), "plugin.config.token");
        assert_eq!(at("\"x\""), "plugin.name");
    }

    #[test]
    fn quoted_values_are_cut_from_messages() {
        let cases = [
            (
                "invalid type: string \"s3cr3t\", expected a sequence",
                "invalid type: string (value not shown: this key may hold a secret), expected a sequence",
            ),
            (
                "invalid type: integer `5`, expected a string",
                "invalid type: integer (value not shown: this key may hold a secret), expected a string",
            ),
            (
                "invalid value: string \"a, expected b\", expected c",
                "invalid value: string (value not shown: this key may hold a secret), expected c",
            ),
            (
                "unclosed array, expected `]`",
                "unclosed array, expected `]`",
            ),
            ("something \"s3cr3t\" else", "something \"…\" else"),
        ];
        for (message, expected) in cases {
            assert_eq!(redact(message), expected, "{message}");
        }
    }
}
