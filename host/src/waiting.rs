//! What each flow waits for (the brokers, a topic, its partitions), for `/readyz` and the log:
//! one line when a wait begins or its reason changes, one when it ends.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// A part of Sluice that can wait on a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flow {
    /// The ingest group member.
    Ingest,
    /// The consumer of the order verdicts.
    OrderStatus,
}

impl Flow {
    /// Its name in `/readyz` and in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::OrderStatus => "orderStatus",
        }
    }
}

/// Why a flow is waiting; how loud its log line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// An ordinary state of a young deployment: a topic nobody produced to yet, a group
    /// coordinator that has not assigned partitions yet. Logged at INFO.
    Expected(String),
    /// A dependency that should be there and is not (the brokers do not answer). Logged at
    /// WARN.
    Outage(String),
}

impl Wait {
    pub fn reason(&self) -> &str {
        match self {
            Self::Expected(reason) | Self::Outage(reason) => reason,
        }
    }
}

/// The flows that wait now, each with its reason and since when.
#[derive(Debug, Default)]
pub struct Waits {
    flows: Mutex<BTreeMap<Flow, (Wait, Instant)>>,
}

impl Waits {
    /// `flow` waits for `wait` now (`None`: it no longer waits). Logs only changes.
    pub fn set(&self, flow: Flow, wait: Option<Wait>) {
        let mut flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        match (flows.get(&flow), wait) {
            (None, None) => {}
            (Some((_, since)), None) => {
                tracing::info!(
                    flow = flow.as_str(),
                    waited_s = since.elapsed().as_secs_f64(),
                    "no longer waiting"
                );
                flows.remove(&flow);
            }
            (Some((same, _)), Some(wait)) if *same == wait => {}
            (before, Some(wait)) => {
                match &wait {
                    Wait::Expected(reason) => {
                        tracing::info!(flow = flow.as_str(), "waiting: {reason}")
                    }
                    Wait::Outage(reason) => {
                        tracing::warn!(flow = flow.as_str(), "waiting: {reason}")
                    }
                }
                let since = before.map_or_else(Instant::now, |(_, since)| *since);
                flows.insert(flow, (wait, since));
            }
        }
    }

    /// Each waiting flow's name and reason, with how long it has waited.
    pub fn all(&self) -> BTreeMap<&'static str, String> {
        let flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        flows
            .iter()
            .map(|(flow, (wait, since))| {
                let waited = since.elapsed().as_secs_f64();
                (
                    flow.as_str(),
                    format!("{} (for {waited:.1} s)", wait.reason()),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_reported_until_it_ends_and_keeps_its_start_when_its_reason_changes() {
        let waits = Waits::default();
        assert!(waits.all().is_empty());
        waits.set(
            Flow::Ingest,
            Some(Wait::Expected("topic a does not exist yet".into())),
        );
        let since = waits.flows.lock().unwrap()[&Flow::Ingest].1;
        waits.set(
            Flow::Ingest,
            Some(Wait::Outage("the brokers do not answer".into())),
        );
        waits.set(Flow::OrderStatus, Some(Wait::Expected("topic b".into())));
        let all = waits.all();
        assert!(
            all["ingest"].starts_with("the brokers do not answer (for "),
            "{all:?}"
        );
        assert!(all["orderStatus"].starts_with("topic b"), "{all:?}");
        assert_eq!(waits.flows.lock().unwrap()[&Flow::Ingest].1, since);
        waits.set(Flow::Ingest, None);
        assert_eq!(
            waits.all().keys().copied().collect::<Vec<_>>(),
            ["orderStatus"]
        );
    }
}
