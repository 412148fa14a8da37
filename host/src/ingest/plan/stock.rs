//! The decision, stock in memory: a record's adjustments applied to the locked stock all
//! together or not at all.

use std::collections::HashMap;

use super::Decision;
use crate::domain::{ErrorKind, Mutation};

/// Apply one record's mutations to the locked stock, all or nothing; the refusal otherwise.
pub fn apply_in_memory(
    stock: &mut HashMap<String, i64>,
    mutations: &[Mutation],
) -> Result<(), Decision> {
    // What the record's mutations make of each product, before any is applied. Most records
    // touch one product or a few: a list, searched from the end.
    let mut scratch: Vec<(&str, i64)> = Vec::with_capacity(mutations.len().min(16));
    for mutation in mutations {
        let Mutation::StockAdjustment { product_id, delta } = mutation else {
            continue;
        };
        let id = product_id.as_str();
        let earlier = scratch.iter().rposition(|(p, _)| *p == id);
        let current = match earlier {
            Some(at) => scratch[at].1,
            None => *stock.get(id).ok_or_else(|| {
                Decision::refused(ErrorKind::UnknownProduct, format!("unknown product {id}"))
            })?,
        };
        let updated = current.checked_add(*delta).ok_or_else(|| {
            Decision::refused(
                ErrorKind::InvalidOutput,
                format!("stock of {id} would overflow"),
            )
        })?;
        if updated < 0 {
            return Err(Decision::refused(
                ErrorKind::InsufficientStock,
                format!(
                    "insufficient stock for {id}: {current} left, {} requested",
                    delta.unsigned_abs()
                ),
            ));
        }
        match earlier {
            Some(at) => scratch[at].1 = updated,
            None => scratch.push((id, updated)),
        }
    }
    for (id, value) in scratch {
        if let Some(entry) = stock.get_mut(id) {
            *entry = value;
        }
    }
    Ok(())
}
