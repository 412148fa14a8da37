//! Ingest flow: Kafka batch → plugin per record → one Postgres transaction → Kafka offsets.
//!
//! Runs on a dedicated blocking thread: plugin calls are synchronous CPU work, and the
//! consumer's rebalance callbacks run inside `poll` on this same thread, so partitions only
//! move between batches.

pub mod apply;
pub mod consumer;
pub mod redrive;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::OwnedMessage;
use sqlx::PgPool;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::config::{IngestSettings, KafkaSettings};
use crate::db;
use crate::runtime::{Plugin, Registry};
use apply::{BatchContext, BatchReport, Handled};
use consumer::IngestConsumer;

/// Backoff between attempts to commit a batch while Postgres is unavailable.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Whether ingest is making progress; read by `/readyz`.
#[derive(Debug, Default)]
pub struct IngestHealth {
    stuck: Mutex<Option<(Instant, String)>>,
}

impl IngestHealth {
    /// `Some(description)` while a batch cannot be committed.
    pub fn stuck(&self) -> Option<String> {
        let stuck = self.stuck.lock().unwrap_or_else(PoisonError::into_inner);
        stuck.as_ref().map(|(since, error)| {
            format!(
                "ingest stuck for {:.1} s: {error}",
                since.elapsed().as_secs_f64()
            )
        })
    }

    fn set_stuck(&self, error: String) {
        let mut stuck = self.stuck.lock().unwrap_or_else(PoisonError::into_inner);
        match stuck.as_mut() {
            Some((_, last)) => *last = error,
            None => *stuck = Some((Instant::now(), error)),
        }
    }

    fn set_ok(&self) {
        *self.stuck.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

pub struct Ingest {
    pub consumer: IngestConsumer,
    pub pool: PgPool,
    pub runtime: Handle,
    /// The active plugin versions; each batch takes the version active when it starts.
    pub registry: Arc<Registry>,
    pub kafka: KafkaSettings,
    pub settings: IngestSettings,
    pub health: Arc<IngestHealth>,
    /// Wakes the outbox relay when a batch queued status events or dead-letter copies.
    pub relay_wake: Arc<tokio::sync::Notify>,
}

impl Ingest {
    /// Consume until `shutdown`. The batch in hand is committed first, or left uncommitted
    /// (and redelivered to whoever owns the partition next).
    pub fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(routes = ?self.kafka.routes, group = %self.kafka.group_id, "ingest started");
        // Records received while a batch was waiting for the database; they lead the next batch.
        let mut carried = Vec::new();
        while !shutdown.is_cancelled() {
            let batch =
                consumer::poll_batch(&self.consumer, &self.settings, std::mem::take(&mut carried));
            for (topic, records) in by_topic(batch) {
                // One version for the whole batch: a swap takes effect at the next one.
                let plugin = self.plugin_for(&topic)?;
                let cx = self.batch_context(&topic, &plugin);
                let handled = handle(&plugin, records);
                if shutdown.is_cancelled() {
                    // Calls in flight were interrupted for the shutdown: their outcomes are
                    // not the plugin's. The batch is left uncommitted and redelivered.
                    tracing::info!(
                        "ingest stopped with a batch uncommitted; it will be redelivered"
                    );
                    return Ok(());
                }
                let Some(report) = self.apply_with_retry(&cx, &handled, &shutdown, &mut carried)
                else {
                    tracing::info!(
                        "ingest stopped with a batch uncommitted; it will be redelivered"
                    );
                    return Ok(());
                };
                if report.queued > 0 {
                    self.relay_wake.notify_one();
                }
                tracing::debug!(%topic, plugin = %cx.plugin_version, applied = report.applied,
                                rejected = report.rejected, dead_lettered = report.dead_lettered,
                                duplicates = report.duplicates, stale = report.stale, "batch committed");
                if let Err(e) =
                    consumer::commit_positions(&self.consumer, &topic, &report.positions)
                {
                    // Postgres holds the truth; Kafka's copy catches up with the next batch.
                    tracing::warn!(error = %e, "copying positions to Kafka failed");
                }
            }
        }
        tracing::info!("ingest stopped");
        Ok(())
    }

    /// The active version of the plugin routed to `topic`.
    fn plugin_for(&self, topic: &str) -> anyhow::Result<Arc<Plugin>> {
        let name = route(&self.kafka.routes, topic)
            .ok_or_else(|| anyhow::anyhow!("no route for topic {topic}"))?;
        self.registry.active(name).ok_or_else(|| {
            anyhow::anyhow!("topic {topic} routes to plugin {name}, which is not loaded")
        })
    }

    fn batch_context(&self, topic: &str, plugin: &Plugin) -> BatchContext {
        BatchContext {
            group_id: self.kafka.group_id.clone(),
            topic: topic.to_string(),
            plugin: plugin.name().to_string(),
            plugin_version: plugin.version().to_string(),
            status_topic: Some(self.kafka.status_topic.clone()),
            dead_letter_topic: Some(format!("{topic}{}", self.kafka.dead_letter_suffix)),
        }
    }

    /// Commit the batch, retrying with capped backoff while the database is unavailable: a
    /// valid record is never skipped or dead-lettered because a dependency was down. While
    /// retrying, the assigned partitions are paused and the consumer keeps polling (so the
    /// group keeps it); anything that still arrives is carried into the next batch.
    /// `None` on shutdown.
    fn apply_with_retry(
        &self,
        cx: &BatchContext,
        handled: &[Handled],
        shutdown: &CancellationToken,
        carried: &mut Vec<OwnedMessage>,
    ) -> Option<BatchReport> {
        let mut delay = RETRY_MIN;
        let mut paused = false;
        loop {
            match self
                .runtime
                .block_on(apply::apply_batch(&self.pool, cx, handled))
            {
                Ok(report) => {
                    if paused {
                        self.set_paused(false);
                        tracing::info!("batch committed after retrying; partitions resumed");
                    }
                    self.health.set_ok();
                    return Some(report);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "committing batch failed; will retry");
                    self.health.set_stuck(e.to_string());
                }
            }
            self.set_paused(true);
            paused = true;
            let until = Instant::now() + delay;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                if shutdown.is_cancelled() {
                    return None;
                }
                match self.consumer.poll(left.min(Duration::from_millis(100))) {
                    Some(Ok(message)) => carried.push(message.detach()),
                    Some(Err(e)) => tracing::debug!(error = %e, "consumer error while paused"),
                    None => {}
                }
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    fn set_paused(&self, pause: bool) {
        let result = self.consumer.assignment().and_then(|assignment| {
            if pause {
                self.consumer.pause(&assignment)
            } else {
                self.consumer.resume(&assignment)
            }
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, pause, "changing partition pause state failed");
        }
    }
}

/// The plugin name routed to `topic`.
pub fn route<'a>(routes: &'a [(String, String)], topic: &str) -> Option<&'a str> {
    routes
        .iter()
        .find(|(t, _)| t == topic)
        .map(|(_, plugin)| plugin.as_str())
}

/// Split a polled batch by topic, keeping each partition's order.
fn by_topic(batch: Vec<OwnedMessage>) -> Vec<(String, Vec<OwnedMessage>)> {
    let mut groups: Vec<(String, Vec<OwnedMessage>)> = Vec::new();
    for message in batch {
        match groups
            .iter_mut()
            .find(|(topic, _)| topic == message.topic())
        {
            Some((_, records)) => records.push(message),
            None => groups.push((message.topic().to_string(), vec![message])),
        }
    }
    groups
}

/// Run the plugin on every record of the batch.
fn handle(plugin: &Plugin, batch: Vec<OwnedMessage>) -> Vec<Handled> {
    batch
        .into_iter()
        .map(|message| {
            let _span = tracing::debug_span!(
                "handle",
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset()
            )
            .entered();
            let result = plugin.handle(&consumer::to_plugin_message(&message));
            Handled {
                event_id: consumer::event_id(&message),
                message,
                result,
            }
        })
        .collect()
}

/// Forget dedupe event ids older than `retention`, every `every` until shutdown. The first
/// sweep runs one period after start, not at once: a restart loop must not turn into a
/// sweep loop.
pub async fn forget_old_events(
    pool: PgPool,
    retention: Duration,
    every: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let Ok(retention) = chrono::Duration::from_std(retention) else {
            return Ok(()); // a window beyond chrono's range: keep everything
        };
        match db::ingest::forget_events_before(&pool, chrono::Utc::now() - retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(forgotten = n, "expired dedupe event ids removed"),
            Err(e) => tracing::warn!(error = %e, "removing expired dedupe event ids failed"),
        }
    }
}
