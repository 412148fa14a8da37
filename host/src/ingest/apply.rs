//! The one transaction of ingest: a batch's mutations, every record's outcome, dead letters,
//! status events, seen event ids and the consumer positions commit together or not at all.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rdkafka::Message as _;
use rdkafka::message::{Headers as _, OwnedMessage};
use sqlx::PgPool;

use crate::db;
use crate::db::ingest::{DeadLetterRow, Outcomes};
use crate::db::outbox::{Header, Record};
use crate::domain::{EVENT_ID_HEADER, Mutation, OrderStatus, StatusEvent};
use crate::runtime::HandleError;

/// One consumed record after its plugin ran.
#[derive(Debug)]
pub struct Handled {
    pub message: OwnedMessage,
    pub event_id: Option<String>,
    pub result: Result<Vec<Mutation>, HandleError>,
}

/// Everything a batch is applied for: where it came from, who handled it, where its
/// side records go.
#[derive(Debug, Clone)]
pub struct BatchContext {
    pub group_id: String,
    pub topic: String,
    pub plugin: String,
    pub plugin_version: String,
    /// Where each decided order's outcome is reported (`None`: not reported).
    pub status_topic: Option<String>,
    /// Where poison records are copied (`None`: table only).
    pub dead_letter_topic: Option<String>,
}

/// What one committed batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub applied: usize,
    pub rejected: usize,
    pub dead_lettered: usize,
    pub duplicates: usize,
    /// Records at or behind the stored position (or replayed within the batch): already
    /// decided, skipped.
    pub stale: usize,
    /// Records queued in the outbox (status events, dead-letter copies).
    pub queued: usize,
    /// Partition → next offset, as now stored.
    pub positions: Vec<(i32, i64)>,
}

/// What happens to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Applied,
    /// A business refusal: the plugin's `rejected`, an unknown product, not enough stock.
    Rejected {
        kind: &'static str,
        reason: String,
    },
    /// Poison: the plugin could not handle the record (invalid input, trap, deadline,
    /// output the host refuses).
    DeadLetter {
        kind: &'static str,
        reason: String,
    },
    Duplicate,
}

impl Decision {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Applied => "APPLIED",
            Self::Rejected { .. } => "REJECTED",
            Self::DeadLetter { .. } => "DEAD_LETTER",
            Self::Duplicate => "DUPLICATE",
        }
    }

    /// The order's status this decision implies.
    pub(crate) fn order_status(&self) -> OrderStatus {
        match self {
            Self::Applied => OrderStatus::Applied,
            _ => OrderStatus::Rejected,
        }
    }

    fn kind_and_reason(&self) -> (Option<&'static str>, Option<&str>) {
        match self {
            Self::Rejected { kind, reason } | Self::DeadLetter { kind, reason } => {
                (Some(kind), Some(reason))
            }
            Self::Applied | Self::Duplicate => (None, None),
        }
    }

    /// The decision for a plugin failure.
    pub fn from_error(error: &HandleError) -> Self {
        match error {
            HandleError::Rejected(_) => Self::Rejected {
                kind: error.kind(),
                reason: error.to_string(),
            },
            _ => Self::DeadLetter {
                kind: error.kind(),
                reason: error.to_string(),
            },
        }
    }
}

/// Apply a batch of one topic's records, in per-partition offset order.
#[tracing::instrument(skip_all, fields(topic = %cx.topic, records = batch.len()))]
pub async fn apply_batch(
    pool: &PgPool,
    cx: &BatchContext,
    batch: &[Handled],
) -> sqlx::Result<BatchReport> {
    let mut tx = pool.begin().await?;

    let partitions: Vec<i32> = batch
        .iter()
        .map(|h| h.message.partition())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Locks the positions: from here on no other consumer can commit these partitions.
    let stored = db::ingest::lock_positions(&mut tx, &cx.group_id, &cx.topic, &partitions).await?;

    // Keep what is ahead of the stored position, once: a rebalance can replay records
    // inside one batch.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut fresh: Vec<&Handled> = Vec::with_capacity(batch.len());
    for handled in batch {
        let (partition, offset) = (handled.message.partition(), handled.message.offset());
        let from = next
            .get(&partition)
            .or_else(|| stored.get(&partition))
            .copied()
            .unwrap_or(0);
        if offset >= from {
            next.insert(partition, offset + 1);
            fresh.push(handled);
        }
    }
    let mut report = BatchReport {
        stale: batch.len() - fresh.len(),
        ..BatchReport::default()
    };

    let event_ids: Vec<String> = fresh.iter().filter_map(|h| h.event_id.clone()).collect();
    let seen = if event_ids.is_empty() {
        HashSet::new()
    } else {
        db::ingest::seen_events(&mut tx, &cx.group_id, &event_ids).await?
    };

    let touched: Vec<String> = fresh
        .iter()
        .filter_map(|h| h.result.as_ref().ok())
        .flatten()
        .map(|Mutation::StockAdjustment { product_id, .. }| product_id.as_str().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Locked in id order: concurrent batches cannot deadlock.
    let mut stock = if touched.is_empty() {
        HashMap::new()
    } else {
        db::catalog::lock_stock(&mut tx, &touched).await?
    };

    let mut outcomes = Outcomes::default();
    let mut dead_letters = Vec::new();
    let mut outbox = Vec::new();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let mut decided: Vec<String> = Vec::new();
    let mut decided_here: HashSet<&str> = HashSet::new();
    for handled in fresh {
        let duplicate = handled
            .event_id
            .as_deref()
            .is_some_and(|id| seen.contains(id) || !decided_here.insert(id));
        let decision = if duplicate {
            Decision::Duplicate
        } else {
            decided.extend(handled.event_id.clone());
            match &handled.result {
                Err(error) => Decision::from_error(error),
                Ok(mutations) => match apply_in_memory(&mut stock, mutations) {
                    Ok(products) => {
                        changed.extend(products);
                        Decision::Applied
                    }
                    Err(refusal) => refusal,
                },
            }
        };
        match &decision {
            Decision::Applied => report.applied += 1,
            Decision::Rejected { .. } => report.rejected += 1,
            Decision::DeadLetter { .. } => report.dead_lettered += 1,
            Decision::Duplicate => report.duplicates += 1,
        }
        if let Decision::Rejected { kind, reason } | Decision::DeadLetter { kind, reason } =
            &decision
        {
            tracing::info!(partition = handled.message.partition(), offset = handled.message.offset(),
                           outcome = decision.outcome(), kind, %reason, "record not applied");
        }
        if let Decision::DeadLetter { kind, reason } = &decision {
            let row = dead_letter_row(handled, kind, reason);
            if let Some(topic) = &cx.dead_letter_topic {
                outbox.push(dead_letter_record(topic, cx, &row));
            }
            dead_letters.push(row);
        }
        if let (Some(topic), Some(event_id), false) = (
            &cx.status_topic,
            &handled.event_id,
            decision == Decision::Duplicate,
        ) {
            let event = status_event(cx, handled, event_id, &decision);
            outbox.push(status_record(topic, &event, format!("{event_id}/status")));
        }
        outcomes.push(handled, cx, &decision);
    }

    if !changed.is_empty() {
        let (ids, values): (Vec<String>, Vec<i64>) = changed
            .into_iter()
            .filter_map(|id| stock.get(&id).map(|value| (id.clone(), *value)))
            .unzip();
        db::catalog::set_stock(&mut tx, &ids, &values).await?;
    }
    db::ingest::record_outcomes(&mut tx, &cx.group_id, &cx.topic, &outcomes).await?;
    db::ingest::insert_dead_letters(
        &mut tx,
        &cx.group_id,
        &cx.plugin,
        &cx.plugin_version,
        &dead_letters,
    )
    .await?;
    db::ingest::record_events(&mut tx, &cx.group_id, &decided).await?;
    db::outbox::enqueue(&mut tx, &outbox).await?;
    let (parts, offsets): (Vec<i32>, Vec<i64>) = next.iter().map(|(p, o)| (*p, *o)).unzip();
    db::ingest::set_positions(&mut tx, &cx.group_id, &cx.topic, &parts, &offsets).await?;
    tx.commit().await?;

    report.positions = next.into_iter().collect();
    report.queued = outbox.len();
    Ok(report)
}

impl Outcomes {
    fn push(&mut self, handled: &Handled, cx: &BatchContext, decision: &Decision) {
        let (kind, reason) = decision.kind_and_reason();
        self.partition.push(handled.message.partition());
        self.offset.push(handled.message.offset());
        self.event_id.push(handled.event_id.clone());
        self.outcome.push(decision.outcome());
        self.error_kind.push(kind);
        self.reason.push(reason.map(str::to_string).or_else(|| {
            (*decision == Decision::Duplicate).then(|| "event already processed".to_string())
        }));
        self.mutations.push(match (&handled.result, decision) {
            (Ok(mutations), Decision::Applied) => serde_json::to_value(mutations).ok(),
            _ => None,
        });
        self.plugin.push(cx.plugin.clone());
        self.plugin_version.push(cx.plugin_version.clone());
    }
}

/// Apply one record's mutations to the locked stock, all or nothing.
/// Returns the products it changed, or the refusal.
pub fn apply_in_memory(
    stock: &mut HashMap<String, i64>,
    mutations: &[Mutation],
) -> Result<Vec<String>, Decision> {
    let mut scratch: HashMap<&str, i64> = HashMap::new();
    for Mutation::StockAdjustment { product_id, delta } in mutations {
        let id = product_id.as_str();
        let current = match scratch.get(id) {
            Some(value) => *value,
            None => *stock.get(id).ok_or_else(|| Decision::Rejected {
                kind: "unknown-product",
                reason: format!("unknown product {id}"),
            })?,
        };
        let updated = current
            .checked_add(*delta)
            .ok_or_else(|| Decision::DeadLetter {
                kind: "invalid-output",
                reason: format!("stock of {id} would overflow"),
            })?;
        if updated < 0 {
            return Err(Decision::Rejected {
                kind: "insufficient-stock",
                reason: format!(
                    "insufficient stock for {id}: {current} left, {} requested",
                    delta.unsigned_abs()
                ),
            });
        }
        scratch.insert(id, updated);
    }
    let touched = scratch.keys().map(|id| id.to_string()).collect();
    for (id, value) in scratch {
        stock.insert(id.to_string(), value);
    }
    Ok(touched)
}

fn original_headers(message: &OwnedMessage) -> Vec<Header> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| Header {
                    key: h.key.to_string(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn dead_letter_row(handled: &Handled, kind: &'static str, reason: &str) -> DeadLetterRow {
    let message = &handled.message;
    DeadLetterRow {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers: original_headers(message),
        event_id: handled.event_id.clone(),
        error_kind: kind,
        error: reason.to_string(),
    }
}

/// The largest payload copied to the dead-letter topic: under Kafka's default 1 MB limit.
const MAX_DLT_PAYLOAD: usize = 900_000;

/// The poison record for `<topic>.DLT`: the original key, value and headers, plus where it
/// came from and why it failed (Spring Kafka's `kafka_dlt-*` header names, text values).
fn dead_letter_record(topic: &str, cx: &BatchContext, row: &DeadLetterRow) -> Record {
    let mut headers = row.headers.clone();
    // A record too large to republish is copied truncated; the table keeps it whole.
    let mut payload = row.payload.clone();
    if let Some(bytes) = payload.as_mut().filter(|p| p.len() > MAX_DLT_PAYLOAD) {
        headers.push(Header::text(
            "sluice-payload-truncated-from",
            bytes.len().to_string(),
        ));
        bytes.truncate(MAX_DLT_PAYLOAD);
    }
    headers.extend([
        Header::text("kafka_dlt-original-topic", row.topic.clone()),
        Header::text("kafka_dlt-original-partition", row.partition.to_string()),
        Header::text("kafka_dlt-original-offset", row.offset.to_string()),
        Header::text("kafka_dlt-original-consumer-group", cx.group_id.clone()),
        Header::text("kafka_dlt-exception-message", row.error.clone()),
        Header::text("sluice-error-kind", row.error_kind),
        Header::text("sluice-plugin", cx.plugin.clone()),
        Header::text("sluice-plugin-version", cx.plugin_version.clone()),
    ]);
    Record {
        topic: topic.to_string(),
        key: row.key.clone(),
        payload,
        headers,
    }
}

fn status_event(
    cx: &BatchContext,
    handled: &Handled,
    event_id: &str,
    decision: &Decision,
) -> StatusEvent {
    let (kind, reason) = decision.kind_and_reason();
    StatusEvent {
        order_id: event_id.to_string(),
        status: decision.order_status(),
        reason: reason.map(str::to_string),
        error_kind: kind.map(str::to_string),
        plugin: cx.plugin.clone(),
        plugin_version: cx.plugin_version.clone(),
        topic: handled.message.topic().to_string(),
        partition: handled.message.partition(),
        offset: handled.message.offset(),
        redriven: false,
    }
}

/// The status topic's record for a verdict, keyed by order id. `dedupe_id` is its own
/// `event-id`, distinct per verdict.
pub(crate) fn status_record(topic: &str, event: &StatusEvent, dedupe_id: String) -> Record {
    Record {
        topic: topic.to_string(),
        key: Some(event.order_id.as_bytes().to_vec()),
        payload: serde_json::to_vec(event).ok(),
        headers: vec![Header::text(EVENT_ID_HEADER, dedupe_id)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProductId;

    fn adjust(id: &str, delta: i64) -> Mutation {
        Mutation::StockAdjustment {
            product_id: ProductId::parse(id).unwrap(),
            delta,
        }
    }

    fn kind(decision: Decision) -> &'static str {
        match decision {
            Decision::Rejected { kind, .. } | Decision::DeadLetter { kind, .. } => kind,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_record_applies_whole_or_not_at_all() {
        let mut stock = HashMap::from([("A".to_string(), 5), ("B".to_string(), 1)]);
        let refused = apply_in_memory(&mut stock, &[adjust("A", -2), adjust("B", -2)]);
        assert_eq!(kind(refused.unwrap_err()), "insufficient-stock");
        assert_eq!(stock["A"], 5, "nothing of a refused record is applied");

        let refused = apply_in_memory(&mut stock, &[adjust("A", -1), adjust("Z", -1)]);
        assert_eq!(kind(refused.unwrap_err()), "unknown-product");
        assert_eq!(stock["A"], 5);

        apply_in_memory(&mut stock, &[adjust("A", -2), adjust("A", -3)]).unwrap();
        assert_eq!(stock["A"], 0);
        let refused = apply_in_memory(&mut stock, &[adjust("A", -1)]);
        let Err(Decision::Rejected { reason, .. }) = refused else {
            panic!("expected a rejection")
        };
        assert!(reason.contains("0 left, 1 requested"));
    }

    #[test]
    fn overflow_is_poison() {
        let mut stock = HashMap::from([("A".to_string(), i64::MAX)]);
        let refused = apply_in_memory(&mut stock, &[adjust("A", 1)]);
        assert!(matches!(
            refused,
            Err(Decision::DeadLetter {
                kind: "invalid-output",
                ..
            })
        ));
    }

    #[test]
    fn plugin_rejections_are_business_refusals_and_the_rest_is_poison() {
        let rejected = Decision::from_error(&HandleError::Rejected("closed".into()));
        assert_eq!(rejected.outcome(), "REJECTED");
        for error in [
            HandleError::InvalidMessage("x".into()),
            HandleError::Trap("x".into()),
            HandleError::Timeout(100),
            HandleError::InvalidOutput("x".into()),
        ] {
            assert_eq!(
                Decision::from_error(&error).outcome(),
                "DEAD_LETTER",
                "{error}"
            );
        }
    }
}
