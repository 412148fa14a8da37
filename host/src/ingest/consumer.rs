//! The Kafka side of ingest: group membership (protocol, assignment, revocation), resuming
//! from Postgres positions on assignment, polling batches, and copying committed positions back
//! to Kafka.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use sqlx::PgPool;
use tokio::runtime::Handle;

use super::IngestSettings;
use crate::db;
use crate::domain::Consumed;
use crate::kafka::{self, KafkaSettings};
use crate::metrics::Metrics;

pub type IngestConsumer = BaseConsumer<IngestContext>;

/// How long a revocation waits for the commit in flight, so that the partition's next owner
/// starts from the position it wrote (past it, the new owner finds those records decided and
/// skips them: the stored position is the fence either way).
const REVOKE_PATIENCE: Duration = Duration::from_secs(5);

/// The consumer stopped for good (librdkafka's fatal error), with what to do about it.
pub fn fatal_error(consumer: &IngestConsumer) -> Option<anyhow::Error> {
    kafka::fatal_error(consumer.client())
        .map(|reason| anyhow::anyhow!("the Kafka consumer stopped: {reason}"))
}

/// Build the group consumer, not subscribed yet (`kafka::membership::Subscription` subscribes
/// it to the topics that exist). Offsets are never committed automatically: a position moves
/// only after the Postgres transaction that applied the messages before it has committed.
pub fn create(
    settings: &KafkaSettings,
    pool: PgPool,
    runtime: Handle,
    fence: Arc<tokio::sync::Mutex<()>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<IngestConsumer> {
    let context = IngestContext {
        pool,
        runtime,
        group_id: settings.group_id.clone(),
        fence,
        metrics,
        revoked: Mutex::new(Vec::new()),
        any_revoked: AtomicBool::new(false),
        metrics_topics: settings.routes.topics().map(str::to_string).collect(),
    };
    let mut config = kafka::member_config(settings, &settings.group_id, "sluice-ingest");
    if config.get("statistics.interval.ms").is_none() {
        // The consumer lag of `/metrics` comes from librdkafka's statistics: every second, so
        // that it shows a second or two after an assignment (the first fetch brings the end
        // offsets), not only after a long first interval.
        config.set("statistics.interval.ms", "1000");
    }
    config
        .create_with_context(context)
        .context("creating the Kafka consumer")
}

/// Consumer callbacks. Runs on the ingest thread, inside `poll`.
pub struct IngestContext {
    pool: PgPool,
    runtime: Handle,
    group_id: String,
    /// Held by the batch commit in flight: positions are read after it, not before.
    fence: Arc<tokio::sync::Mutex<()>>,
    metrics: Arc<Metrics>,
    /// Partitions revoked since the batch in hand was last checked: its records of these are
    /// dropped (their next owner reads them again from the stored position).
    revoked: Mutex<Vec<(String, i32)>>,
    any_revoked: AtomicBool,
    /// The subscribed topics: each one's owned-partition gauge, zero included.
    metrics_topics: Vec<String>,
}

impl ClientContext for IngestContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        kafka::log_client_line(level, facility, line);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        kafka::log_client_error(&error, reason);
    }

    /// librdkafka's periodic statistics: the lag of each assigned partition.
    fn stats(&self, statistics: Statistics) {
        let lag = &self.metrics.consumer_lag;
        lag.clear();
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // -1 is librdkafka's unassigned-partition queue.
                if *partition < 0 || !p.desired {
                    continue;
                }
                let behind = if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else if p.committed_offset < 0 && p.hi_offset >= 0 && p.lo_offset >= 0 {
                    // Nothing committed yet: every record the broker keeps is still to come.
                    p.hi_offset - p.lo_offset
                } else {
                    continue; // not known yet
                };
                lag.get_or_create(&[
                    ("topic", topic.clone()),
                    ("partition", partition.to_string()),
                ])
                .set(behind);
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.resume_from_stored_positions(tpl);
                tracing::info!(count = tpl.count(), partitions = %describe(tpl), "partitions assigned");
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let waited = self.hand_over(tpl);
                tracing::info!(count = tpl.count(), partitions = %describe(tpl),
                               lost = consumer.assignment_lost(),
                               waited_ms = waited.as_millis() as u64, "partitions revoked");
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "applying the new partition assignment failed");
        }
        self.count_changes(consumer, err, tpl.count());
    }
}

impl IngestContext {
    /// The partition metrics after a change of `count` partitions.
    fn count_changes(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, count: usize) {
        let change = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => "assigned",
            _ if consumer.assignment_lost() => "lost",
            _ => "revoked",
        };
        self.metrics
            .partition_changes
            .get_or_create(&[("change", change.to_string())])
            .inc_by(count as u64);
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let mut by_topic: BTreeMap<String, i64> = BTreeMap::new();
        for element in assignment.elements() {
            *by_topic.entry(element.topic().to_string()).or_default() += 1;
        }
        for topic in self.metrics_topics.iter() {
            let owned = by_topic.get(topic.as_str()).copied().unwrap_or(0);
            self.metrics
                .assigned_partitions
                .get_or_create(&[("topic", topic.clone())])
                .set(owned);
        }
    }

    /// Before `tpl` goes to its next owner: let the commit in flight finish (so that the next
    /// owner resumes after it) and mark the partitions so that the batch in hand drops their
    /// records. Partitions that stay are not touched. Returns how long it waited.
    fn hand_over(&self, tpl: &TopicPartitionList) -> Duration {
        {
            let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
            revoked.extend(
                tpl.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition())),
            );
        }
        self.any_revoked.store(true, Ordering::Release);
        let started = Instant::now();
        let fence = Arc::clone(&self.fence);
        let finished = self.runtime.block_on(async move {
            tokio::time::timeout(REVOKE_PATIENCE, fence.lock_owned())
                .await
                .is_ok()
        });
        if !finished {
            tracing::warn!(
                "the commit in flight outlasted the revocation; the next owner skips \
                            what it commits"
            );
        }
        started.elapsed()
    }

    /// Drop the records of partitions revoked since the last call.
    pub fn drop_revoked(&self, records: &mut Vec<Consumed>) {
        if !self.any_revoked.load(Ordering::Acquire) {
            return;
        }
        let revoked =
            std::mem::take(&mut *self.revoked.lock().unwrap_or_else(PoisonError::into_inner));
        self.any_revoked.store(false, Ordering::Release);
        let before = records.len();
        records.retain(|r| {
            !revoked
                .iter()
                .any(|(topic, partition)| *partition == r.partition && *topic == r.topic)
        });
        if records.len() < before {
            tracing::debug!(
                dropped = before - records.len(),
                "records of revoked partitions dropped from the batch in hand"
            );
        }
    }

    /// Point each assigned partition at the position stored in Postgres. If Postgres cannot
    /// be read, Kafka's committed offset (never ahead of Postgres) is used instead; messages
    /// already applied are then skipped inside the apply transaction.
    fn resume_from_stored_positions(&self, tpl: &mut TopicPartitionList) {
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for element in tpl.elements() {
            by_topic
                .entry(element.topic().to_string())
                .or_default()
                .push(element.partition());
        }
        for (topic, partitions) in by_topic {
            let load = async {
                // A commit in flight may still move these positions: wait for it.
                let _after_the_commit_in_flight = self.fence.lock().await;
                db::ingest::load_positions(&self.pool, &self.group_id, &topic, &partitions).await
            };
            let stored = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), load).await });
            match stored {
                Ok(Ok(stored)) => {
                    for (partition, next_offset) in stored {
                        if let Err(e) =
                            tpl.set_partition_offset(&topic, partition, Offset::Offset(next_offset))
                        {
                            tracing::warn!(%topic, partition, error = %e, "cannot set start offset");
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(%topic, error = %e, "cannot read stored positions; resuming from Kafka's")
                }
                Err(_) => {
                    tracing::warn!(%topic, "reading stored positions timed out; resuming from Kafka's")
                }
            }
        }
    }
}

/// Partitions as ranges per topic (`orders[0-15,32]`); each one with its start offset only
/// at debug level.
fn describe(tpl: &TopicPartitionList) -> String {
    let elements = tpl.elements();
    if tracing::enabled!(tracing::Level::DEBUG) {
        return elements
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => format!("{}[{}]@{o}", e.topic(), e.partition()),
                _ => format!("{}[{}]", e.topic(), e.partition()),
            })
            .collect::<Vec<_>>()
            .join(",");
    }
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for e in &elements {
        by_topic.entry(e.topic()).or_default().push(e.partition());
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| format!("{topic}[{}]", ranges(partitions)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `[0, 1, 2, 5, 7, 8]` → `0-2,5,7-8`.
fn ranges(mut partitions: Vec<i32>) -> String {
    partitions.sort_unstable();
    partitions.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for p in partitions.into_iter().map(Some).chain([None]) {
        match (run, p) {
            (Some((first, last)), Some(p)) if p == last + 1 => run = Some((first, p)),
            (previous, next) => {
                if let Some((first, last)) = previous {
                    out.push(if first == last {
                        first.to_string()
                    } else {
                        format!("{first}-{last}")
                    });
                }
                run = next.map(|p| (p, p));
            }
        }
    }
    out.join(",")
}

/// Starting from `batch` (records carried over), wait up to 100 ms for a first record, then
/// gather more until the batch is full or `batch_max_wait` has passed. Returns an empty batch
/// when nothing arrived.
pub fn poll_batch(
    consumer: &IngestConsumer,
    settings: &IngestSettings,
    mut batch: Vec<Consumed>,
) -> Vec<Consumed> {
    batch.reserve(settings.batch_max_messages.saturating_sub(batch.len()));
    let mut deadline: Option<Instant> =
        (!batch.is_empty()).then(|| Instant::now() + settings.batch_max_wait);
    while batch.len() < settings.batch_max_messages {
        let timeout = match deadline {
            None => Duration::from_millis(100),
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
        };
        let polled = consumer.poll(timeout);
        // A revocation runs inside `poll`: what was gathered before it may belong to another
        // member now.
        consumer.context().drop_revoked(&mut batch);
        match polled {
            Some(Ok(message)) => {
                batch.push(kafka::consumed(&message));
                deadline.get_or_insert_with(|| Instant::now() + settings.batch_max_wait);
            }
            Some(Err(e)) => {
                // librdkafka retries broker errors itself; nothing here is lost.
                tracing::warn!(error = %e, "Kafka consumer error");
                break;
            }
            None if deadline.is_none() || timeout.is_zero() => break,
            None => {}
        }
    }
    batch
}

/// Copy committed positions to Kafka, for lag monitoring and as a fallback start point.
pub fn commit_positions(
    consumer: &IngestConsumer,
    topic: &str,
    positions: &[(i32, i64)],
) -> KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    for &(partition, next_offset) in positions {
        tpl.add_partition_offset(topic, partition, Offset::Offset(next_offset))?;
    }
    consumer.commit(&tpl, CommitMode::Async)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_read_as_ranges() {
        assert_eq!(ranges(vec![5, 0, 1, 2, 7, 8, 8]), "0-2,5,7-8");
        assert_eq!(ranges((0..64).collect()), "0-63");
        assert_eq!(ranges(vec![3]), "3");
        assert_eq!(ranges(Vec::new()), "");
    }
}
