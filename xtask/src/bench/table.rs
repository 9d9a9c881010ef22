//! The results: one [`Row`] per system and connection count, its ratios, its JSON, and the
//! Markdown table printed at the end.

use serde_json::{Value, json};

use super::systems::{SYSTEMS, System};

/// One system at one connection count.
pub(super) struct Row {
    pub(super) system: &'static str,
    pub(super) ceiling: bool,
    pub(super) connections: usize,
    outcome: Outcome,
    pub(super) ratio: Option<f64>,
    /// Against adnanh/webhook (synchronous) at the same connection count.
    pub(super) ratio_webhook: Option<f64>,
}
enum Outcome {
    Measured(Value),
    Skipped(String),
    Failed(String),
}

impl Row {
    fn new(system: &System, connections: usize, outcome: Outcome) -> Self {
        Self {
            system: system.name,
            ceiling: SYSTEMS.first().is_some_and(|c| c.name == system.name),
            connections,
            outcome,
            ratio: None,
            ratio_webhook: None,
        }
    }

    pub(super) fn measured(system: &System, connections: usize, report: Value) -> Self {
        Self::new(system, connections, Outcome::Measured(report))
    }

    pub(super) fn skipped(system: &System, connections: usize, why: &str) -> Self {
        Self::new(system, connections, Outcome::Skipped(why.to_owned()))
    }

    pub(super) fn failed(system: &System, connections: usize, why: &str) -> Self {
        Self::new(system, connections, Outcome::Failed(why.to_owned()))
    }

    pub(super) fn report(&self) -> Option<&Value> {
        match &self.outcome {
            Outcome::Measured(r) => Some(r),
            _ => None,
        }
    }

    pub(super) fn requests_per_sec(&self) -> Option<f64> {
        self.report()?["requests_per_sec"].as_f64()
    }

    /// Failed to run, or ran with any non-2xx answer, error, or undelivered event.
    pub(super) fn is_failure(&self) -> bool {
        match &self.outcome {
            Outcome::Measured(r) => {
                let n = |v: &Value| v.as_u64().unwrap_or(0);
                n(&r["non_2xx"])
                    + n(&r["errors"])
                    + n(&r["warmup"]["non_2xx"])
                    + n(&r["warmup"]["errors"])
                    > 0
                    || r.get("delivered")
                        .is_some_and(|d| n(d) < n(&r["delivered_expected"]))
            }
            Outcome::Skipped(_) => false,
            Outcome::Failed(_) => true,
        }
    }

    pub(super) fn to_json(&self) -> Value {
        let (status, detail) = match &self.outcome {
            Outcome::Measured(r) => ("measured", r.clone()),
            Outcome::Skipped(why) => ("skipped", json!(why)),
            Outcome::Failed(why) => ("failed", json!(why)),
        };
        json!({
            "system": self.system,
            "connections": self.connections,
            "status": status,
            "ratio_to_ceiling": self.ratio,
            "ratio_to_webhook": self.ratio_webhook,
            if status == "measured" { "report" } else { "reason" }: detail,
        })
    }
}

pub(super) fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| system | connections | requests | req/s | p50 ms | p99 ms | non-2xx | errors | vs ceiling | vs webhook | done after the answer |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut notes = Vec::new();
    for row in rows {
        let Some(r) = row.report() else {
            let (what, why) = match &row.outcome {
                Outcome::Skipped(why) => ("skipped", why),
                Outcome::Failed(why) => ("FAILED", why),
                Outcome::Measured(_) => continue,
            };
            println!(
                "| {} | {} | {what} | | | | | | | | |",
                row.system, row.connections
            );
            notes.push(format!(
                "{} at {}: {what}: {}",
                row.system,
                row.connections,
                why.trim_end()
            ));
            continue;
        };
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        let delivered = match r.get("delivered_per_sec") {
            Some(d) if n(&r["delivered"]) < n(&r["delivered_expected"]) => format!(
                "{:.0} ({} of {} delivered)",
                f(d),
                n(&r["delivered"]),
                n(&r["delivered_expected"])
            ),
            Some(d) => format!("{:.0} delivered/s", f(d)),
            None => match r.get("commands_ran") {
                Some(ran) => format!("{} of {} commands ran", n(ran), n(&r["commands_expected"])),
                None => "-".to_owned(),
            },
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {delivered} |",
            row.system,
            row.connections,
            n(&r["requests"]),
            f(&r["requests_per_sec"]),
            f(&r["p50_ms"]),
            f(&r["p99_ms"]),
            n(&r["non_2xx"]) + n(&r["warmup"]["non_2xx"]),
            n(&r["errors"]) + n(&r["warmup"]["errors"]),
            row.ratio
                .map_or("-".to_owned(), |x| format!("{:.0}%", 100.0 * x)),
            row.ratio_webhook
                .map_or("-".to_owned(), |x| format!("{x:.1}x")),
        );
        if r["stopped_by"] == "duration" {
            notes.push(format!(
                "{} at {}: stopped by the time bound before all requests were sent",
                row.system, row.connections
            ));
        }
        if let Some(e) = r["first_error"].as_str() {
            notes.push(format!(
                "{} at {}: first error: {e}",
                row.system, row.connections
            ));
        }
    }
    for note in notes {
        println!("- {note}");
    }
}
