//! Ingest, keyed state: on a route that keeps state, the records of one key are called one
//! after another in offset order, each with the state the ones before it leave if they apply,
//! starting from the state read before the calls. The transaction locks the keys and checks
//! what each call saw (`plan`); where it differs (an earlier record of the key was not applied,
//! a member changed the key meanwhile), the record is called again there, with the right state.

use std::collections::HashMap;
use std::sync::Arc;

use super::plan::Handled;
use crate::domain::{Allowances, Consumed, state_change};
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

    /// Call one record: with its key's `state` on a route that keeps state (`Some`, the key's
    /// state or `None`), with none otherwise. Synchronous CPU work: on a plugin thread.
    pub fn call_one(
        (calls, shadow): &mut (Calls<'_>, Option<Calls<'_>>),
        record: Consumed,
        state: Option<Option<&[u8]>>,
    ) -> Handled {
        let event_id = record.event_id();
        let tombstone = record.payload.is_none();
        // The record's buffers go to the plugin's message and come back.
        let message = bindings::Message::from(record);
        let given = state.flatten();
        let result = calls.handle(&message, given);
        let shadow = shadow.as_mut().map(|calls| calls.handle(&message, given));
        Handled {
            record: message.into_record(tombstone),
            event_id,
            result,
            shadow,
            seen_state: state.map(|s| s.map(<[u8]>::to_vec)),
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
                    return Self::call_one(calls, record, None);
                }
                let handled = Self::call_one(calls, record, Some(state.as_deref()));
                if let Some(change) = handled.result.as_deref().ok().and_then(state_change) {
                    state = change.map(<[u8]>::to_vec);
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
            let keyed = caller.allowed.state && record.key.is_some();
            Self::call_one(&mut calls, record, keyed.then_some(state.as_deref()))
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
