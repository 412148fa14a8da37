//! The one transaction of ingest: read what the decision needs (positions, which event ids are
//! new, the stock, the keys' state), decide (`plan`), and write the decision: mutations, state,
//! every record's outcome, dead letters, emitted records, status events and the consumer
//! positions commit together or not at all. Redrive goes through the same read, decision and
//! write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use sqlx::PgPool;

use super::keyed::{self, Caller};
use super::plan::{self, BatchContext, BatchReport, Decision, Handled, Mode, Plan, Refused};
use crate::db::tables::Written;
use crate::db::{self, Tx};
use crate::domain::EventKeys;
use crate::otlp;
use crate::trace::TraceParent;

/// Apply a batch of one topic's records, in per-partition offset order.
#[tracing::instrument(skip_all, fields(topic = %batch.topic, records = records.len()))]
pub async fn apply_batch(
    pool: &PgPool,
    batch: &BatchContext,
    records: &[Handled],
    caller: Option<&Arc<Caller>>,
) -> sqlx::Result<BatchReport> {
    let started = SystemTime::now();
    let mut tx = pool.begin().await?;
    let mut partitions: Vec<i32> = records.iter().map(|h| h.record.partition).collect();
    partitions.sort_unstable();
    partitions.dedup();
    // Locks the positions: from here on no other consumer can commit these partitions.
    let stored =
        db::ingest::lock_positions(&mut tx, &batch.group_id, &batch.topic, &partitions).await?;
    let (fresh, next) = plan::select_fresh(records, &stored);

    let plan = decide_and_write(&mut tx, batch, Mode::Ingest, &fresh, caller).await?;

    let (parts, offsets): (Vec<i32>, Vec<i64>) = next.iter().map(|(p, o)| (*p, *o)).unzip();
    db::ingest::set_positions(&mut tx, &batch.group_id, &batch.topic, &parts, &offsets).await?;
    tx.commit().await?;

    if otlp::enabled() {
        export_spans(batch, &fresh, &plan.decisions, started);
    }
    // Each record's line carries its order's trace id; applied ones only at debug level.
    let every_record = tracing::enabled!(tracing::Level::DEBUG);
    for (handled, decision) in fresh.iter().zip(&plan.decisions) {
        let refusal = match decision {
            Decision::Rejected { kind, reason } | Decision::DeadLetter { kind, reason } => {
                Some((kind.as_str(), reason))
            }
            _ => None,
        };
        if refusal.is_none() && !every_record {
            continue;
        }
        let trace = TraceParent::from_headers(&handled.record.headers);
        let trace_id = trace.map(|t| t.trace_id()).unwrap_or_default();
        let (partition, offset) = (handled.record.partition, handled.record.offset);
        match refusal {
            Some((kind, reason)) => {
                tracing::info!(partition, offset, trace_id, outcome = %decision.outcome(),
                               kind, %reason, "record not applied");
            }
            None => {
                tracing::debug!(partition, offset, trace_id, outcome = %decision.outcome(),
                                plugin = %batch.plugin_version, "record decided");
            }
        }
    }
    Ok(BatchReport {
        stale: records.len() - fresh.len(),
        positions: next.into_iter().collect(),
        ..plan.report
    })
}

/// One span per record that carries a trace context: from the batch's start to its commit,
/// under the record's context, named as the status event names it.
fn export_spans(
    batch: &BatchContext,
    fresh: &[&Handled],
    decisions: &[Decision],
    started: SystemTime,
) {
    let ended = SystemTime::now();
    for (handled, decision) in fresh.iter().zip(decisions) {
        let Some((carried, context)) = plan::processing_context(handled, Mode::Ingest) else {
            continue;
        };
        let record = &handled.record;
        let error = match decision {
            Decision::DeadLetter { kind, reason } => Some(format!("{kind}: {reason}")),
            _ => None,
        };
        let span = otlp::Span::kafka_process(
            context,
            carried,
            (&record.topic, record.partition, record.offset),
            (started, ended),
            [
                (
                    "messaging.consumer.group.name",
                    batch.group_id.clone().into(),
                ),
                ("sluice.plugin", batch.plugin.clone().into()),
                ("sluice.plugin.version", batch.plugin_version.clone().into()),
                ("sluice.outcome", decision.outcome().as_str().into()),
            ],
        );
        otlp::export(otlp::Span { error, ..span });
    }
}

/// Read, decide and write `records` in the caller's transaction (ingest: the fresh records of
/// a batch; redrive: one dead letter): claim their event ids, lock the stock they touch,
/// decide (on a route that keeps state, `keyed::decide`), write. Positions are the caller's.
/// `caller`: on a route that keeps state, how to call a key's records again.
pub async fn decide_and_write(
    tx: &mut Tx<'_>,
    batch: &BatchContext,
    mode: Mode,
    records: &[&Handled],
    caller: Option<&Arc<Caller>>,
) -> sqlx::Result<Plan> {
    let new_ids = claim_event_ids(tx, batch, mode, records).await?;
    let touched = plan::touched_products(records);
    // Locked in id order: concurrent batches cannot deadlock.
    let stock: HashMap<String, i64> = if touched.is_empty() {
        HashMap::new()
    } else {
        db::catalog::lock_stock(tx, &touched).await?
    };
    // Decided again without the records whose table writes PostgreSQL refused (each time at
    // least one more: it ends).
    let mut refused = Refused::new();
    let plan = loop {
        let inputs = (&new_ids, &refused);
        let plan = match caller {
            Some(caller) => {
                keyed::decide(tx, batch, mode, records, inputs, stock.clone(), caller).await?
            }
            None => plan::plan(batch, mode, records, inputs, &mut stock.clone(), None),
        };
        // Most routes write no table: nothing to gather per record then.
        let written = if plan.tables.is_empty() {
            Written::Done
        } else {
            let writes = plan.applied_writes(records);
            db::tables::write(tx, &plan.tables, &writes, &batch.tables).await?
        };
        match written {
            Written::Done => break plan,
            Written::Refused(culprits) => {
                tracing::debug!(topic = %batch.topic, refused = culprits.len(),
                                "table writes refused; deciding again without them");
                refused.extend(culprits);
            }
        }
    };
    write(tx, batch, &plan).await?;
    Ok(plan)
}

/// The event ids of `records` this group has not decided before, remembered with this
/// decision (ingest). A redrive decides its dead letter's event again (decided, as poison,
/// and remembered then).
async fn claim_event_ids<'a>(
    tx: &mut Tx<'_>,
    batch: &BatchContext,
    mode: Mode,
    records: &[&'a Handled],
) -> sqlx::Result<HashSet<&'a str>> {
    let ids = records.iter().filter_map(|h| h.event_id.as_deref());
    if let Mode::Redrive { .. } = mode {
        return Ok(ids.collect());
    }
    let keys = EventKeys::new(&batch.group_id);
    let mut ids: Vec<(Vec<u8>, &str)> = ids.map(|id| (keys.key(id), id)).collect();
    // Key order: the index pages the inserts (and lookups) touch, in order.
    ids.sort_unstable();
    ids.dedup();
    let new = db::ingest::claim_events(tx, ids.iter().map(|(key, _)| key.as_slice())).await?;
    Ok(ids
        .into_iter()
        .zip(new)
        .filter(|(_, new)| *new)
        .map(|((_, id), _)| id)
        .collect())
}

/// Persist a plan: stock, outcomes, dead letters, and the outbox row of its records.
async fn write(tx: &mut Tx<'_>, batch: &BatchContext, plan: &Plan) -> sqlx::Result<()> {
    if !plan.stock.is_empty() {
        let (ids, values): (Vec<&str>, Vec<i64>) =
            plan.stock.iter().map(|(id, v)| (id.as_str(), *v)).unzip();
        db::catalog::set_stock(tx, &ids, &values).await?;
    }
    let state: Vec<(&[u8], Option<&[u8]>)> = plan
        .state
        .iter()
        .map(|(key, value)| (key.as_slice(), value.as_deref()))
        .collect();
    db::state::write(tx, &batch.plugin, &state).await?;
    db::ingest::record_outcomes(
        tx,
        &batch.group_id,
        &batch.topic,
        (&batch.plugin, &batch.plugin_version),
        &plan.outcomes,
    )
    .await?;
    db::ingest::insert_dead_letters(
        tx,
        &batch.group_id,
        &batch.plugin,
        &batch.plugin_version,
        &plan.dead_letters,
    )
    .await?;
    if let Some(tally) = &plan.shadow {
        db::plugins::record_shadow(tx, tally).await?;
    }
    db::outbox::enqueue_batch(tx, &plan.outbox).await
}
