//! The decision's tests, one file per area, on one harness: records made by [`handled`] (and
//! [`keyed`] on a route that keeps state), decided by a [`Case`].

mod decisions;
mod emitted;
mod keyed;
mod redrive;
mod shadow;
mod stock;
mod tables;
mod verdicts;

use std::collections::{HashMap, HashSet};

use super::{BatchContext, Handled, Keyed, Mode, Plan, Refused, plan};
use crate::domain::{Consumed, EVENT_ID_HEADER, ErrorKind, Header, Mutation, ProductId, SeenState};
use crate::runtime::HandleError;

/// A stock adjustment.
pub fn adjust(id: &str, delta: i64) -> Mutation {
    Mutation::StockAdjustment {
        product_id: ProductId::parse(id).unwrap(),
        delta,
    }
}

/// A state change to `value`.
pub fn set(value: &str) -> Mutation {
    Mutation::SetState(value.as_bytes().to_vec())
}

/// A record of `orders` keyed `k`, at (`partition`, `offset`), with its `event_id` header,
/// as its plugin handled it.
pub fn handled(
    partition: i32,
    offset: i64,
    event_id: Option<&str>,
    result: Result<Vec<Mutation>, HandleError>,
) -> Handled {
    let headers = event_id
        .map(|id| vec![Header::text(EVENT_ID_HEADER, id)])
        .unwrap_or_default();
    Handled::new(
        Consumed {
            topic: "orders".into(),
            partition,
            offset,
            key: Some(b"k".to_vec()),
            payload: Some(b"{}".to_vec()),
            headers,
            timestamp_ms: None,
        },
        result,
    )
}

/// A record of key `k` at `offset` (event id `e<offset>`) whose call saw `seen` as its state.
pub fn keyed(
    seen: Option<&str>,
    result: Result<Vec<Mutation>, HandleError>,
    offset: i64,
) -> Handled {
    Handled {
        seen_state: SeenState::of(seen.map(|s| s.as_bytes().to_vec())),
        ..handled(0, offset, Some(&format!("e{offset}")), result)
    }
}

/// The batch every case is decided for: group `g`, topic `orders`, stock plugin `v1`, verdicts
/// to `status`, poison copied to `orders.DLT`.
pub fn batch() -> BatchContext {
    BatchContext {
        group_id: "g".into(),
        topic: "orders".into(),
        plugin: "stock".into(),
        plugin_version: "v1".into(),
        status_topic: Some("status".into()),
        dead_letter_topic: Some("orders.DLT".into()),
        shadow_version: None,
        tables: Default::default(),
    }
}

/// The kind of a refusal.
pub fn kind(decision: &super::Decision) -> ErrorKind {
    match decision.kind_and_reason() {
        (Some(kind), _) => kind,
        _ => panic!("expected a refusal, got {decision:?}"),
    }
}

/// Records to decide, and what the transaction would have read for them.
pub struct Case {
    records: Vec<Handled>,
    batch: BatchContext,
    mode: Mode,
    stock: HashMap<String, i64>,
    decided_before: Vec<String>,
    refused: Refused,
}

impl Case {
    /// `records`, every event id new, no stock locked, at ingest.
    pub fn new(records: impl IntoIterator<Item = Handled>) -> Self {
        Self {
            records: records.into_iter().collect(),
            batch: batch(),
            mode: Mode::Ingest,
            stock: HashMap::new(),
            decided_before: Vec::new(),
            refused: Refused::new(),
        }
    }

    /// Records whose table writes PostgreSQL refused, by offset (partition 0), and why.
    pub fn refused(mut self, refused: &[(i64, &str)]) -> Self {
        self.refused = refused
            .iter()
            .map(|(offset, why)| ((0, *offset), why.to_string()))
            .collect();
        self
    }

    /// The locked stock of the products the records touch.
    pub fn stock(mut self, stock: &[(&str, i64)]) -> Self {
        self.stock = stock.iter().map(|(id, n)| (id.to_string(), *n)).collect();
        self
    }

    /// Event ids this group decided in an earlier batch.
    pub fn decided_before(mut self, ids: &[&str]) -> Self {
        self.decided_before = ids.iter().map(|id| id.to_string()).collect();
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    pub fn batch(mut self, change: impl FnOnce(&mut BatchContext)) -> Self {
        change(&mut self.batch);
        self
    }

    /// Decide, on a route that keeps no state.
    pub fn decide(self) -> Plan {
        self.decide_with(None).0
    }

    /// Decide on a route that keeps state: the keys' locked `states`, and `recall` for a record
    /// whose call saw another state than its key's.
    pub fn decide_keyed(
        self,
        states: &[(&str, &str)],
        recall: &mut dyn FnMut(&Handled, SeenState) -> Handled,
    ) -> Plan {
        let states = states
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        self.decide_with(Some(Keyed { states, recall })).0
    }

    /// Decide; the plan and the stock as it ends.
    pub fn decide_with(mut self, keyed: Option<Keyed<'_>>) -> (Plan, HashMap<String, i64>) {
        let records: Vec<&Handled> = self.records.iter().collect();
        let new_ids: HashSet<&str> = records
            .iter()
            .filter_map(|h| h.event_id.as_deref())
            .filter(|id| !self.decided_before.iter().any(|d| d == id))
            .collect();
        let plan = plan(
            &self.batch,
            self.mode,
            &records,
            (&new_ids, &self.refused),
            &mut self.stock,
            keyed,
        );
        (plan, self.stock)
    }
}
