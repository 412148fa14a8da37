//! The outbox relay: claim rows `FOR UPDATE SKIP LOCKED`, publish their records in id order
//! with an idempotent producer, delete the rows once the broker acknowledged them. A crash in
//! between republishes; consumers dedupe by the `event-id` header.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
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

pub fn create_producer(settings: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    kafka::producer_config(settings, "sluice-relay")
        .create()
        .context("creating the Kafka producer")
}

pub struct Relay {
    pub pool: PgPool,
    pub producer: FutureProducer,
    /// Notified after each commit that queued records, so they go out at once.
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

impl Relay {
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            let published =
                backoff::retry("outbox relay", &shutdown, || self.publish_rows(), |_| {}).await;
            let Some(rows) = published else {
                break;
            };
            if rows as i64 == ROWS {
                continue; // more are waiting
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

    /// Publish up to `ROWS` rows; returns how many rows were published and deleted.
    #[tracing::instrument(skip_all)]
    async fn publish_rows(&self) -> anyhow::Result<usize> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("starting outbox transaction")?;
        let rows = db::outbox::claim(&mut tx, ROWS)
            .await
            .context("claiming outbox rows")?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Every record of every row in flight at once; the producer keeps their order.
        let mut sends = Vec::new();
        for (row, claimed) in rows.iter().enumerate() {
            match &claimed.records {
                Ok(records) => sends.extend(records.iter().map(|record| (row, self.send(record)))),
                Err(e) => tracing::error!(outbox_id = claimed.id, error = %e,
                                          "dropping an outbox row that cannot be decoded"),
            }
        }
        let (row_of, deliveries): (Vec<usize>, Vec<_>) = sends.into_iter().unzip();
        let results = join_all(deliveries).await;
        let mut failed = vec![false; rows.len()];
        let mut first_error = None;
        for (row, result) in row_of.into_iter().zip(results) {
            match result {
                Ok(_) => {}
                Err(e) if is_permanent(&e) => {
                    // It can never be published; retrying would only block the log.
                    tracing::error!(outbox_id = rows[row].id, error = %e,
                                    "dropping an outbox record the broker can never accept");
                }
                Err(e) => {
                    failed[row] = true;
                    first_error.get_or_insert(e);
                }
            }
        }
        // A row goes when all its records were acknowledged; a row with a failure stays and
        // is republished whole (consumers dedupe).
        let now = chrono::Utc::now();
        let mut acked = Vec::with_capacity(rows.len());
        for (claimed, _) in rows.iter().zip(&failed).filter(|(_, failed)| !**failed) {
            let latency = (now - claimed.created_at).to_std().unwrap_or_default();
            self.metrics.outbox_publish.observe(latency.as_secs_f64());
            acked.push(claimed.id);
        }
        db::outbox::delete(&mut tx, &acked)
            .await
            .context("deleting published rows")?;
        tx.commit().await.context("committing outbox transaction")?;
        tracing::debug!(rows = acked.len(), "outbox rows published");
        match first_error {
            None => Ok(acked.len()),
            Some(e) => Err(anyhow::Error::new(e).context(format!(
                "{} of {} outbox rows not acknowledged",
                rows.len() - acked.len(),
                rows.len()
            ))),
        }
    }

    /// Produce one record; `Ok` once the broker acknowledged it.
    async fn send(&self, record: &Record) -> Result<(), KafkaError> {
        let mut kafka_record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&record.topic).headers(kafka::owned_headers(&record.headers));
        if let Some(key) = &record.key {
            kafka_record = kafka_record.key(key.as_slice());
        }
        if let Some(payload) = &record.payload {
            kafka_record = kafka_record.payload(payload.as_slice());
        }
        self.producer
            .send(kafka_record, Duration::from_secs(10))
            .await
            .map(drop)
            .map_err(|(e, _)| e)
    }
}

fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}
