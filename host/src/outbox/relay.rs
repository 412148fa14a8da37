//! The outbox relay: claim rows `FOR UPDATE SKIP LOCKED`, publish their records in id order
//! with an idempotent producer, delete the rows once the broker acknowledged them. A crash in
//! between republishes; consumers dedupe by the `event-id` header.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff;
use crate::db;
use crate::domain::Record;
use crate::kafka::{self, KafkaSettings};
use crate::metrics::Metrics;

/// Rows claimed per transaction: an order's row holds one record, an ingest batch's row up
/// to a batch of them.
const ROWS: i64 = 500;
/// How often the relay looks for rows when nobody woke it (rows of other instances, rows
/// left by a crash).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long a record may wait for room in the producer's queue before the round fails.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// While busy, a round starts no sooner than this much per record of the round before after
/// that one began, up to the configured longest linger.
const LINGER_PER_RECORD: Duration = Duration::from_micros(100);

/// How the relay paces its rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    /// The longest a round waits after the one before began (while busy; zero: never waits).
    /// Under load the relay then sends fewer, larger produce requests: a batch per partition
    /// fewer for the broker to store and serve to every consumer, larger batches downstream.
    /// At low rates a round of a few records waits for nothing.
    pub max_linger: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            max_linger: Duration::from_millis(100),
        }
    }
}

impl RelaySettings {
    /// How long after a round of `records` began the next one may start.
    fn linger(&self, records: usize) -> Duration {
        LINGER_PER_RECORD
            .saturating_mul(u32::try_from(records).unwrap_or(u32::MAX))
            .min(self.max_linger)
    }
}

/// The relay's producer: delivery reports count down the round in flight (one wake-up per
/// round, not a future per record).
pub type RelayProducer = ThreadedProducer<Deliveries>;

pub fn create_producer(settings: &KafkaSettings) -> anyhow::Result<RelayProducer> {
    kafka::producer_config(settings, "sluice-relay")
        .create_with_context(Deliveries::default())
        .context("creating the Kafka producer")
}

/// The delivery reports of the round of rows in flight. A record's opaque is its round's
/// number and its row's index; a report of an earlier round (one given up on) is ignored.
#[derive(Default)]
pub struct Deliveries {
    round: Mutex<Round>,
    /// Notified when the round's last report arrives.
    done: Notify,
}

#[derive(Default)]
struct Round {
    number: u32,
    /// Records sent and not yet reported.
    pending: usize,
    /// The rows' outbox ids, for the log.
    ids: Vec<i64>,
    /// Rows with a record the broker did not acknowledge, with the first such error.
    failed: Vec<bool>,
    first_error: Option<KafkaError>,
}

impl Round {
    fn report(&mut self, row: usize, error: Option<&KafkaError>) -> bool {
        if let Some(error) = error {
            if let Some(failed) = self.failed.get_mut(row) {
                *failed = true;
            }
            self.first_error.get_or_insert_with(|| error.clone());
        }
        self.pending = self.pending.saturating_sub(1);
        self.pending == 0
    }
}

impl Deliveries {
    fn lock(&self) -> std::sync::MutexGuard<'_, Round> {
        // The lock guards counters only: a panic while it was held leaves nothing half-done.
        self.round.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn opaque(round: u32, row: usize) -> usize {
    ((round as usize) << 32) | (row & 0xffff_ffff)
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        kafka::log_client_line(level, facility, line);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        kafka::log_client_error(&error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (error, permanent) = match result {
            Ok(_) => (None, None),
            // It can never be published; retrying would only block the log.
            Err((e, _)) if is_permanent(e) => (None, Some(e)),
            Err((e, _)) => (Some(e), None),
        };
        let row = opaque & 0xffff_ffff;
        let mut round = self.lock();
        if (opaque >> 32) as u32 != round.number {
            return; // a round given up on
        }
        let outbox_id = round.ids.get(row).copied();
        let last = round.report(row, error);
        drop(round);
        if let Some(e) = permanent {
            tracing::error!(outbox_id, error = %e,
                            "dropping an outbox record the broker can never accept");
        }
        if last {
            self.done.notify_one();
        }
    }
}

pub struct Relay {
    pub pool: PgPool,
    pub producer: RelayProducer,
    /// Notified after each commit that queued records, so they go out at once (while busy, once
    /// the round before has lingered).
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub settings: RelaySettings,
}

impl Relay {
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            let began = tokio::time::Instant::now();
            let published =
                backoff::retry("outbox relay", &shutdown, || self.publish_rows(), |_| {}).await;
            let Some(Published { rows, records }) = published else {
                break;
            };
            if rows as i64 == ROWS {
                continue; // more are waiting
            }
            // Busy: let the next round gather what arrives meanwhile (a commit in the
            // meantime leaves its wake-up stored, so the round below starts at once).
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(began + self.settings.linger(records)) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
        // Last chance for events committed just before shutdown; what is left stays in the
        // outbox for the next start.
        if let Err(e) = self.publish_rows().await {
            tracing::warn!(error = %format!("{e:#}"), "final outbox publish failed; rows stay for the next start");
        }
        self.producer
            .flush(Duration::from_secs(5))
            .context("flushing the producer")?;
        tracing::info!("outbox relay stopped");
        Ok(())
    }

    /// Publish up to `ROWS` rows; returns how many rows (and their records) were published
    /// and deleted.
    #[tracing::instrument(skip_all)]
    async fn publish_rows(&self) -> anyhow::Result<Published> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("starting outbox transaction")?;
        let rows = db::outbox::claim(&mut tx, ROWS)
            .await
            .context("claiming outbox rows")?;
        if rows.is_empty() {
            return Ok(Published::default());
        }
        let (failed, first_error) = self.publish(&rows).await;
        // A row goes when all its records were acknowledged; a row with a failure stays and
        // is republished whole (consumers dedupe).
        let now = chrono::Utc::now();
        let mut acked = Vec::with_capacity(rows.len());
        let mut records = 0;
        for (claimed, _) in rows.iter().zip(&failed).filter(|(_, failed)| !**failed) {
            let latency = (now - claimed.created_at).to_std().unwrap_or_default();
            self.metrics.outbox_publish.observe(latency.as_secs_f64());
            acked.push(claimed.id);
            records += claimed.records.as_ref().map_or(0, Vec::len);
        }
        db::outbox::delete(&mut tx, &acked)
            .await
            .context("deleting published rows")?;
        tx.commit().await.context("committing outbox transaction")?;
        tracing::debug!(rows = acked.len(), "outbox rows published");
        match first_error {
            None => Ok(Published {
                rows: acked.len(),
                records,
            }),
            Some(e) => Err(anyhow::Error::new(e).context(format!(
                "{} of {} outbox rows not acknowledged",
                rows.len() - acked.len(),
                rows.len()
            ))),
        }
    }

    /// Every record of every row in flight at once (the producer keeps their order); returns
    /// once the broker answered for each: which rows have a record it did not acknowledge,
    /// and the first such error.
    async fn publish(&self, rows: &[db::outbox::Claimed]) -> (Vec<bool>, Option<KafkaError>) {
        let deliveries = self.producer.context();
        let records: usize = rows
            .iter()
            .filter_map(|row| row.records.as_ref().ok())
            .map(Vec::len)
            .sum();
        let number = {
            let mut round = deliveries.lock();
            let number = round.number.wrapping_add(1);
            *round = Round {
                number,
                pending: records,
                ids: rows.iter().map(|row| row.id).collect(),
                failed: vec![false; rows.len()],
                first_error: None,
            };
            number
        };
        'rows: for (index, claimed) in rows.iter().enumerate() {
            let records = match &claimed.records {
                Ok(records) => records,
                Err(e) => {
                    tracing::error!(outbox_id = claimed.id, error = %e,
                                    "dropping an outbox row that cannot be decoded");
                    continue;
                }
            };
            for (sent, record) in records.iter().enumerate() {
                let error = match self.send(record, opaque(number, index)).await {
                    Ok(()) => continue,
                    Err(e) => e,
                };
                let mut round = deliveries.lock();
                if is_permanent(&error) {
                    // Refused before it was queued (larger than the producer's
                    // `message.max.bytes`): it can never be published, and no report will
                    // come for it.
                    round.pending = round.pending.saturating_sub(1);
                    drop(round);
                    tracing::error!(outbox_id = claimed.id, error = %error,
                                    "dropping an outbox record the broker can never accept");
                    continue;
                }
                // The rest of this round is not sent: its rows stay for the next one.
                let unsent = records.len() - sent
                    + rows[index + 1..]
                        .iter()
                        .filter_map(|row| row.records.as_ref().ok())
                        .map(Vec::len)
                        .sum::<usize>();
                round.pending = round.pending.saturating_sub(unsent);
                for failed in &mut round.failed[index..] {
                    *failed = true;
                }
                round.first_error.get_or_insert(error);
                break 'rows;
            }
        }
        loop {
            let done = deliveries.done.notified();
            {
                let mut round = deliveries.lock();
                if round.pending == 0 {
                    return (std::mem::take(&mut round.failed), round.first_error.take());
                }
            }
            done.await;
        }
    }

    /// Hand one record to the producer, waiting for room in its queue.
    async fn send(&self, record: &Record, opaque: usize) -> Result<(), KafkaError> {
        let mut kafka_record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&record.topic, opaque)
                .headers(kafka::owned_headers(&record.headers));
        if let Some(key) = &record.key {
            kafka_record = kafka_record.key(key.as_slice());
        }
        if let Some(payload) = &record.payload {
            kafka_record = kafka_record.payload(payload.as_slice());
        }
        let deadline = Instant::now() + QUEUE_TIMEOUT;
        loop {
            match self.producer.send(kafka_record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    kafka_record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// What a round published.
#[derive(Debug, Default, Clone, Copy)]
struct Published {
    rows: usize,
    records: usize,
}

fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_lingers_by_its_records_up_to_the_limit() {
        let settings = RelaySettings::default();
        assert_eq!(settings.linger(0), Duration::ZERO);
        // A round of a few records (a low rate): under a millisecond, less than a round takes.
        assert_eq!(settings.linger(5), Duration::from_micros(500));
        assert_eq!(settings.linger(400), Duration::from_millis(40));
        assert_eq!(settings.linger(1_000_000), settings.max_linger);
        assert_eq!(settings.linger(usize::MAX), settings.max_linger);
        let never = RelaySettings {
            max_linger: Duration::ZERO,
        };
        assert_eq!(never.linger(10_000), Duration::ZERO);
    }
}
