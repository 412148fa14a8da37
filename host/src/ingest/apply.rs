//! The one transaction of ingest: a batch's mutations, outcomes, seen event ids and
//! consumer positions commit together or not at all.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sqlx::PgPool;

use crate::db;
use crate::db::ingest::Outcomes;
use crate::domain::Mutation;
use crate::runtime::HandleError;

/// One consumed message after its plugin ran.
#[derive(Debug)]
pub struct Handled {
    pub partition: i32,
    pub offset: i64,
    pub event_id: Option<String>,
    pub result: Result<Vec<Mutation>, HandleError>,
}

/// The plugin version that handled a batch.
#[derive(Debug, Clone)]
pub struct HandledBy {
    pub plugin: String,
    pub version: String,
}

/// What one committed batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub applied: usize,
    pub rejected: usize,
    pub duplicates: usize,
    /// Messages at or behind the stored position: already applied by an earlier owner.
    pub stale: usize,
    /// Partition → next offset, as now stored.
    pub positions: Vec<(i32, i64)>,
}

/// Why a message's mutations were not applied: (kind, reason).
type Refusal = (&'static str, String);

/// Apply a batch (messages of one topic, in per-partition offset order).
#[tracing::instrument(skip_all, fields(topic, messages = batch.len()))]
pub async fn apply_batch(
    pool: &PgPool,
    group_id: &str,
    topic: &str,
    by: &HandledBy,
    batch: &[Handled],
) -> sqlx::Result<BatchReport> {
    let mut tx = pool.begin().await?;

    let partitions: Vec<i32> = batch
        .iter()
        .map(|h| h.partition)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let positions = db::ingest::lock_positions(&mut tx, group_id, topic, &partitions).await?;
    let fresh: Vec<&Handled> = batch
        .iter()
        .filter(|h| h.offset >= positions.get(&h.partition).copied().unwrap_or(0))
        .collect();
    let mut report = BatchReport {
        stale: batch.len() - fresh.len(),
        ..BatchReport::default()
    };

    let event_ids: Vec<String> = fresh.iter().filter_map(|h| h.event_id.clone()).collect();
    let seen = if event_ids.is_empty() {
        HashSet::new()
    } else {
        db::ingest::seen_events(&mut tx, group_id, &event_ids).await?
    };

    let touched: Vec<String> = fresh
        .iter()
        .filter_map(|h| h.result.as_ref().ok())
        .flatten()
        .map(|Mutation::StockAdjustment { product_id, .. }| product_id.as_str().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut stock = if touched.is_empty() {
        HashMap::new()
    } else {
        db::catalog::lock_stock(&mut tx, &touched).await?
    };

    let mut outcomes = Outcomes::default();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let mut decided: Vec<String> = Vec::new();
    let mut decided_here: HashSet<&str> = HashSet::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for handled in fresh {
        next.insert(handled.partition, handled.offset + 1);
        outcomes.partition.push(handled.partition);
        outcomes.offset.push(handled.offset);
        outcomes.event_id.push(handled.event_id.clone());
        outcomes.plugin.push(by.plugin.clone());
        outcomes.plugin_version.push(by.version.clone());

        if let Some(id) = handled.event_id.as_deref() {
            if seen.contains(id) || !decided_here.insert(id) {
                report.duplicates += 1;
                outcomes.outcome.push("DUPLICATE");
                outcomes.error_kind.push(None);
                outcomes
                    .reason
                    .push(Some(format!("event {id} was already processed")));
                outcomes.mutations.push(None);
                continue;
            }
            decided.push(id.to_string());
        }

        let verdict = match &handled.result {
            Err(error) => Err((error.kind(), error.to_string())),
            Ok(mutations) => apply_in_memory(&mut stock, mutations).map(|touched| {
                changed.extend(touched);
            }),
        };
        outcomes
            .mutations
            .push(handled.result.as_ref().ok().map(mutations_json));
        match verdict {
            Ok(()) => {
                report.applied += 1;
                outcomes.outcome.push("APPLIED");
                outcomes.error_kind.push(None);
                outcomes.reason.push(None);
            }
            Err((kind, reason)) => {
                report.rejected += 1;
                tracing::info!(partition = handled.partition, offset = handled.offset, kind, %reason, "message rejected");
                outcomes.outcome.push("REJECTED");
                outcomes.error_kind.push(Some(kind));
                outcomes.reason.push(Some(reason));
            }
        }
    }

    if !changed.is_empty() {
        let ids: Vec<String> = changed.into_iter().collect();
        let values: Vec<i64> = ids.iter().map(|id| stock[id]).collect();
        db::catalog::set_stock(&mut tx, &ids, &values).await?;
    }
    if !outcomes.offset.is_empty() {
        db::ingest::record_outcomes(&mut tx, group_id, topic, &outcomes).await?;
    }
    if !decided.is_empty() {
        db::ingest::record_events(&mut tx, group_id, &decided).await?;
    }
    let (parts, offsets): (Vec<i32>, Vec<i64>) = next.iter().map(|(p, o)| (*p, *o)).unzip();
    if !parts.is_empty() {
        db::ingest::set_positions(&mut tx, group_id, topic, &parts, &offsets).await?;
    }
    tx.commit().await?;

    report.positions = next.into_iter().collect();
    Ok(report)
}

/// Apply one message's mutations to the locked stock, all or nothing.
/// Returns the products it changed.
fn apply_in_memory(
    stock: &mut HashMap<String, i64>,
    mutations: &[Mutation],
) -> Result<Vec<String>, Refusal> {
    let mut scratch: HashMap<&str, i64> = HashMap::new();
    for Mutation::StockAdjustment { product_id, delta } in mutations {
        let id = product_id.as_str();
        let current = match scratch.get(id) {
            Some(value) => *value,
            None => *stock
                .get(id)
                .ok_or_else(|| ("unknown-product", format!("unknown product {id}")))?,
        };
        let updated = current
            .checked_add(*delta)
            .ok_or_else(|| ("invalid-output", format!("stock of {id} would overflow")))?;
        if updated < 0 {
            return Err((
                "insufficient-stock",
                format!(
                    "insufficient stock for {id}: {current} left, {} requested",
                    -delta
                ),
            ));
        }
        scratch.insert(id, updated);
    }
    let touched = scratch.keys().map(|id| id.to_string()).collect();
    for (id, value) in scratch {
        stock.insert(id.to_string(), value);
    }
    Ok(touched)
}

fn mutations_json(mutations: &Vec<Mutation>) -> serde_json::Value {
    serde_json::to_value(mutations).unwrap_or(serde_json::Value::Null)
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

    #[test]
    fn a_message_applies_whole_or_not_at_all() {
        let mut stock = HashMap::from([("A".to_string(), 5), ("B".to_string(), 1)]);
        let refused = apply_in_memory(&mut stock, &[adjust("A", -2), adjust("B", -2)]);
        assert_eq!(refused.unwrap_err().0, "insufficient-stock");
        assert_eq!(stock["A"], 5, "nothing of a refused message is applied");

        let refused = apply_in_memory(&mut stock, &[adjust("A", -1), adjust("Z", -1)]);
        assert_eq!(refused.unwrap_err().0, "unknown-product");
        assert_eq!(stock["A"], 5);

        apply_in_memory(&mut stock, &[adjust("A", -2), adjust("A", -3)]).unwrap();
        assert_eq!(stock["A"], 0);
        let refused = apply_in_memory(&mut stock, &[adjust("A", -1)]);
        assert!(refused.unwrap_err().1.contains("0 left, 1 requested"));
    }

    #[test]
    fn overflow_is_refused() {
        let mut stock = HashMap::from([("A".to_string(), i64::MAX)]);
        let refused = apply_in_memory(&mut stock, &[adjust("A", 1)]);
        assert_eq!(refused.unwrap_err().0, "invalid-output");
    }
}
