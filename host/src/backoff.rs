//! The one retry schedule for loops that wait on a dependency (the database, the broker):
//! 100 ms, doubling, capped at 5 s; and the one loop that retries on it until shutdown.

use std::fmt::Display;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        Self { next: FIRST }
    }

    /// How long to wait before the next attempt; each call doubles the next one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay
    }

    /// The dependency answered: start over.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// Run `attempt` until it succeeds, waiting on the schedule between failures (each logged as
/// "`what` failed; will retry" and passed to `failed`). `None` when `shutdown` came first.
pub async fn retry<T, E, F>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: impl FnMut() -> F,
    mut failed: impl FnMut(&E),
) -> Option<T>
where
    F: Future<Output = Result<T, E>>,
    E: Display,
{
    let mut backoff = Backoff::new();
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match attempt().await {
            Ok(value) => return Some(value),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "{what} failed; will retry");
                failed(&e);
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_five_seconds_and_starts_over() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_and_stops_at_shutdown() {
        let shutdown = CancellationToken::new();
        let mut attempts = 0;
        let mut failures = 0;
        let done = retry(
            "test",
            &shutdown,
            || {
                attempts += 1;
                let n = attempts;
                async move { if n < 3 { Err("not yet") } else { Ok(n) } }
            },
            |_| failures += 1,
        )
        .await;
        assert_eq!((done, failures), (Some(3), 2));

        shutdown.cancel();
        let never = retry("test", &shutdown, || async { Err::<(), _>("down") }, |_| {}).await;
        assert_eq!(never, None, "shutdown ends the loop");
    }
}
