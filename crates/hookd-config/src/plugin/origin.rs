//! An allow-listed origin of outgoing HTTP (`capabilities.http`).

/// An allow-listed origin: `https://api.example.com`, `https://*.slack.com`,
/// `http://127.0.0.1:8080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    /// Lowercase host; a leading `*.` matches any subdomain (not the bare domain).
    pub host: String,
    /// The explicit port, or the scheme's default.
    pub port: u16,
}

impl Origin {
    pub fn parse(text: &str) -> Result<Origin, String> {
        let bad = |why: &str| {
            format!(
                "`{text}` is not an origin ({why}); write `https://host`, `https://*.domain` or \
                 `http://host:port`"
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return Err(bad("only scheme, host and port are allowed"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                let port: u16 = p.parse().map_err(|_| bad("the port is not a number"))?;
                (h, port)
            }
            _ => (rest, default_port),
        };
        let host = host.to_ascii_lowercase();
        let wildcard_ok = host.strip_prefix("*.").unwrap_or(&host);
        if wildcard_ok.is_empty()
            || wildcard_ok.contains('*')
            || !wildcard_ok
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        {
            return Err(bad("the host is not valid"));
        }
        Ok(Origin { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` is allowed by this origin.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if !self.scheme.eq_ignore_ascii_case(scheme) || self.port != port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
            None => self.host == host,
        }
    }

    /// Whether this origin names an IP literal or `localhost` explicitly: only then may
    /// requests reach loopback or private addresses without
    /// `capabilities.http_allow_private_addresses`. Any other name, plain or wildcard, is
    /// checked after resolution: whoever controls its DNS could point it anywhere.
    pub fn names_host_literally(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok()
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_and_match() {
        let o = Origin::parse("https://api.example.com").unwrap();
        assert!(o.allows("https", "api.example.com", 443));
        assert!(o.allows("https", "API.example.com", 443));
        assert!(!o.allows("http", "api.example.com", 443));
        assert!(!o.allows("https", "api.example.com", 8443));
        assert!(!o.allows("https", "evil.api.example.com", 443));

        let w = Origin::parse("https://*.slack.com").unwrap();
        assert!(w.allows("https", "hooks.slack.com", 443));
        assert!(w.allows("https", "a.b.slack.com", 443));
        assert!(!w.allows("https", "slack.com", 443));
        assert!(!w.allows("https", "evilslack.com", 443));

        let local = Origin::parse("http://127.0.0.1:8080").unwrap();
        assert!(local.allows("http", "127.0.0.1", 8080));
        assert!(!local.allows("http", "127.0.0.1", 8081));

        for bad in [
            "api.example.com",
            "ftp://x",
            "https://a/b",
            "https://*",
            "https://a.*.com",
            "https://u@h",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_ip_literals_and_localhost_are_named_literally() {
        for (origin, literal) in [
            ("http://127.0.0.1:8080", true),
            ("http://[::1]:8080", true),
            ("http://localhost:8080", true),
            ("http://internal.example:8080", false),
            ("http://localhost.:8080", false),
            ("https://*.example.com", false),
        ] {
            let o = Origin::parse(origin).unwrap();
            assert_eq!(o.names_host_literally(), literal, "{origin}");
        }
    }
}
