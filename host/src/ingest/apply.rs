//! The one transaction of ingest: read what the decision needs (positions, which event ids are
//! new, the stock, the keys' state), decide (`plan`), and write the decision: mutations, state,
//! every record's outcome, dead letters, emitted records, status events and the consumer
//! positions commit together or not at all. Redrive goes through the same read, decision and
//! write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use sqlx::PgPool;

use super::keyed::Caller;
use super::plan::{self, BatchContext, BatchReport, Handled, Mode, Plan};
use crate::db::{self, Tx};
use crate::domain::EventKeys;
use crate::otlp;
use crate::trace::TraceParent;

/// Apply a batch of one topic's records, in per-partition offset order.
#[tracing::instrument(skip_all, fields(topic = %cx.topic, records = batch.len()))]
pub async fn apply_batch(
    pool: &PgPool,
    cx: &BatchContext,
    batch: &[Handled],
    caller: Option<&Arc<Caller>>,
) -> sqlx::Result<BatchReport> {
    let started = SystemTime::now();
    let mut tx = pool.begin().await?;
    let mut partitions: Vec<i32> = batch.iter().map(|h| h.record.partition).collect();
    partitions.sort_unstable();
    partitions.dedup();
    // Locks the positions: from here on no other consumer can commit these partitions.
    let stored = db::ingest::lock_positions(&mut tx, &cx.group_id, &cx.topic, &partitions).await?;
    let (fresh, next) = plan::select_fresh(batch, &stored);

    let plan = decide_and_write(&mut tx, cx, Mode::Ingest, &fresh, caller).await?;

    let (parts, offsets): (Vec<i32>, Vec<i64>) = next.iter().map(|(p, o)| (*p, *o)).unzip();
    db::ingest::set_positions(&mut tx, &cx.group_id, &cx.topic, &parts, &offsets).await?;
    tx.commit().await?;

    if otlp::enabled() {
        export_spans(cx, &fresh, &plan.decisions, started);
    }
    // Each record's line carries its order's trace id; applied ones only at debug level.
    let every_record = tracing::enabled!(tracing::Level::DEBUG);
    for (handled, decision) in fresh.iter().zip(&plan.decisions) {
        let refusal = match decision {
            plan::Decision::Rejected { kind, reason }
            | plan::Decision::DeadLetter { kind, reason } => Some((kind, reason)),
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
                tracing::info!(partition, offset, trace_id, outcome = decision.outcome(), kind,
                               %reason, "record not applied");
            }
            None => {
                tracing::debug!(partition, offset, trace_id, outcome = decision.outcome(),
                                plugin = %cx.plugin_version, "record decided");
            }
        }
    }
    Ok(BatchReport {
        stale: batch.len() - fresh.len(),
        positions: next.into_iter().collect(),
        ..plan.report
    })
}

/// One span per record that carries a trace context: from the batch's start to its commit,
/// under the record's context, named as the status event names it.
fn export_spans(
    cx: &BatchContext,
    fresh: &[&Handled],
    decisions: &[plan::Decision],
    started: SystemTime,
) {
    let ended = SystemTime::now();
    for (handled, decision) in fresh.iter().zip(decisions) {
        let Some((carried, context)) = plan::processing_context(handled, Mode::Ingest) else {
            continue;
        };
        let record = &handled.record;
        let error = match decision {
            plan::Decision::DeadLetter { kind, reason } => Some(format!("{kind}: {reason}")),
            _ => None,
        };
        let span = otlp::Span::kafka_process(
            context,
            carried,
            (&record.topic, record.partition, record.offset),
            (started, ended),
            [
                ("messaging.consumer.group.name", cx.group_id.clone().into()),
                ("sluice.plugin", cx.plugin.clone().into()),
                ("sluice.plugin.version", cx.plugin_version.clone().into()),
                ("sluice.outcome", decision.outcome().into()),
            ],
        );
        otlp::export(otlp::Span { error, ..span });
    }
}

/// Read, decide and write `records` in the caller's transaction (ingest: the fresh records of
/// a batch; redrive: one dead letter). Positions are the caller's. `caller`: on a route that
/// keeps state, how to call a key's records again when what they saw is not the key's state
/// (see `keyed`).
pub async fn decide_and_write(
    tx: &mut Tx<'_>,
    cx: &BatchContext,
    mode: Mode,
    records: &[&Handled],
    caller: Option<&Arc<Caller>>,
) -> sqlx::Result<Plan> {
    // Ingest: the event ids this group has not decided before, remembered with this decision.
    // A redrive decides its dead letter's event again (decided, as poison, and remembered then).
    let new_ids: HashSet<&str> = match mode {
        Mode::Ingest => {
            let keys = EventKeys::new(&cx.group_id);
            let mut ids: Vec<(Vec<u8>, &str)> = records
                .iter()
                .filter_map(|h| h.event_id.as_deref())
                .map(|id| (keys.key(id), id))
                .collect();
            // Key order: the index pages the inserts (and lookups) touch, in order.
            ids.sort_unstable();
            ids.dedup();
            let new =
                db::ingest::claim_events(tx, ids.iter().map(|(key, _)| key.as_slice())).await?;
            ids.into_iter()
                .zip(new)
                .filter(|(_, new)| *new)
                .map(|((_, id), _)| id)
                .collect()
        }
        Mode::Redrive { .. } => records
            .iter()
            .filter_map(|h| h.event_id.as_deref())
            .collect(),
    };
    let touched = plan::touched_products(records);
    // Locked in id order: concurrent batches cannot deadlock.
    let mut locked: HashMap<String, i64> = if touched.is_empty() {
        HashMap::new()
    } else {
        db::catalog::lock_stock(tx, &touched).await?
    };
    // The keys' state, locked in key order after the stock (the same order for every member).
    let keys = caller
        .map(|_| plan::state_keys(records))
        .unwrap_or_default();
    let plan = match caller {
        Some(caller) if !keys.is_empty() => {
            let states = db::state::lock(tx, &cx.plugin, &keys).await?;
            let mut looked_up: HashSet<String> = touched.iter().map(|id| id.to_string()).collect();
            loop {
                // A record whose call saw another state than its key's at its place is called
                // again here, in order: plugin calls, bounded by their deadline, on this thread.
                let mut stock = locked.clone();
                let plan = tokio::task::block_in_place(|| {
                    let mut calls = caller.calls();
                    let mut recall = |handled: &Handled, state: Option<&[u8]>| Handled {
                        // A redrive's event id is its dead letter's.
                        event_id: handled.event_id.clone(),
                        ..Caller::call_one(&mut calls, handled.record.clone(), Some(state))
                    };
                    let keyed = plan::Keyed {
                        states: states.clone(),
                        recall: &mut recall,
                    };
                    plan::plan(cx, mode, records, &new_ids, &mut stock, Some(keyed))
                });
                // Products only the second calls name are locked too (out of the usual order:
                // a deadlock this rarely makes is PostgreSQL's to break, and the batch is
                // retried), then the batch is decided again.
                let unlocked: Vec<&str> = plan
                    .unlocked
                    .iter()
                    .map(String::as_str)
                    .filter(|id| looked_up.insert(id.to_string()))
                    .collect();
                if unlocked.is_empty() {
                    break plan;
                }
                locked.extend(db::catalog::lock_stock(tx, &unlocked).await?);
            }
        }
        _ => plan::plan(cx, mode, records, &new_ids, &mut locked, None),
    };
    if plan.report.recalled > 0 {
        tracing::debug!(topic = %cx.topic, recalled = plan.report.recalled,
                        "records called again with their key's state");
    }
    write(tx, cx, &plan).await?;
    Ok(plan)
}

/// Persist a plan: stock, outcomes, dead letters, and the outbox row of its records.
async fn write(tx: &mut Tx<'_>, cx: &BatchContext, plan: &Plan) -> sqlx::Result<()> {
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
    db::state::write(tx, &cx.plugin, &state).await?;
    db::ingest::record_outcomes(
        tx,
        &cx.group_id,
        &cx.topic,
        (&cx.plugin, &cx.plugin_version),
        &plan.outcomes,
    )
    .await?;
    db::ingest::insert_dead_letters(
        tx,
        &cx.group_id,
        &cx.plugin,
        &cx.plugin_version,
        &plan.dead_letters,
    )
    .await?;
    if let Some(tally) = &plan.shadow {
        db::plugins::record_shadow(tx, tally).await?;
    }
    db::outbox::enqueue_batch(tx, &plan.outbox).await
}
