//! Orders flow, last step: the catalog side's verdicts come back on the status topic and
//! update the orders. The two sides share no tables, only Kafka, as the original services did.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message as _};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::KafkaSettings;
use crate::db;
use crate::domain::StatusEvent;

const BATCH: usize = 500;
const RETRY_MAX: Duration = Duration::from_secs(5);

pub fn create_consumer(kafka: &KafkaSettings) -> anyhow::Result<StreamConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.orders_group_id)
        .set("client.id", "sluice-order-status")
        .set("enable.auto.commit", "true")
        // Offsets are stored only after the update committed: at least once, and the update
        // is idempotent.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    for (key, value) in kafka.consumer_defaults.iter().chain(&kafka.options) {
        config.set(key, value);
    }
    let consumer: StreamConsumer = config.create().context("creating the status consumer")?;
    consumer
        .subscribe(&[&kafka.status_topic])
        .with_context(|| format!("subscribing to {}", kafka.status_topic))?;
    Ok(consumer)
}

pub async fn run(
    consumer: StreamConsumer,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            received = consumer.recv() => received,
        };
        let first = match first {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, "status consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match tokio::time::timeout(Duration::from_millis(5), consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        if !apply_with_retry(&pool, &batch, &shutdown).await {
            break;
        }
        for message in &batch {
            if let Err(e) = consumer.store_offset_from_message(message) {
                tracing::warn!(error = %e, "storing status offset failed");
            }
        }
    }
    tracing::info!("status consumer stopped");
    Ok(())
}

/// `false` if shutdown came first.
async fn apply_with_retry(
    pool: &PgPool,
    batch: &[BorrowedMessage<'_>],
    shutdown: &CancellationToken,
) -> bool {
    let events: Vec<StatusEvent> = batch.iter().filter_map(parse).collect();
    let mut delay = Duration::from_millis(100);
    loop {
        match apply(pool, &events).await {
            Ok(updated) => {
                tracing::debug!(events = events.len(), updated, "order statuses updated");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "updating order statuses failed; will retry")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

fn parse(message: &BorrowedMessage<'_>) -> Option<StatusEvent> {
    let parsed = serde_json::from_slice(message.payload().unwrap_or_default());
    if let Err(e) = &parsed {
        tracing::warn!(partition = message.partition(), offset = message.offset(), error = %e,
                       "ignoring a status record that is not a status event");
    }
    parsed.ok()
}

async fn apply(pool: &PgPool, events: &[StatusEvent]) -> sqlx::Result<usize> {
    let mut tx = pool.begin().await?;
    let mut updated = 0;
    for event in events {
        // Event ids that are not order ids come from producers other than this service.
        let Ok(order_id) = Uuid::parse_str(&event.order_id) else {
            continue;
        };
        let changed = db::orders::record_status(
            &mut tx,
            order_id,
            event.status.as_str(),
            event.reason.as_deref(),
            &event.plugin,
            &event.plugin_version,
            event.redriven,
        )
        .await?;
        updated += usize::from(changed);
    }
    tx.commit().await?;
    Ok(updated)
}
