//! Orders flow, last step: the catalog side's verdicts come back on the status topic and
//! update the orders. The two sides share no tables, only Kafka, as the original services did.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message as _};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff;
use crate::db;
use crate::domain::StatusEvent;
use crate::kafka::{self, KafkaSettings};
use crate::otlp;
use crate::trace::TraceParent;

const BATCH: usize = 1000;

pub fn create_consumer(settings: &KafkaSettings) -> anyhow::Result<StreamConsumer> {
    // Offsets are committed only after the update committed: at least once, and the update
    // is idempotent.
    let consumer: StreamConsumer =
        kafka::consumer_config(settings, &settings.orders_group_id, "sluice-order-status")
            .create()
            .context("creating the status consumer")?;
    consumer
        .subscribe(&[&settings.status_topic])
        .with_context(|| format!("subscribing to {}", settings.status_topic))?;
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
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
            tracing::debug!(error = %e, "committing status offsets failed; the next batch will");
        }
    }
    tracing::info!("status consumer stopped");
    Ok(())
}

/// One span per verdict that carries a trace context (the processing span of its record):
/// from its arrival to the order's update.
fn export_spans(batch: &[BorrowedMessage<'_>], received: SystemTime) {
    let updated = SystemTime::now();
    for message in batch {
        let Some(parent) = TraceParent::from_headers(&kafka::headers_of(message)) else {
            continue;
        };
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        otlp::export(otlp::Span::kafka_process(
            parent.child(),
            parent,
            (message.topic(), message.partition(), message.offset()),
            (received, updated),
            [("sluice.order_id", key.into())],
        ));
    }
}

/// `false` if shutdown came first.
async fn apply_with_retry(
    pool: &PgPool,
    batch: &[BorrowedMessage<'_>],
    shutdown: &CancellationToken,
) -> bool {
    let received = SystemTime::now();
    let events: Vec<StatusEvent> = batch.iter().filter_map(parse).collect();
    if tracing::enabled!(tracing::Level::DEBUG) {
        for message in batch {
            let headers = kafka::headers_of(message);
            let trace_id = TraceParent::from_headers(&headers).map(|t| t.trace_id());
            tracing::debug!(
                trace_id = trace_id.unwrap_or_default(),
                partition = message.partition(),
                offset = message.offset(),
                "order verdict received"
            );
        }
    }
    let updated = backoff::retry(
        "updating order statuses",
        shutdown,
        || apply(pool, &events),
        |_| {},
    )
    .await;
    let Some(updated) = updated else {
        return false;
    };
    tracing::debug!(events = events.len(), updated, "order statuses updated");
    if otlp::enabled() {
        export_spans(batch, received);
    }
    true
}

fn parse(message: &BorrowedMessage<'_>) -> Option<StatusEvent> {
    let parsed = serde_json::from_slice(message.payload().unwrap_or_default());
    if let Err(e) = &parsed {
        tracing::warn!(partition = message.partition(), offset = message.offset(), error = %e,
                       "ignoring a status record that is not a status event");
    }
    parsed.ok()
}

/// Record the verdicts in one transaction: orders that appear once in one statement, an order
/// with several verdicts here (a rejection, then its redrive) one verdict at a time, in order.
async fn apply(pool: &PgPool, events: &[StatusEvent]) -> sqlx::Result<usize> {
    // Event ids that are not order ids come from producers other than this service.
    let verdicts: Vec<(Uuid, &StatusEvent)> = events
        .iter()
        .filter_map(|e| Uuid::parse_str(&e.order_id).ok().map(|id| (id, e)))
        .collect();
    let mut count: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
    for (id, _) in &verdicts {
        *count.entry(*id).or_default() += 1;
    }
    let (single, repeated): (Vec<_>, Vec<_>) =
        verdicts.into_iter().partition(|(id, _)| count[id] == 1);
    let mut tx = pool.begin().await?;
    let mut updated = db::orders::record_statuses(&mut tx, &single).await?;
    for verdict in repeated {
        updated += db::orders::record_statuses(&mut tx, &[verdict]).await?;
    }
    tx.commit().await?;
    Ok(updated)
}
