//! Orders flow, last step: the catalog side's verdicts come back on the status topic and
//! update the orders. The two sides share no tables, only Kafka, as the original services did.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message as _};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff;
use crate::db;
use crate::domain::{StatusEvent, decode_verdicts};
use crate::kafka::membership::{self, GroupProtocolChoice, Subscription};
use crate::kafka::topics::Seen;
use crate::kafka::{self, Logged};
use crate::otlp;
use crate::trace::TraceParent;
use crate::waiting::{Flow, Waits};

const BATCH: usize = 1000;

type StatusConsumer = StreamConsumer<Logged>;

/// Where the verdicts come from, and what the consumer of them waits for.
pub struct StatusSource {
    pub topic: String,
    pub topics: watch::Receiver<Seen>,
    pub protocol: Arc<GroupProtocolChoice>,
    pub waits: Arc<Waits>,
}

/// The consumer of `source`'s topic, once it exists; `None` if shutdown came first.
async fn join(
    source: &mut StatusSource,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(StatusConsumer, Subscription)>> {
    let wanted = vec![source.topic.clone()];
    let Some(settings) = membership::ready_to_join(
        &source.protocol,
        &mut source.topics,
        &wanted,
        (&source.waits, Flow::OrderStatus),
        shutdown,
    )
    .await
    else {
        return Ok(None);
    };
    // Offsets are committed only after the update committed: at least once, and the update
    // is idempotent.
    let consumer: StatusConsumer =
        kafka::member_config(&settings, &settings.orders_group_id, "sluice-order-status")
            .create_with_context(Logged)
            .context("creating the status consumer")?;
    let subscription = Subscription::new(wanted, source.topics.clone(), Flow::OrderStatus);
    Ok(Some((consumer, subscription)))
}

pub async fn run(
    mut source: StatusSource,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some((consumer, mut subscription)) = join(&mut source, &shutdown).await? else {
        return Ok(());
    };
    let mut tend = tokio::time::interval(kafka::topics::WHILE_MISSING);
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tend.tick() => {
                subscription
                    .tend(&consumer, &source.waits)
                    .with_context(|| format!("subscribing to {}", source.topic))?;
                continue;
            }
            received = consumer.recv() => received,
        };
        let first = match first {
            Ok(message) => message,
            Err(e) => {
                if let Some(reason) = kafka::fatal_error(consumer.client()) {
                    anyhow::bail!("the status consumer stopped: {reason}");
                }
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

/// A status record's verdicts, with where the record was.
struct Received {
    verdicts: Vec<StatusEvent>,
    topic: String,
    partition: i32,
    offset: i64,
}

/// One span per verdict that carries a trace context (the processing span of its record):
/// from its arrival to the order's update.
fn export_spans(received: &[Received], arrived: SystemTime) {
    let updated = SystemTime::now();
    for record in received {
        for verdict in &record.verdicts {
            let Some(parent) = verdict.trace.as_deref().and_then(TraceParent::parse) else {
                continue;
            };
            otlp::export(otlp::Span::kafka_process(
                parent.child(),
                parent,
                (&record.topic, record.partition, record.offset),
                (arrived, updated),
                [("sluice.order_id", verdict.order_id.clone().into())],
            ));
        }
    }
}

/// `false` if shutdown came first.
async fn apply_with_retry(
    pool: &PgPool,
    batch: &[BorrowedMessage<'_>],
    shutdown: &CancellationToken,
) -> bool {
    let arrived = SystemTime::now();
    let received: Vec<Received> = batch.iter().filter_map(parse).collect();
    if tracing::enabled!(tracing::Level::DEBUG) {
        for verdict in received.iter().flat_map(|r| &r.verdicts) {
            let trace_id = verdict
                .trace
                .as_deref()
                .and_then(TraceParent::parse)
                .map(|t| t.trace_id());
            tracing::debug!(
                trace_id = trace_id.unwrap_or_default(),
                order_id = %verdict.order_id,
                "order verdict received"
            );
        }
    }
    let events: Vec<&StatusEvent> = received.iter().flat_map(|r| &r.verdicts).collect();
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
        export_spans(&received, arrived);
    }
    true
}

fn parse(message: &BorrowedMessage<'_>) -> Option<Received> {
    match decode_verdicts(message.payload().unwrap_or_default()) {
        Ok(verdicts) => Some(Received {
            verdicts,
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
        }),
        Err(e) => {
            tracing::warn!(partition = message.partition(), offset = message.offset(), error = %e,
                           "ignoring a status record that holds no verdicts");
            None
        }
    }
}

/// Record the verdicts in one transaction: orders that appear once in one statement, an order
/// with several verdicts here (a rejection, then its redrive) one verdict at a time, in order.
async fn apply(pool: &PgPool, events: &[&StatusEvent]) -> sqlx::Result<usize> {
    // Event ids that are not order ids come from producers other than this service.
    let verdicts: Vec<(Uuid, &StatusEvent)> = events
        .iter()
        .filter_map(|e| Uuid::parse_str(&e.order_id).ok().map(|id| (id, *e)))
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
