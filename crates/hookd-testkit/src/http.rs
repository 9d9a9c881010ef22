//! A minimal HTTP/1.0 GET over a plain socket and Prometheus text parsing: enough to read
//! `/readyz`, `/metrics`, `/status` and `/plugins` without an HTTP client library (the
//! benchmarks and xtask stay light, and a poll in a measured loop costs one connection).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` on `addr`: the status and the body, or `None` if the server did not answer in
/// time or answered something that is not HTTP.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The value of the first sample line starting with `prefix` (a metric name with its labels
/// and the space before the value, e.g. `hookd_deliveries_total{plugin="a",outcome="ok"} `).
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The sum of every sample of `name` whose labels contain all of `labels` (each written as in
/// the exposition, e.g. `outcome="ok"`); 0 when there is none.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP hookd_deliveries_total Deliveries.\n\
        hookd_deliveries_total{plugin=\"a\",outcome=\"ok\"} 3\n\
        hookd_deliveries_total{plugin=\"b\",outcome=\"ok\"} 4\n\
        hookd_deliveries_total{plugin=\"b\",outcome=\"failed\"} 1\n\
        hookd_deliveries_total_other 100\n";

    #[test]
    fn samples_are_found_by_prefix_and_summed_by_labels() {
        assert_eq!(
            metric_value(TEXT, "hookd_deliveries_total{plugin=\"b\",outcome=\"ok\"} "),
            Some(4.0)
        );
        assert_eq!(metric_value(TEXT, "hookd_missing "), None);
        assert_eq!(
            metric_sum(TEXT, "hookd_deliveries_total", &["outcome=\"ok\""]),
            7.0
        );
        assert_eq!(metric_sum(TEXT, "hookd_deliveries_total", &[]), 8.0);
    }
}
