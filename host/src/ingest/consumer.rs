//! The Kafka side of ingest: consumer configuration, resuming from Postgres positions on
//! assignment, polling batches, and copying committed positions back to Kafka.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
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

/// Build the group consumer. Offsets are never committed automatically: a position moves
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
    };
    let mut config = kafka::consumer_config(settings, &settings.group_id, "sluice-ingest");
    if config.get("statistics.interval.ms").is_none() {
        // The consumer lag of `/metrics` comes from librdkafka's statistics: every second, so
        // that it shows a second or two after an assignment (the first fetch brings the end
        // offsets), not only after a long first interval.
        config.set("statistics.interval.ms", "1000");
    }
    let consumer: IngestConsumer = config
        .create_with_context(context)
        .context("creating the Kafka consumer")?;
    let topics: Vec<&str> = settings.routes.topics().collect();
    consumer
        .subscribe(&topics)
        .with_context(|| format!("subscribing to {topics:?}"))?;
    Ok(consumer)
}

/// Consumer callbacks. Runs on the ingest thread, inside `poll`.
pub struct IngestContext {
    pool: PgPool,
    runtime: Handle,
    group_id: String,
    /// Held by the batch commit in flight: positions are read after it, not before.
    fence: Arc<tokio::sync::Mutex<()>>,
    metrics: Arc<Metrics>,
}

impl ClientContext for IngestContext {
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
                tracing::info!(count = tpl.count(), partitions = %describe(tpl), "partitions revoked");
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
    }
}

impl IngestContext {
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
        match consumer.poll(timeout) {
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
