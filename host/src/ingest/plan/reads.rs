//! The decision's inputs: which records of a batch are new, and which products and keys the
//! transaction locks before deciding them.

use std::collections::{BTreeMap, HashMap};

use super::Handled;
use crate::domain::Mutation;

/// The records ahead of the stored positions, once each (a rebalance can replay records
/// inside one batch), and the next offset of each partition.
pub fn select_fresh<'a>(
    batch: &'a [Handled],
    stored: &HashMap<i32, i64>,
) -> (Vec<&'a Handled>, BTreeMap<i32, i64>) {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut fresh = Vec::with_capacity(batch.len());
    for handled in batch {
        let (partition, offset) = (handled.record.partition, handled.record.offset);
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
    (fresh, next)
}

/// The products the records' mutations touch, sorted (the order rows are locked in).
pub fn touched_products<'a>(records: &[&'a Handled]) -> Vec<&'a str> {
    let mut touched: Vec<&str> = records
        .iter()
        .filter_map(|h| h.result.as_ref().ok())
        .flatten()
        .filter_map(Mutation::product)
        .collect();
    touched.sort_unstable();
    touched.dedup();
    touched
}

/// The keys whose state the records' calls saw, sorted and distinct (their rows are locked in
/// this order).
pub fn state_keys<'a>(records: &[&'a Handled]) -> Vec<&'a [u8]> {
    let mut keys: Vec<&[u8]> = records
        .iter()
        .filter(|h| h.seen_state.is_given())
        .filter_map(|h| h.record.key.as_deref())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}
