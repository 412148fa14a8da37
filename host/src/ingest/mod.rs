//! Ingest flow: Kafka batch → plugin per record → one Postgres transaction → Kafka offsets.
//!
//! A dedicated thread polls batches; the records of a batch are handled in parallel on the
//! plugin workers (each record is independent; order matters only when applying), and a batch
//! is committed by a task on the async runtime while the thread polls and handles the next
//! one. Commits run one at a time, in order. The consumer's rebalance callbacks run inside
//! `poll` on the ingest thread, so partitions only move between batches.

pub mod apply;
pub mod consumer;
pub mod keyed;
pub mod plan;
pub mod redrive;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rayon::prelude::*;
use rdkafka::consumer::Consumer as _;
use sqlx::PgPool;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff;
use crate::db;
use crate::db::tables::Catalog;
use crate::domain::{Consumed, Outcome, Routes, SeenState};
use crate::kafka::membership::{self, GroupProtocolChoice, Subscription};
use crate::kafka::topics::Seen;
use crate::kafka::{self, KafkaSettings};
use crate::metrics::Metrics;
use crate::runtime::{Plugin, Registry};
use crate::waiting::{Flow, Waits};
use consumer::IngestConsumer;
use keyed::Caller;
use plan::{BatchContext, BatchReport, Handled};

/// How long the ingest thread waits for a commit before it pauses its partitions and keeps
/// polling (so that the group keeps it while the database is away).
const PATIENCE: Duration = Duration::from_millis(500);

/// How ingest batches and remembers.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Most records in one batch (one transaction).
    pub batch_max_messages: usize,
    /// Longest wait to fill a batch once its first record arrived.
    pub batch_max_wait: Duration,
    /// How long an event id is remembered for dedupe.
    pub dedupe_retention: Duration,
    /// How often expired dedupe event ids are removed; the first sweep runs one period
    /// after start.
    pub dedupe_sweep_interval: Duration,
    /// Threads plugin calls run on.
    pub plugin_threads: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            batch_max_messages: 5000,
            batch_max_wait: Duration::from_millis(20),
            dedupe_retention: Duration::from_secs(7 * 24 * 3600),
            // Expired event ids are swept hourly.
            dedupe_sweep_interval: Duration::from_secs(3600),
            // One plugin thread per CPU.
            plugin_threads: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }
}

/// Whether ingest is making progress; read by `/readyz` and the benchmark.
#[derive(Debug, Default)]
pub struct IngestHealth {
    stuck: Mutex<Option<(Instant, String)>>,
    decided: AtomicU64,
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

    /// Records decided (any outcome) since start.
    pub fn decided(&self) -> u64 {
        self.decided.load(Ordering::Relaxed)
    }

    fn set_stuck(&self, error: String) {
        let mut stuck = self.stuck.lock().unwrap_or_else(PoisonError::into_inner);
        match stuck.as_mut() {
            Some((_, last)) => *last = error,
            None => *stuck = Some((Instant::now(), error)),
        }
    }

    fn committed(&self, report: &BatchReport) {
        *self.stuck.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.decided
            .fetch_add(report.decided() as u64, Ordering::Relaxed);
    }
}

pub struct Ingest {
    pub pool: PgPool,
    pub runtime: Handle,
    /// The active plugin versions; each batch takes the version active when it starts.
    pub registry: Arc<Registry>,
    pub kafka: KafkaSettings,
    pub routes: Routes,
    pub settings: IngestSettings,
    pub health: Arc<IngestHealth>,
    /// Wakes the outbox relay when a batch queued status events or dead-letter copies.
    pub relay_wake: Arc<tokio::sync::Notify>,
    /// The threads plugin calls run on.
    pub workers: Arc<rayon::ThreadPool>,
    /// Held by the commit in flight (see `consumer`).
    pub fence: Arc<tokio::sync::Mutex<()>>,
    pub metrics: Arc<Metrics>,
    /// Whether any route keeps keyed state (then commits are not overlapped with the next
    /// batch's calls).
    pub keeps_state: bool,
    /// Which of the routed topics exist (the member joins once one does).
    pub topics: watch::Receiver<Seen>,
    /// The group protocol, decided once for both groups.
    pub protocol: Arc<GroupProtocolChoice>,
    /// What ingest waits for, for `/readyz`.
    pub waits: Arc<Waits>,
    /// The declared tables' shapes (each batch takes the current ones).
    pub tables: Arc<Catalog>,
}

/// A batch being committed: one transaction per topic, in order.
struct Commit {
    task: JoinHandle<Option<Vec<(String, BatchReport)>>>,
}

/// One topic's share of a batch, handled: how to apply it, its records, and (on a route that
/// keeps state) how to call a key's records again.
type TopicShare = (BatchContext, Vec<Handled>, Option<Arc<Caller>>);

impl Ingest {
    /// Consume until `shutdown`, then leave the group at once (its partitions go to the other
    /// members without waiting for a session timeout; with an instance id the broker keeps them
    /// for this member's return until the session timeout). The batch being committed is
    /// committed first; the batch in hand, whose calls the shutdown interrupted, is left
    /// uncommitted and read again by whoever owns its partitions next.
    pub fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let wanted: Vec<String> = self.routes.topics().map(str::to_string).collect();
        for topic in &wanted {
            // Zero, not absent, until the member owns partitions.
            self.metrics
                .assigned_partitions
                .get_or_create(&[("topic", topic.clone())])
                .set(0);
        }
        let mut seen = self.topics.clone();
        let kafka = self.runtime.block_on(membership::ready_to_join(
            &self.protocol,
            &mut seen,
            &wanted,
            (&self.waits, Flow::Ingest),
            &shutdown,
        ));
        let Some(kafka) = kafka else {
            return Ok(()); // shut down while waiting
        };
        let consumer = consumer::create(
            &kafka,
            self.pool.clone(),
            self.runtime.clone(),
            Arc::clone(&self.fence),
            Arc::clone(&self.metrics),
        )?;
        tracing::info!(routes = %self.routes, group = %kafka.group_id,
                       protocol = %kafka.group_protocol,
                       instance_id = kafka.instance_id.as_deref().unwrap_or("-"),
                       plugin_threads = self.workers.current_num_threads(), "ingest started");
        let subscription = Subscription::new(wanted, seen, Flow::Ingest);
        let consumed = self.consume(&consumer, subscription, &shutdown);
        let leaving = Instant::now();
        // Closing runs the revocation (and its hand-over) and tells the coordinator.
        drop(consumer);
        if consumed.is_ok() {
            tracing::info!(
                took_ms = leaving.elapsed().as_millis() as u64,
                "left the consumer group"
            );
        }
        consumed
    }

    fn consume(
        &self,
        consumer: &IngestConsumer,
        mut subscription: Subscription,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        // Records received while a commit was waiting for the database; they lead the next batch.
        let mut carried = Vec::new();
        let mut in_flight: Option<Commit> = None;
        while !shutdown.is_cancelled() {
            subscription
                .tend(consumer, &self.waits)
                .context("subscribing to the routed topics")?;
            let batch =
                consumer::poll_batch(consumer, &self.settings, std::mem::take(&mut carried));
            if batch.is_empty() {
                if let Some(commit) = in_flight.take() {
                    self.finish(consumer, commit, shutdown, &mut carried);
                }
                if let Some(fatal) = consumer::fatal_error(consumer) {
                    return Err(fatal);
                }
                continue;
            }
            // A route that keeps state reads its keys' state before the calls: after the
            // commit in flight, or a hot key's records would have seen the state before it and
            // be called again in the transaction.
            if self.keeps_state
                && let Some(commit) = in_flight.take()
            {
                self.finish(consumer, commit, shutdown, &mut carried);
            }
            let Some(handled) = self.handle(batch, shutdown)? else {
                tracing::info!("ingest stopped with a batch uncommitted; it will be redelivered");
                return Ok(());
            };
            if let Some(commit) = in_flight.take() {
                self.finish(consumer, commit, shutdown, &mut carried);
            }
            if shutdown.is_cancelled() {
                // Calls in flight were interrupted for the shutdown: their outcomes are not
                // the plugin's. The batch is left uncommitted and redelivered.
                tracing::info!("ingest stopped with a batch uncommitted; it will be redelivered");
                return Ok(());
            }
            in_flight = Some(self.start_commit(handled, shutdown));
        }
        if let Some(commit) = in_flight.take() {
            self.finish(consumer, commit, shutdown, &mut carried);
        }
        tracing::info!("ingest stopped");
        Ok(())
    }

    /// Run each record's plugin, in parallel on the workers; per topic, in order. On a route
    /// that keeps state, a key's records are called one after another, from the state read
    /// first (retried while the database is away; `None` if shutdown came first).
    fn handle(
        &self,
        batch: Vec<Consumed>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<Vec<TopicShare>>> {
        let mut handled = Vec::new();
        for (topic, records) in by_topic(batch) {
            // One version for the whole batch: a swap takes effect at the next one.
            let (plugin, shadow) = self.plugin_for(&topic)?;
            let mut batch = self.batch_context(&topic, &plugin);
            batch.shadow_version = shadow.as_ref().map(|s| s.version().to_string());
            let mut allowed = self.routes.allowances(&topic);
            batch.tables.grant(&mut allowed.tables);
            let caller = Arc::new(Caller {
                plugin,
                shadow,
                allowed,
            });
            if !caller.allowed.state {
                let records = self.call_each(&caller, records);
                handled.push((batch, records, None));
                continue;
            }
            let Some(records) = self.call_by_key(&caller, records, shutdown) else {
                return Ok(None);
            };
            handled.push((batch, records, Some(caller)));
        }
        Ok(Some(handled))
    }

    /// Each worker's share of the records is called in order, in the instances its `Calls`
    /// keep (one per record, or one for the share: the plugin's isolation).
    fn call_each(&self, caller: &Caller, records: Vec<Consumed>) -> Vec<Handled> {
        self.workers.install(|| {
            records
                .into_par_iter()
                .map_init(
                    || caller.calls(),
                    |calls, record| Caller::call_one(calls, record, SeenState::NotGiven),
                )
                .collect()
        })
    }

    /// The records of each key in order, from the key's committed state; keys in parallel.
    fn call_by_key(
        &self,
        caller: &Caller,
        records: Vec<Consumed>,
        shutdown: &CancellationToken,
    ) -> Option<Vec<Handled>> {
        let chains = keyed::chains(&records);
        let mut keys: Vec<&[u8]> = records.iter().filter_map(|r| r.key.as_deref()).collect();
        keys.sort_unstable();
        keys.dedup();
        let plugin = caller.plugin.name();
        let load = || db::state::load(&self.pool, plugin, &keys);
        let mut states = self.runtime.block_on(backoff::retry(
            "reading the keys' state",
            shutdown,
            load,
            |e| self.health.set_stuck(e.to_string()),
        ))?;
        let count = records.len();
        let mut slots: Vec<Option<Consumed>> = records.into_iter().map(Some).collect();
        // Each key's records (their positions, themselves) and its committed state.
        type Chain = (Vec<usize>, Vec<Consumed>, Option<Vec<u8>>);
        let chains: Vec<Chain> = chains
            .into_iter()
            .map(|positions| {
                let chain: Vec<Consumed> =
                    positions.iter().filter_map(|&p| slots[p].take()).collect();
                let state = chain
                    .first()
                    .and_then(|r| r.key.as_deref())
                    .and_then(|key| states.remove(key));
                (positions, chain, state)
            })
            .collect();
        let called: Vec<(Vec<usize>, Vec<Handled>)> = self.workers.install(|| {
            chains
                .into_par_iter()
                .map_init(
                    || caller.calls(),
                    |calls, (positions, chain, state)| {
                        (positions, Caller::call_chain(calls, chain, state))
                    },
                )
                .collect()
        });
        let mut placed: Vec<Option<Handled>> = (0..count).map(|_| None).collect();
        for (positions, chain) in called {
            for (position, handled) in positions.into_iter().zip(chain) {
                placed[position] = Some(handled);
            }
        }
        Some(placed.into_iter().flatten().collect())
    }

    /// Commit `batches` in a task: retried with capped backoff while the database is
    /// unavailable (a valid record is never skipped or dead-lettered because a dependency was
    /// down), given up only at shutdown.
    fn start_commit(&self, batches: Vec<TopicShare>, shutdown: &CancellationToken) -> Commit {
        let (pool, health, fence, metrics) = (
            self.pool.clone(),
            Arc::clone(&self.health),
            Arc::clone(&self.fence),
            Arc::clone(&self.metrics),
        );
        let shutdown = shutdown.clone();
        let task = self.runtime.spawn(async move {
            let _positions_move = fence.lock_owned().await;
            let mut reports = Vec::with_capacity(batches.len());
            for (batch, handled, caller) in &batches {
                let attempt = || async {
                    let started = Instant::now();
                    let report = apply::apply_batch(&pool, batch, handled, caller.as_ref()).await?;
                    metrics.observe_batch(&batch.topic, handled.len(), started.elapsed());
                    Ok::<_, sqlx::Error>(report)
                };
                let stuck = |e: &sqlx::Error| health.set_stuck(e.to_string());
                let report = backoff::retry("committing a batch", &shutdown, attempt, stuck).await?;
                health.committed(&report);
                count_outcomes(&metrics, batch, &report);
                tracing::debug!(topic = %batch.topic, plugin = %batch.plugin_version, applied = report.applied,
                                rejected = report.rejected, dead_lettered = report.dead_lettered,
                                duplicates = report.duplicates, stale = report.stale, "batch committed");
                reports.push((batch.topic.clone(), report));
            }
            Some(reports)
        });
        Commit { task }
    }

    /// Wait for a commit, then copy its positions to Kafka. While it takes long (the database
    /// is away), the assigned partitions are paused and the consumer keeps polling, so the
    /// group keeps this member; anything that still arrives is carried into the next batch.
    fn finish(
        &self,
        consumer: &IngestConsumer,
        mut commit: Commit,
        shutdown: &CancellationToken,
        carried: &mut Vec<Consumed>,
    ) {
        let mut paused = false;
        let reports = loop {
            let wait = tokio::time::timeout(PATIENCE, &mut commit.task);
            match self.runtime.block_on(wait) {
                Ok(joined) => {
                    break joined.unwrap_or_else(|e| {
                        tracing::error!(error = %e, "the commit task failed");
                        None
                    });
                }
                Err(_) => {
                    if !paused {
                        set_paused(consumer, true);
                        paused = true;
                    }
                    let until = Instant::now() + PATIENCE;
                    while Instant::now() < until && !shutdown.is_cancelled() {
                        let polled = consumer.poll(Duration::from_millis(100));
                        consumer.context().drop_revoked(carried);
                        match polled {
                            Some(Ok(message)) => carried.push(kafka::consumed(&message)),
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "consumer error while paused")
                            }
                            None => {}
                        }
                    }
                }
            }
        };
        if paused {
            set_paused(consumer, false);
            tracing::info!("batch committed after waiting; partitions resumed");
        }
        let Some(reports) = reports else {
            tracing::info!("ingest stopped with a batch uncommitted; it will be redelivered");
            return;
        };
        for (topic, report) in reports {
            if report.queued > 0 {
                self.relay_wake.notify_one();
            }
            if let Err(e) = consumer::commit_positions(consumer, &topic, &report.positions) {
                // Postgres holds the truth; Kafka's copy catches up with the next batch.
                tracing::warn!(error = %e, "copying positions to Kafka failed");
            }
        }
    }

    /// The active version of the plugin routed to `topic`, and its shadow candidate.
    fn plugin_for(&self, topic: &str) -> anyhow::Result<(Arc<Plugin>, Option<Arc<Plugin>>)> {
        let name = self
            .routes
            .plugin_for(topic)
            .ok_or_else(|| anyhow::anyhow!("no route for topic {topic}"))?;
        self.registry.active_and_shadow(name).ok_or_else(|| {
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
            dead_letter_topic: Some(self.kafka.dead_letter_topic(topic)),
            shadow_version: None,
            tables: self.tables.current(),
        }
    }
}

fn set_paused(consumer: &IngestConsumer, pause: bool) {
    let result = consumer.assignment().and_then(|assignment| {
        if pause {
            consumer.pause(&assignment)
        } else {
            consumer.resume(&assignment)
        }
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, pause, "changing partition pause state failed");
    }
}

fn count_outcomes(metrics: &Metrics, batch: &BatchContext, report: &BatchReport) {
    let (plugin, version) = (&batch.plugin, &batch.plugin_version);
    for (outcome, n) in [
        (Outcome::Applied, report.applied),
        (Outcome::Rejected, report.rejected),
        (Outcome::DeadLetter, report.dead_lettered),
        (Outcome::Duplicate, report.duplicates),
    ] {
        metrics.observe_records(plugin, version, outcome.label(), n);
    }
    metrics.observe_records(plugin, version, STALE, report.stale);
    for (topic, n) in &report.emitted {
        metrics.observe_emitted(topic, *n);
    }
    for ((table, op), n) in &report.table_writes {
        metrics.observe_table_writes(table, op.as_str(), *n);
    }
    metrics.called_again(plugin, report.recalled);
}

/// The `outcome` label of records already decided and read again (a replay, a rebalance).
const STALE: &str = "stale";

/// Split a polled batch by topic, keeping each partition's order.
fn by_topic(batch: Vec<Consumed>) -> Vec<(String, Vec<Consumed>)> {
    let mut groups: Vec<(String, Vec<Consumed>)> = Vec::new();
    for record in batch {
        match groups.iter_mut().find(|(topic, _)| *topic == record.topic) {
            Some((_, records)) => records.push(record),
            None => groups.push((record.topic.clone(), vec![record])),
        }
    }
    groups
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
