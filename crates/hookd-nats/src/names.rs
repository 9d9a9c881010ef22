//! How hookd's records are named on JetStream: subjects for event types and patterns, the
//! streams and buckets a prefix derives, escaped header values and key-value keys.

/// Every stream, bucket, consumer and subject of one hookd deployment, derived from its
/// `[store.nats] prefix` (so that several deployments, or test runs, share a NATS cluster).
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    /// `prefix` must be a valid [`is_token`].
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn events_stream(&self) -> String {
        format!("{}-events", self.prefix)
    }

    pub(crate) fn dead_stream(&self) -> String {
        format!("{}-dead", self.prefix)
    }

    pub(crate) fn dedup_bucket(&self) -> String {
        format!("{}-dedup", self.prefix)
    }

    pub(crate) fn deliveries_bucket(&self) -> String {
        format!("{}-deliveries", self.prefix)
    }

    pub(crate) fn instances_bucket(&self) -> String {
        format!("{}-instances", self.prefix)
    }

    pub(crate) fn kv_bucket(&self, plugin: &str) -> String {
        format!("{}-kv-{plugin}", self.prefix)
    }

    /// The durable consumer every instance shares for `plugin`.
    pub(crate) fn consumer(&self, plugin: &str) -> String {
        format!("hookd-{plugin}")
    }

    /// The plugin a consumer named by [`Names::consumer`] serves.
    pub(crate) fn consumer_plugin<'a>(&self, consumer: &'a str) -> Option<&'a str> {
        consumer.strip_prefix("hookd-")
    }

    /// Every event subject: `<prefix>.events.>`.
    pub(crate) fn all_events(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// Replays of dead letters to one plugin.
    pub(crate) fn replay_subject(&self, plugin: &str) -> String {
        format!("{}.replay.{plugin}", self.prefix)
    }

    pub(crate) fn replays(&self) -> String {
        format!("{}.replay.>", self.prefix)
    }

    pub(crate) fn dead_subject(&self, plugin: &str) -> String {
        format!("{}.dead.{plugin}", self.prefix)
    }

    pub(crate) fn all_dead(&self) -> String {
        format!("{}.dead.>", self.prefix)
    }

    /// The plugin a dead-letter subject belongs to.
    pub(crate) fn dead_plugin<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".dead.")
    }

    /// The subject an event of `event_type` is published on: one token per segment of the
    /// type, so that NATS wildcards match exactly as hookd's patterns do. A segment that is
    /// not a plain token (any byte outside `[a-z0-9_-]`, or empty) becomes `~` and its bytes
    /// in hex: patterns never contain `~`, so such a segment matches only `*`.
    pub(crate) fn event_subject(&self, event_type: &str) -> String {
        let mut subject = format!("{}.events", self.prefix);
        for segment in event_type.split('.') {
            subject.push('.');
            if is_pattern_token(segment) {
                subject.push_str(segment);
            } else {
                subject.push('~');
                subject.push_str(&hex::encode(segment.as_bytes()));
            }
        }
        subject
    }

    /// The subject filter of a subscription pattern (`message.*`, `*.deleted`, `*`).
    pub(crate) fn pattern_filter(&self, pattern: &str) -> String {
        if pattern == "*" {
            return self.all_events();
        }
        format!("{}.events.{pattern}", self.prefix)
    }

    /// The filters of a plugin subscribed to `patterns`, reduced so that none contains
    /// another (JetStream refuses nested filters), with its replays; no patterns known
    /// (a plugin named by an event before any instance said what it wants): every event.
    pub(crate) fn consumer_filters(&self, plugin: &str, patterns: &[String]) -> Vec<String> {
        let mut filters: Vec<String> = if patterns.is_empty() {
            vec![self.all_events()]
        } else {
            patterns.iter().map(|p| self.pattern_filter(p)).collect()
        };
        filters.push(self.replay_subject(plugin));
        reduce(filters)
    }
}

/// Whether `s` may be a whole subject token, bucket or consumer name of hookd's own:
/// lowercase letters, digits, `_` and `-`, not empty.
pub fn is_token(s: &str) -> bool {
    is_pattern_token(s) && s.len() <= 64
}

fn is_pattern_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether every subject `inner` matches, `outer` matches too (NATS wildcards: `*` one
/// token, `>` the rest).
pub(crate) fn contains(outer: &str, inner: &str) -> bool {
    let (mut o, mut i) = (outer.split('.'), inner.split('.'));
    loop {
        match (o.next(), i.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => continue,
            (Some(a), Some(b)) if a == b => continue,
            _ => return false,
        }
    }
}

/// `filters` without duplicates and without any that another contains, sorted.
pub(crate) fn reduce(mut filters: Vec<String>) -> Vec<String> {
    filters.sort();
    filters.dedup();
    let kept: Vec<String> = filters
        .iter()
        .filter(|f| !filters.iter().any(|g| g != *f && contains(g, f)))
        .cloned()
        .collect();
    kept
}

/// Whether one of `filters` matches `subject`.
pub(crate) fn covered(filters: &[String], subject: &str) -> bool {
    filters.iter().any(|f| contains(f, subject))
}

/// `value` safe as a NATS header value: `%`, control and non-ASCII bytes as `%XX`. The
/// mapping is one-to-one, so escaped ids deduplicate exactly as the ids do.
pub(crate) fn escape_header(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b == b'%' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The inverse of [`escape_header`]; `None` for a value it did not write.
pub(crate) fn unescape_header(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A plugin's key as a key-value key: `[A-Za-z0-9_/-]` kept, every other byte (`.` and `=`
/// too) as `=XX`, and the empty key as `=`. One-to-one, and never an invalid NATS key.
pub(crate) fn kv_key(key: &str) -> String {
    if key.is_empty() {
        return "=".to_owned();
    }
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_subjects_keep_segments_and_encode_the_rest() {
        let n = Names::new("hookd");
        assert_eq!(
            n.event_subject("message.created"),
            "hookd.events.message.created"
        );
        assert_eq!(n.event_subject("x"), "hookd.events.x");
        assert_eq!(n.event_subject("a..B"), "hookd.events.a.~.~42");
        assert_eq!(n.event_subject(""), "hookd.events.~");
        assert_eq!(n.event_subject("a b.>"), "hookd.events.~612062.~3e");
    }

    #[test]
    fn filters_match_as_patterns_do() {
        let n = Names::new("hookd");
        let cases = [
            ("*", "message.created", true),
            ("*", "weird..Type", true),
            ("message.*", "message.created", true),
            ("message.*", "message", false),
            ("message.*", "message.a.b", false),
            ("*.deleted", "contact.deleted", true),
            ("*.deleted", "Contact.deleted", true),
            ("message.created", "message.created", true),
            ("message.created", "message.updated", false),
        ];
        for (pattern, event_type, matches) in cases {
            assert_eq!(
                contains(&n.pattern_filter(pattern), &n.event_subject(event_type)),
                matches,
                "{pattern} against {event_type}"
            );
        }
    }

    #[test]
    fn nested_filters_are_reduced_and_partial_overlaps_kept() {
        let n = Names::new("h");
        let f = |p: &[&str]| {
            n.consumer_filters("p", &p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(f(&["message.*", "*"]), ["h.events.>", "h.replay.p"]);
        assert_eq!(
            f(&["message.created", "message.*"]),
            ["h.events.message.*", "h.replay.p"]
        );
        assert_eq!(
            f(&["message.*", "*.created"]),
            ["h.events.*.created", "h.events.message.*", "h.replay.p"]
        );
        assert_eq!(f(&[]), ["h.events.>", "h.replay.p"]);
    }

    #[test]
    fn escaping_round_trips_and_is_one_to_one() {
        for s in ["plain-id_1", "100%", "%25", "é\r\n\u{0}x", ""] {
            let e = escape_header(s);
            assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)), "{e}");
            assert_eq!(unescape_header(&e).as_deref(), Some(s));
        }
        assert_ne!(escape_header("%25"), escape_header("%"));
        assert_eq!(kv_key("a.b=c/d"), "a=2Eb=3Dc/d");
        assert_ne!(kv_key("="), kv_key(""));
    }
}
