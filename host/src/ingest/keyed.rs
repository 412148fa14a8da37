//! Ingest, keyed state: on a route that keeps state, the records of one key are called one
//! after another in offset order, each with the state the ones before it leave if they apply,
//! starting from the state read before the calls. The transaction locks the keys and checks
//! what each call saw ([`decide`], through `plan`); where it differs (an earlier record of the
//! key was not applied, a member changed the key meanwhile), the record is called again there,
//! with the right state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::plan::{self, BatchContext, Handled, Keyed, Mode, Plan, Refused};
use crate::db::{self, Tx};
use crate::domain::{Allowances, Consumed, SeenState, state_change};
use crate::runtime::{Calls, HandleError, Plugin, bindings};

/// What a route's calls need: its plugin version, the shadow candidate, what the route allows.
pub struct Caller {
    pub plugin: Arc<Plugin>,
    pub shadow: Option<Arc<Plugin>>,
    pub allowed: Allowances,
}

impl Caller {
    /// The calls of one thread: the active version's and the shadow's.
    pub fn calls(&self) -> (Calls<'_>, Option<Calls<'_>>) {
        (
            self.plugin.calls(&self.allowed),
            self.shadow.as_ref().map(|s| s.calls(&self.allowed)),
        )
    }

    /// Call one record, giving it `state` to see (`SeenState::NotGiven` where its route keeps
    /// none or it has no key). Synchronous CPU work: on a plugin thread.
    pub fn call_one(
        (calls, shadow): &mut (Calls<'_>, Option<Calls<'_>>),
        record: Consumed,
        state: SeenState,
    ) -> Handled {
        let event_id = record.event_id();
        let tombstone = record.payload.is_none();
        // The record's buffers go to the plugin's message and come back.
        let message = bindings::Message::from(record);
        let given = state.value();
        let result = calls.handle(&message, given);
        let shadow = shadow.as_mut().map(|calls| calls.handle(&message, given));
        Handled {
            record: message.into_record(tombstone),
            event_id,
            result,
            shadow,
            seen_state: state,
        }
    }

    /// Call `records` (one key's, in offset order; or one record without a key) starting from
    /// `state`, each with the state the ones before it leave if they apply.
    pub fn call_chain(
        calls: &mut (Calls<'_>, Option<Calls<'_>>),
        records: Vec<Consumed>,
        mut state: Option<Vec<u8>>,
    ) -> Vec<Handled> {
        records
            .into_iter()
            .map(|record| {
                if record.key.is_none() {
                    return Self::call_one(calls, record, SeenState::NotGiven);
                }
                let handled = Self::call_one(calls, record, SeenState::of(state.clone()));
                if let Some(change) = handled.result.as_deref().ok().and_then(state_change) {
                    state = change.value().map(<[u8]>::to_vec);
                }
                handled
            })
            .collect()
    }

    /// Call one record on a blocking thread, from async code (a redrive): with its key's
    /// `state` where the route keeps state.
    pub async fn call_blocking(
        self: &Arc<Self>,
        record: Consumed,
        state: Option<Vec<u8>>,
    ) -> Handled {
        let caller = Arc::clone(self);
        let kept = record.clone();
        let called = tokio::task::spawn_blocking(move || {
            let mut calls = caller.calls();
            let seen = if caller.allowed.state && record.key.is_some() {
                SeenState::of(state)
            } else {
                SeenState::NotGiven
            };
            Self::call_one(&mut calls, record, seen)
        })
        .await;
        called.unwrap_or_else(|e| {
            // The calls themselves cannot panic the thread; if the thread failed anyway, the
            // record is poison rather than lost.
            let error = HandleError::Trap(format!("the call could not be run: {e}"));
            Handled::new(kept, Err(error))
        })
    }
}

/// The records of a batch grouped into chains: the positions of each key's records in order,
/// and each record without a key alone.
pub fn chains(records: &[Consumed]) -> Vec<Vec<usize>> {
    let mut by_key: HashMap<&[u8], usize> = HashMap::new();
    let mut chains: Vec<Vec<usize>> = Vec::new();
    for (position, record) in records.iter().enumerate() {
        match record.key.as_deref() {
            Some(key) => match by_key.get(key) {
                Some(&chain) => chains[chain].push(position),
                None => {
                    by_key.insert(key, chains.len());
                    chains.push(vec![position]);
                }
            },
            None => chains.push(vec![position]),
        }
    }
    chains
}

/// Decide `records` of a route that keeps state, in the caller's transaction: lock the state
/// of the keys their calls saw (in key order, after the stock), then decide with it. A record
/// whose call saw another state than its key's at its place is called again there, in order,
/// on this thread (plugin calls, bounded by their deadline); if such a call names a product
/// whose stock is not locked, that stock is locked too and the batch decided again.
/// `stock`: the locked stock of the products the first calls named.
pub async fn decide(
    tx: &mut Tx<'_>,
    batch: &BatchContext,
    mode: Mode,
    records: &[&Handled],
    inputs: (&HashSet<&str>, &Refused),
    mut stock: HashMap<String, i64>,
    caller: &Caller,
) -> sqlx::Result<Plan> {
    let keys = plan::state_keys(records);
    if keys.is_empty() {
        return Ok(plan::plan(batch, mode, records, inputs, &mut stock, None));
    }
    let states = db::state::lock(tx, &batch.plugin, &keys).await?;
    // The products looked up already (found or not).
    let mut looked_up: HashSet<String> = plan::touched_products(records)
        .into_iter()
        .map(str::to_string)
        .collect();
    loop {
        let mut decided_stock = stock.clone();
        let plan = tokio::task::block_in_place(|| {
            let mut calls = caller.calls();
            let mut recall = |handled: &Handled, state: SeenState| Handled {
                // A redrive's event id is its dead letter's.
                event_id: handled.event_id.clone(),
                ..Caller::call_one(&mut calls, handled.record.clone(), state)
            };
            let keyed = Keyed {
                states: states.clone(),
                recall: &mut recall,
            };
            plan::plan(
                batch,
                mode,
                records,
                inputs,
                &mut decided_stock,
                Some(keyed),
            )
        });
        // Products only the second calls name are locked out of the usual order: a deadlock
        // this rarely makes is PostgreSQL's to break, and the batch is retried.
        let unlocked: Vec<&str> = plan
            .unlocked
            .iter()
            .map(String::as_str)
            .filter(|id| looked_up.insert(id.to_string()))
            .collect();
        if unlocked.is_empty() {
            if plan.report.recalled > 0 {
                tracing::debug!(topic = %batch.topic, recalled = plan.report.recalled,
                                "records called again with their key's state");
            }
            return Ok(plan);
        }
        stock.extend(db::catalog::lock_stock(tx, &unlocked).await?);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, key: Option<&str>) -> Consumed {
        Consumed {
            topic: "t".into(),
            partition: 0,
            offset,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: Some(b"{}".to_vec()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    #[test]
    fn a_key_s_records_form_one_chain_in_order_and_keyless_records_stand_alone() {
        let records = [
            record(0, Some("a")),
            record(1, Some("b")),
            record(2, None),
            record(3, Some("a")),
            record(4, None),
            record(5, Some("b")),
        ];
        assert_eq!(
            chains(&records),
            vec![vec![0, 3], vec![1, 5], vec![2], vec![4]]
        );
    }
}
