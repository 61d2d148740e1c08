//! Running a write transaction again when a concurrent one made the database refuse it
//! ([`crate::Kind::Busy`]): one rule for every store (settlement.md §5.4, licensing.md §4,
//! metering.md §6.4).

/// An error that may say a transaction met a concurrent one: the crates' own errors, which
/// carry this crate's [`crate::Error`].
pub trait Retryable: From<crate::Error> {
    /// Whether running the transaction again may succeed ([`crate::Kind::Busy`]).
    fn is_busy(&self) -> bool;
}

impl Retryable for crate::Error {
    fn is_busy(&self) -> bool {
        self.kind() == crate::Kind::Busy
    }
}

/// Attempts in all, the first included.
pub const ATTEMPTS: u32 = 8;

/// Runs `attempt` (whole write transactions, each re-reading what it depends on) again
/// while it fails with an error `busy` accepts, at most [`ATTEMPTS`] times in all, and
/// returns the last result. Before attempt `n + 1` it waits a random time between `w/2`
/// and `w` milliseconds, `w = min(5 · 2^(n-1), 320)`, so that colliding writers spread
/// out.
pub fn while_busy<T, E>(
    busy: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut wait_ms: u64 = 5;
    let mut tries = 1;
    loop {
        match attempt() {
            Err(error) if tries < ATTEMPTS && busy(&error) => {
                let mut random = [0u8; 8];
                let jitter = match escx::keyfile::fill_random(&mut random) {
                    Ok(()) => u64::from_le_bytes(random) % (wait_ms / 2 + 1),
                    Err(_) => 0,
                };
                std::thread::sleep(std::time::Duration::from_millis(wait_ms - jitter));
                wait_ms = (wait_ms * 2).min(320);
                tries += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_attempt_runs_again_and_the_last_answer_is_returned() {
        let mut runs = 0;
        let result: Result<u32, &str> = while_busy(
            |e| *e == "busy",
            || {
                runs += 1;
                if runs < 3 { Err("busy") } else { Ok(runs) }
            },
        );
        assert_eq!(result, Ok(3));
        // Another error is returned at once; a busy one after ATTEMPTS tries.
        let mut runs = 0;
        assert_eq!(
            while_busy(
                |e| *e == "busy",
                || -> Result<(), &str> {
                    runs += 1;
                    Err("other")
                }
            ),
            Err("other")
        );
        assert_eq!(runs, 1);
        let mut runs = 0;
        assert_eq!(
            while_busy(
                |e| *e == "busy",
                || -> Result<(), &str> {
                    runs += 1;
                    Err("busy")
                }
            ),
            Err("busy")
        );
        assert_eq!(runs, ATTEMPTS);
    }
}
