//! The outbox relay: claim rows `FOR UPDATE SKIP LOCKED`, publish them in id order with an
//! idempotent producer, delete them once the broker acknowledged. A crash in between
//! republishes; consumers dedupe by the `event-id` header.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::db;

/// Rows published per transaction.
const BATCH: i64 = 500;
/// How often the relay looks for rows when nobody woke it (rows of other instances, rows
/// left by a crash).
const IDLE_POLL: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub fn create_producer(kafka: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", "sluice-relay")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    for (key, value) in &kafka.options {
        config.set(key, value);
    }
    config.create().context("creating the Kafka producer")
}

pub struct Relay {
    pub pool: PgPool,
    pub producer: FutureProducer,
    /// Notified by the order handler after each commit, so events go out at once.
    pub wake: Arc<Notify>,
}

impl Relay {
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let pause = match self.publish_batch().await {
                Ok(published) if published as i64 == BATCH => Duration::ZERO,
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    IDLE_POLL
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "outbox relay failed; will retry");
                    let pause = backoff;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    pause
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified(), if !pause.is_zero() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        // Last chance for events committed just before shutdown; what is left stays in the
        // outbox for the next start.
        if let Err(e) = self.publish_batch().await {
            tracing::warn!(error = %format!("{e:#}"), "final outbox publish failed; rows stay for the next start");
        }
        self.producer
            .flush(Duration::from_secs(5))
            .context("flushing the producer")?;
        tracing::info!("outbox relay stopped");
        Ok(())
    }

    /// Publish up to `BATCH` rows; returns how many were published and deleted.
    #[tracing::instrument(skip_all)]
    async fn publish_batch(&self) -> anyhow::Result<usize> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("starting outbox transaction")?;
        let rows = db::outbox::claim(&mut tx, BATCH)
            .await
            .context("claiming outbox rows")?;
        if rows.is_empty() {
            return Ok(0);
        }
        let deliveries = rows.iter().map(|(_, record)| {
            let headers = record.headers.iter().fold(
                OwnedHeaders::new_with_capacity(record.headers.len()),
                |headers, h| {
                    headers.insert(Header {
                        key: &h.key,
                        value: h.value.as_deref(),
                    })
                },
            );
            let mut kafka_record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&record.topic).headers(headers);
            if let Some(key) = &record.key {
                kafka_record = kafka_record.key(key.as_slice());
            }
            if let Some(payload) = &record.payload {
                kafka_record = kafka_record.payload(payload.as_slice());
            }
            self.producer.send(kafka_record, Duration::from_secs(10))
        });
        let results = join_all(deliveries).await;
        let mut acked = Vec::with_capacity(rows.len());
        let mut first_error = None;
        for ((id, record), result) in rows.iter().zip(results) {
            match result {
                Ok(_) => acked.push(*id),
                Err((e, _)) if is_permanent(&e) => {
                    // It can never be published; retrying would only block the log.
                    tracing::error!(outbox_id = id, topic = %record.topic, error = %e,
                                    "dropping an outbox record the broker can never accept");
                    acked.push(*id);
                }
                Err((e, _)) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        db::outbox::delete(&mut tx, &acked)
            .await
            .context("deleting published rows")?;
        tx.commit().await.context("committing outbox transaction")?;
        tracing::debug!(published = acked.len(), "outbox rows published");
        match first_error {
            None => Ok(acked.len()),
            Some(e) => Err(anyhow::Error::new(e).context(format!(
                "{} of {} events not acknowledged",
                rows.len() - acked.len(),
                rows.len()
            ))),
        }
    }
}

fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}
