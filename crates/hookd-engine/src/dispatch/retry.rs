//! The retry policy: what an attempt's outcome leads to (done, retry after a backoff with
//! jitter, or a dead letter after `max_attempts` or `max_age`).

use std::time::Duration;

use hookd_config::RetryPolicy;
use hookd_host::Outcome;
use hookd_storage::AttemptResult;
use rand::Rng as _;

/// What to do after an attempt.
pub fn next_step(
    outcome: &Outcome,
    attempts_made: u32,
    received_at_ms: i64,
    now_ms: i64,
    policy: &RetryPolicy,
) -> AttemptResult {
    let error = match outcome {
        Outcome::Ok => return AttemptResult::Done,
        Outcome::GiveUp(message) => {
            return AttemptResult::Dead {
                error: format!("plugin gave up: {message}"),
            };
        }
        Outcome::Retry(message) => format!("plugin asked to retry: {message}"),
        Outcome::Failed(kind, message) => format!("{}: {message}", kind.as_str()),
    };
    let age = Duration::from_millis(u64::try_from(now_ms - received_at_ms).unwrap_or(0));
    if attempts_made >= policy.max_attempts {
        return AttemptResult::Dead {
            error: format!("{error} (after {attempts_made} attempts)"),
        };
    }
    if age >= policy.max_age {
        return AttemptResult::Dead {
            error: format!("{error} (event older than {} s)", policy.max_age.as_secs()),
        };
    }
    let exponent = attempts_made.saturating_sub(1).min(30);
    let backoff = policy
        .initial_backoff
        .saturating_mul(1u32 << exponent)
        .min(policy.max_backoff);
    // "Equal jitter": between half and all of the backoff, so retries of a burst spread out.
    let millis = backoff.as_millis() as u64;
    let jittered = millis / 2 + rand::rng().random_range(0..=millis.div_ceil(2));
    AttemptResult::Retry {
        next_attempt_at_ms: now_ms + i64::try_from(jittered).unwrap_or(i64::MAX / 2),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookd_host::FailureKind;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1000),
            max_backoff: Duration::from_millis(5000),
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for (attempt, low, high) in [(1, 500, 1000), (2, 1000, 2000), (3, 2000, 4000)] {
            for _ in 0..50 {
                let step = next_step(&Outcome::Retry("x".into()), attempt, 0, 0, &policy());
                let AttemptResult::Retry {
                    next_attempt_at_ms, ..
                } = step
                else {
                    panic!("{step:?}")
                };
                assert!(
                    (low..=high).contains(&next_attempt_at_ms),
                    "attempt {attempt}: {next_attempt_at_ms}"
                );
            }
        }
    }

    #[test]
    fn outcomes_map_to_steps() {
        let p = policy();
        assert_eq!(next_step(&Outcome::Ok, 1, 0, 0, &p), AttemptResult::Done);
        assert!(matches!(
            next_step(&Outcome::GiveUp("no".into()), 1, 0, 0, &p),
            AttemptResult::Dead { .. }
        ));
        let trap = Outcome::Failed(FailureKind::Trap, "boom".into());
        assert!(matches!(
            next_step(&trap, 1, 0, 0, &p),
            AttemptResult::Retry { .. }
        ));
        assert!(matches!(
            next_step(&trap, 4, 0, 0, &p),
            AttemptResult::Dead { .. }
        ));
        let old = 3600 * 1000;
        assert!(matches!(
            next_step(&trap, 1, 0, old, &p),
            AttemptResult::Dead { .. }
        ));
    }
}
