//! Ingest flow: Kafka batch → plugin per message → one Postgres transaction → Kafka offsets.
//!
//! Runs on a dedicated blocking thread: plugin calls are synchronous CPU work and the
//! consumer's rebalance callbacks run inside `poll`, on this same thread, so no batch is in
//! flight while partitions move.

pub mod apply;
pub mod consumer;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use sqlx::PgPool;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::config::{IngestSettings, KafkaSettings};
use crate::runtime::Plugin;
use apply::{Handled, HandledBy};
use consumer::IngestConsumer;

/// Backoff between attempts to commit a batch while Postgres is unavailable.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct Ingest {
    pub consumer: IngestConsumer,
    pub pool: PgPool,
    pub runtime: Handle,
    pub plugin: Arc<Plugin>,
    pub kafka: KafkaSettings,
    pub settings: IngestSettings,
}

impl Ingest {
    /// Consume until `shutdown`; the batch in hand is finished (or left uncommitted) first.
    pub fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(topic = %self.kafka.topic, group = %self.kafka.group_id,
                       plugin = %self.plugin.name(), "ingest started");
        while !shutdown.is_cancelled() {
            let batch = consumer::poll_batch(&self.consumer, &self.settings);
            if batch.is_empty() {
                continue;
            }
            let handled = self.handle(&batch);
            let by = HandledBy {
                plugin: self.plugin.name().to_string(),
                version: self.plugin.version().to_string(),
            };
            let Some(report) = self.apply_with_retry(&by, &handled, &shutdown) else {
                break;
            };
            tracing::debug!(
                applied = report.applied,
                rejected = report.rejected,
                duplicates = report.duplicates,
                stale = report.stale,
                "batch committed"
            );
            if let Err(e) =
                consumer::commit_positions(&self.consumer, &self.kafka.topic, &report.positions)
            {
                // Postgres holds the truth; Kafka's copy catches up with the next batch.
                tracing::warn!(error = %e, "copying positions to Kafka failed");
            }
        }
        tracing::info!("ingest stopped");
        Ok(())
    }

    /// Run the plugin on every message of the batch.
    fn handle(&self, batch: &[OwnedMessage]) -> Vec<Handled> {
        batch
            .iter()
            .map(|message| {
                let _span = tracing::debug_span!(
                    "handle",
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset()
                )
                .entered();
                Handled {
                    partition: message.partition(),
                    offset: message.offset(),
                    event_id: consumer::event_id(message),
                    result: self.plugin.handle(&consumer::to_plugin_message(message)),
                }
            })
            .collect()
    }

    /// Commit the batch, retrying with capped backoff while the database is unavailable:
    /// a valid message is never skipped because a dependency was down. `None` on shutdown.
    fn apply_with_retry(
        &self,
        by: &HandledBy,
        handled: &[Handled],
        shutdown: &CancellationToken,
    ) -> Option<apply::BatchReport> {
        let mut delay = RETRY_MIN;
        loop {
            let attempt = apply::apply_batch(
                &self.pool,
                &self.kafka.group_id,
                &self.kafka.topic,
                by,
                handled,
            );
            match self.runtime.block_on(attempt) {
                Ok(report) => return Some(report),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "committing batch failed; will retry");
                }
            }
            let cancelled = self.runtime.block_on(async {
                tokio::select! {
                    () = shutdown.cancelled() => true,
                    () = tokio::time::sleep(delay) => false,
                }
            });
            if cancelled {
                return None;
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }
}
