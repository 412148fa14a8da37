//! Ingest, the decision: given handled records, which event ids are new and the current stock,
//! what happens to each record, what the stock becomes and which rows to write. Pure: the
//! transaction (`apply`) reads what this needs and writes what it answers; ingest and redrive
//! both go through here.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::db::ingest::{DeadLetterRow, Outcomes};
use crate::db::plugins::ShadowTally;
use crate::domain::{
    Consumed, EVENT_ID_HEADER, Header, Mutation, OrderStatus, Record, VERDICTS_CONTENT_TYPE,
    VerdictsWriter, emitted_event_id, emitted_headers, state_change,
};
use crate::runtime::HandleError;
use crate::trace::{TRACEPARENT, TraceParent};

/// What a plugin made of a record.
pub type Output = Result<Vec<Mutation>, HandleError>;

/// One consumed record after its plugin ran (and the shadow candidate, if one runs).
#[derive(Debug, Clone)]
pub struct Handled {
    pub record: Consumed,
    pub event_id: Option<String>,
    pub result: Output,
    /// The shadow candidate's output: compared, never applied.
    pub shadow: Option<Output>,
    /// On a route that keeps state, the key's state the calls were given (`Some(None)`: the
    /// key had none); `None` where they were given none to see (no state kept, no key).
    pub seen_state: Option<Option<Vec<u8>>>,
}

impl Handled {
    pub fn new(record: Consumed, result: Output) -> Self {
        Self {
            event_id: record.event_id(),
            record,
            result,
            shadow: None,
            seen_state: None,
        }
    }
}

/// Whether a shadow candidate agrees with the active version: the same mutations, or a
/// failure of the same kind.
pub fn agrees(active: &Output, shadow: &Output) -> bool {
    match (active, shadow) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.kind() == b.kind(),
        _ => false,
    }
}

/// An output as JSON, for showing a difference.
pub fn output_json(output: &Output) -> serde_json::Value {
    match output {
        Ok(mutations) => serde_json::json!({ "mutations": mutations }),
        Err(e) => serde_json::json!({ "error": { "kind": e.kind(), "reason": e.to_string() } }),
    }
}

/// Differences noted per batch (the database keeps the first few of each candidate).
const DIFFERENCES_PER_BATCH: usize = 5;

/// The comparison of a batch's shadow outputs with the active ones.
fn shadow_tally(cx: &BatchContext, records: &[&Handled]) -> Option<ShadowTally> {
    let version = cx.shadow_version.clone()?;
    let mut tally = ShadowTally {
        name: cx.plugin.clone(),
        shadow_version: version,
        ..ShadowTally::default()
    };
    for handled in records {
        let Some(shadow) = &handled.shadow else {
            continue;
        };
        tally.compared += 1;
        if agrees(&handled.result, shadow) {
            tally.agreed += 1;
        } else if tally.differences.len() < DIFFERENCES_PER_BATCH {
            let r = &handled.record;
            tally.differences.push((
                r.topic.clone(),
                r.partition,
                r.offset,
                output_json(&handled.result),
                output_json(shadow),
            ));
        }
    }
    (tally.compared > 0).then_some(tally)
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
    /// The shadow candidate that ran beside the plugin, if any.
    pub shadow_version: Option<String>,
}

/// First decisions, or a dead letter's redrive (its `attempt`-th).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ingest,
    Redrive { attempt: i32 },
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
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Applied => "APPLIED",
            Self::Rejected { .. } => "REJECTED",
            Self::DeadLetter { .. } => "DEAD_LETTER",
            Self::Duplicate => "DUPLICATE",
        }
    }

    /// The order's status this decision implies.
    pub fn order_status(&self) -> OrderStatus {
        match self {
            Self::Applied => OrderStatus::Applied,
            _ => OrderStatus::Rejected,
        }
    }

    pub fn kind_and_reason(&self) -> (Option<&'static str>, Option<&str>) {
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
    /// Records the applied records emitted, by topic.
    pub emitted: BTreeMap<String, u64>,
    /// Records called again with their key's state (see [`Keyed`]).
    pub recalled: usize,
}

impl BatchReport {
    /// Records decided (any outcome).
    pub fn decided(&self) -> usize {
        self.applied + self.rejected + self.dead_lettered + self.duplicates
    }
}

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
        .filter(|h| h.seen_state.is_some())
        .filter_map(|h| h.record.key.as_deref())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// What to write for a batch.
#[derive(Debug, Default)]
pub struct Plan {
    /// One per record, in order.
    pub decisions: Vec<Decision>,
    /// Products whose stock changes, with their new stock.
    pub stock: Vec<(String, i64)>,
    /// Rows for the outcome log (ingest only).
    pub outcomes: Outcomes,
    /// New dead letters (ingest only).
    pub dead_letters: Vec<DeadLetterRow>,
    /// Status events and dead-letter copies.
    pub outbox: Vec<Record>,
    /// What the shadow candidate's outputs add to its tally.
    pub shadow: Option<ShadowTally>,
    /// Keys whose state changes, with their new state (`None`: cleared).
    pub state: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Products that records called again adjust and that were not locked (the calls the
    /// batch started with did not name them): lock them and decide again.
    pub unlocked: Vec<String>,
    pub report: BatchReport,
}

/// On a route that keeps state: the locked state of every key whose state the batch's calls
/// saw (keys without one absent), and how to call a record again with its key's state at its
/// place in the batch when what its call saw differs (an earlier record of the key was not
/// applied, or the key changed since the calls' state was read).
pub struct Keyed<'a> {
    pub states: HashMap<Vec<u8>, Vec<u8>>,
    pub recall: &'a mut dyn FnMut(&Handled, Option<&[u8]>) -> Handled,
}

/// Decide `records` in order. `new_ids`: the event ids this transaction recorded first (an id
/// outside it was decided before, or appears twice here); `stock`: the locked stock of every
/// product the records touch, updated as records apply; `keyed`: the keys' state, updated as
/// records apply.
pub fn plan(
    cx: &BatchContext,
    mode: Mode,
    records: &[&Handled],
    new_ids: &HashSet<&str>,
    stock: &mut HashMap<String, i64>,
    mut keyed: Option<Keyed<'_>>,
) -> Plan {
    let mut plan = Plan::default();
    let stock_before = stock.clone();
    let states_before = keyed.as_ref().map(|k| k.states.clone());
    let mut recalled: Vec<(usize, Handled)> = Vec::new();
    let mut decided_here: HashSet<&str> = HashSet::new();
    // The verdicts to report, by source partition: one status record each.
    let mut verdicts: BTreeMap<i32, PartitionVerdicts> = BTreeMap::new();
    for (position, &original) in records.iter().enumerate() {
        let duplicate = original
            .event_id
            .as_deref()
            .is_some_and(|id| !new_ids.contains(id) || !decided_here.insert(id));
        // What the call saw must be the key's state at this place of the batch.
        let key = original.record.key.as_deref();
        let again = match (&mut keyed, &original.seen_state, key) {
            (Some(keyed), Some(seen), Some(key))
                if !duplicate && keyed.states.get(key) != seen.as_ref() =>
            {
                let state = keyed.states.get(key).map(Vec::as_slice);
                Some((keyed.recall)(original, state))
            }
            _ => None,
        };
        let handled = again.as_ref().unwrap_or(original);
        if again.is_some()
            && let Ok(mutations) = &handled.result
        {
            plan.unlocked.extend(
                mutations
                    .iter()
                    .filter_map(Mutation::product)
                    .filter(|id| !stock.contains_key(*id))
                    .map(str::to_string),
            );
        }
        let decision = if duplicate {
            Decision::Duplicate
        } else {
            match &handled.result {
                Err(error) => Decision::from_error(error),
                Ok(mutations) => match apply_in_memory(stock, mutations) {
                    Ok(()) => {
                        if let (Some(keyed), Some(key), Some(change)) =
                            (&mut keyed, key, state_change(mutations))
                            && handled.seen_state.is_some()
                        {
                            match change {
                                Some(value) => keyed.states.insert(key.to_vec(), value.to_vec()),
                                None => keyed.states.remove(key),
                            };
                        }
                        emit(&mut plan, cx, handled, mutations);
                        Decision::Applied
                    }
                    Err(refusal) => refusal,
                },
            }
        };
        match &decision {
            Decision::Applied => plan.report.applied += 1,
            Decision::Rejected { .. } => plan.report.rejected += 1,
            Decision::DeadLetter { .. } => plan.report.dead_lettered += 1,
            Decision::Duplicate => plan.report.duplicates += 1,
        }
        if let Decision::DeadLetter { kind, reason } = &decision
            && mode == Mode::Ingest
        {
            let row = dead_letter_row(handled, kind, reason);
            if let Some(topic) = &cx.dead_letter_topic {
                plan.outbox.push(dead_letter_record(topic, cx, &row));
            }
            plan.dead_letters.push(row);
        }
        let reported = match mode {
            Mode::Ingest => decision != Decision::Duplicate,
            // A redrive that is poison again changes nothing for the order.
            Mode::Redrive { .. } => {
                matches!(decision, Decision::Applied | Decision::Rejected { .. })
            }
        };
        if let (Some(event_id), true) = (&handled.event_id, reported)
            && cx.status_topic.is_some()
        {
            let trace = processing_context(handled, mode).map(|(_, processing)| processing);
            let record = &handled.record;
            let partition = verdicts
                .entry(record.partition)
                .or_insert_with(|| PartitionVerdicts {
                    writer: VerdictsWriter::new(
                        (&record.topic, record.partition),
                        (&cx.plugin, &cx.plugin_version),
                        matches!(mode, Mode::Redrive { .. }),
                    ),
                    first: (event_id.clone(), record.offset),
                    trace: None,
                });
            let trace = trace.map(|t| t.to_string());
            let (kind, reason) = decision.kind_and_reason();
            partition.writer.push(
                (event_id, record.offset),
                decision.order_status(),
                (reason, kind),
                trace.as_deref(),
            );
            if partition.trace.is_none() {
                partition.trace = trace;
            }
        }
        if mode == Mode::Ingest {
            plan.outcomes.push(handled, &decision);
        }
        plan.decisions.push(decision);
        if let Some(again) = again {
            recalled.push((position, again));
        }
    }
    if let Some(topic) = &cx.status_topic {
        for (partition, verdicts) in verdicts {
            plan.outbox
                .push(verdicts_record(topic, cx, mode, partition, verdicts));
        }
    }
    // What changed: the products and keys whose value differs from the locked one.
    plan.stock = stock
        .iter()
        .filter(|(id, value)| stock_before.get(*id) != Some(*value))
        .map(|(id, value)| (id.clone(), *value))
        .collect();
    plan.stock.sort_unstable();
    if let (Some(keyed), Some(before)) = (keyed, states_before) {
        let mut keys: Vec<&Vec<u8>> = keyed.states.keys().chain(before.keys()).collect();
        keys.sort_unstable();
        keys.dedup();
        plan.state = keys
            .into_iter()
            .filter(|key| keyed.states.get(*key) != before.get(*key))
            .map(|key| (key.clone(), keyed.states.get(key).cloned()))
            .collect();
    }
    // The shadow candidate's outputs, as the records were finally called.
    let mut finals: Vec<&Handled> = records.to_vec();
    for (position, again) in &recalled {
        finals[*position] = again;
    }
    plan.shadow = shadow_tally(cx, &finals);
    plan.unlocked.sort_unstable();
    plan.unlocked.dedup();
    plan.report.recalled = recalled.len();
    plan.report.queued = plan.outbox.len();
    plan
}

/// Queue the records an applied record emits, each with its own `event-id`.
fn emit(plan: &mut Plan, cx: &BatchContext, handled: &Handled, mutations: &[Mutation]) {
    let source = &handled.record;
    let emitted = mutations.iter().filter_map(|m| match m {
        Mutation::Emit(record) => Some(record),
        _ => None,
    });
    for (index, record) in emitted.enumerate() {
        let id = emitted_event_id(
            &cx.group_id,
            &source.topic,
            source.partition,
            source.offset,
            index,
        );
        plan.outbox.push(Record {
            topic: record.topic.clone(),
            key: record.key.clone(),
            payload: record.payload.clone(),
            headers: emitted_headers(&record.headers, id),
        });
        *plan.report.emitted.entry(record.topic.clone()).or_default() += 1;
    }
}

impl Outcomes {
    fn push(&mut self, handled: &Handled, decision: &Decision) {
        let (kind, reason) = decision.kind_and_reason();
        self.partition.push(handled.record.partition);
        self.offset.push(handled.record.offset);
        self.event_id.push(handled.event_id.clone());
        self.outcome.push(decision.outcome());
        self.error_kind.push(kind);
        self.reason.push(reason.map(str::to_string).or_else(|| {
            (*decision == Decision::Duplicate).then(|| "event already processed".to_string())
        }));
        self.mutations.push(match (&handled.result, decision) {
            (Ok(mutations), Decision::Applied) => serde_json::to_vec(mutations).ok(),
            _ => None,
        });
    }
}

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

fn dead_letter_row(handled: &Handled, kind: &'static str, reason: &str) -> DeadLetterRow {
    DeadLetterRow {
        record: handled.record.clone(),
        event_id: handled.event_id.clone(),
        error_kind: kind,
        error: reason.to_string(),
    }
}

/// The largest payload copied to the dead-letter topic: under Kafka's default 1 MB limit.
const MAX_DLT_PAYLOAD: usize = crate::domain::MAX_RECORD_BYTES;

/// The poison record for `<topic>.DLT`: the original key, value and headers, plus where it
/// came from and why it failed (Spring Kafka's `kafka_dlt-*` header names, text values).
fn dead_letter_record(topic: &str, cx: &BatchContext, row: &DeadLetterRow) -> Record {
    let original = &row.record;
    let mut headers = original.headers.clone();
    // A record too large to republish is copied truncated; the table keeps it whole.
    let mut payload = original.payload.clone();
    if let Some(bytes) = payload.as_mut().filter(|p| p.len() > MAX_DLT_PAYLOAD) {
        headers.push(Header::text(
            "sluice-payload-truncated-from",
            bytes.len().to_string(),
        ));
        bytes.truncate(MAX_DLT_PAYLOAD);
    }
    headers.extend([
        Header::text("kafka_dlt-original-topic", original.topic.clone()),
        Header::text(
            "kafka_dlt-original-partition",
            original.partition.to_string(),
        ),
        Header::text("kafka_dlt-original-offset", original.offset.to_string()),
        Header::text("kafka_dlt-original-consumer-group", cx.group_id.clone()),
        Header::text("kafka_dlt-exception-message", row.error.clone()),
        Header::text("sluice-error-kind", row.error_kind),
        Header::text("sluice-plugin", cx.plugin.clone()),
        Header::text("sluice-plugin-version", cx.plugin_version.clone()),
    ]);
    Record {
        topic: topic.to_string(),
        key: original.key.clone(),
        payload,
        headers,
    }
}

/// The verdicts on one source partition's records, being written.
struct PartitionVerdicts {
    writer: VerdictsWriter,
    /// The first verdict's order id and offset (the record's own event id names them).
    first: (String, i64),
    /// The first traced verdict's processing span.
    trace: Option<String>,
}

/// The context of a record's processing span, a child of the context the record carries
/// (returned first): derived from it and the record's place, so the status event (written in
/// the plan) and the span exported after commit name the same span. `None` for a record
/// without one.
pub fn processing_context(handled: &Handled, mode: Mode) -> Option<(TraceParent, TraceParent)> {
    let carried = TraceParent::from_headers(&handled.record.headers)?;
    let mut place = [0u8; 16];
    place[..4].copy_from_slice(&handled.record.partition.to_be_bytes());
    place[4..12].copy_from_slice(&handled.record.offset.to_be_bytes());
    let len = match mode {
        Mode::Ingest => 12,
        Mode::Redrive { attempt } => {
            place[12..].copy_from_slice(&attempt.to_be_bytes());
            16
        }
    };
    Some((carried, carried.hop(&place[..len])))
}

/// The status topic's record for the verdicts on one source partition's records, keyed by
/// that partition (so a redrive's verdict follows the first one on the same status partition).
/// Its `event-id` is its own, distinct per record; its `traceparent` is that of its first
/// traced verdict (each verdict's own is in the payload), so that a trace goes on from Kafka
/// headers alone.
fn verdicts_record(
    topic: &str,
    cx: &BatchContext,
    mode: Mode,
    partition: i32,
    verdicts: PartitionVerdicts,
) -> Record {
    let (first_order, first_offset) = &verdicts.first;
    let dedupe_id = match mode {
        Mode::Ingest => format!("{}/{partition}/{first_offset}/status", cx.topic),
        Mode::Redrive { attempt } => format!("{first_order}/redrive/{attempt}"),
    };
    let mut headers = vec![
        Header::text(EVENT_ID_HEADER, dedupe_id),
        Header::text("content-type", VERDICTS_CONTENT_TYPE),
    ];
    if let Some(trace) = verdicts.trace {
        headers.push(Header::text(TRACEPARENT, trace));
    }
    Record {
        topic: topic.to_string(),
        key: Some(format!("{}/{partition}", cx.topic).into_bytes()),
        payload: Some(verdicts.writer.finish()),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ProductId, decode_verdicts};

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

    fn handled(
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

    fn cx() -> BatchContext {
        BatchContext {
            group_id: "g".into(),
            topic: "orders".into(),
            plugin: "stock".into(),
            plugin_version: "v1".into(),
            status_topic: Some("status".into()),
            dead_letter_topic: Some("orders.DLT".into()),
            shadow_version: None,
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
            HandleError::Blocked("x".into()),
            HandleError::InvalidOutput("x".into()),
        ] {
            assert_eq!(
                Decision::from_error(&error).outcome(),
                "DEAD_LETTER",
                "{error}"
            );
        }
    }

    #[test]
    fn stale_and_replayed_records_are_skipped_and_positions_advance() {
        let batch = vec![
            handled(0, 4, None, Ok(vec![])),
            handled(0, 5, None, Ok(vec![])),
            handled(1, 0, None, Ok(vec![])),
            handled(0, 5, None, Ok(vec![])), // replayed within the batch
            handled(0, 6, None, Ok(vec![])),
        ];
        let stored = HashMap::from([(0, 5)]);
        let (fresh, next) = select_fresh(&batch, &stored);
        let offsets: Vec<(i32, i64)> = fresh
            .iter()
            .map(|h| (h.record.partition, h.record.offset))
            .collect();
        assert_eq!(offsets, [(0, 5), (1, 0), (0, 6)]);
        assert_eq!(next, BTreeMap::from([(0, 7), (1, 1)]));
    }

    #[test]
    fn a_batch_is_decided_in_order_with_its_rows() {
        let batch = [
            handled(0, 0, Some("a"), Ok(vec![adjust("P", -3)])),
            handled(0, 1, Some("a"), Ok(vec![adjust("P", -3)])), // same event again
            handled(0, 2, Some("old"), Ok(vec![adjust("P", -1)])), // decided before
            handled(0, 3, Some("b"), Ok(vec![adjust("P", -3)])), // 2 left: refused
            handled(
                0,
                4,
                Some("c"),
                Err(HandleError::InvalidMessage("no".into())),
            ),
            handled(0, 5, None, Ok(vec![adjust("P", -2)])),
        ];
        let records: Vec<&Handled> = batch.iter().collect();
        let new_ids = HashSet::from(["a", "b", "c"]);
        let mut stock = HashMap::from([("P".to_string(), 5)]);

        let plan = plan(&cx(), Mode::Ingest, &records, &new_ids, &mut stock, None);

        let outcomes: Vec<&str> = plan.decisions.iter().map(Decision::outcome).collect();
        assert_eq!(
            outcomes,
            [
                "APPLIED",
                "DUPLICATE",
                "DUPLICATE",
                "REJECTED",
                "DEAD_LETTER",
                "APPLIED"
            ]
        );
        assert_eq!(plan.stock, [("P".to_string(), 0)]);
        assert_eq!(
            plan.outcomes.outcome.len(),
            6,
            "every record has an outcome row"
        );
        assert_eq!(plan.dead_letters.len(), 1);
        assert_eq!(plan.dead_letters[0].record.offset, 4);
        let topics: Vec<&str> = plan.outbox.iter().map(|r| r.topic.as_str()).collect();
        assert_eq!(
            topics,
            ["orders.DLT", "status"],
            "the poison copy, and the verdicts of the partition's records in one record"
        );
        let verdicts = decode_verdicts(plan.outbox[1].payload.as_ref().unwrap()).unwrap();
        let orders: Vec<&str> = verdicts.iter().map(|v| v.order_id.as_str()).collect();
        assert_eq!(
            orders,
            ["a", "b", "c"],
            "a verdict per decided event, in offset order; duplicates and records without an \
             event id report nothing"
        );
        assert_eq!(verdicts[1].status, OrderStatus::Rejected);
        assert_eq!(
            verdicts[1].error_kind.as_deref(),
            Some("insufficient-stock")
        );
        assert_eq!(
            verdicts[2].status,
            OrderStatus::Rejected,
            "poison rejects the order"
        );
        assert_eq!(plan.outbox[1].key.as_deref(), Some(&b"orders/0"[..]));
        assert_eq!(
            (
                plan.report.applied,
                plan.report.rejected,
                plan.report.dead_lettered,
                plan.report.duplicates,
                plan.report.queued
            ),
            (2, 1, 1, 2, 2)
        );
    }

    #[test]
    fn verdicts_travel_one_record_per_source_partition_with_a_trace() {
        let traced = Handled::new(
            Consumed {
                headers: vec![
                    Header::text(EVENT_ID_HEADER, "t"),
                    Header::text(
                        TRACEPARENT,
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    ),
                ],
                ..handled(1, 4, None, Ok(vec![])).record
            },
            Ok(vec![adjust("P", -1)]),
        );
        let batch = [
            handled(0, 7, Some("a"), Ok(vec![adjust("P", -1)])),
            traced,
            handled(0, 8, Some("b"), Ok(vec![adjust("P", -1)])),
        ];
        let records: Vec<&Handled> = batch.iter().collect();
        let new_ids = HashSet::from(["a", "b", "t"]);
        let mut stock = HashMap::from([("P".to_string(), 10)]);

        let plan = plan(&cx(), Mode::Ingest, &records, &new_ids, &mut stock, None);

        let keys: Vec<&[u8]> = plan
            .outbox
            .iter()
            .filter_map(|r| r.key.as_deref())
            .collect();
        assert_eq!(keys, [&b"orders/0"[..], &b"orders/1"[..]]);
        let first = decode_verdicts(plan.outbox[0].payload.as_ref().unwrap()).unwrap();
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|v| v.trace.is_none()));
        let second = &plan.outbox[1];
        let verdict = &decode_verdicts(second.payload.as_ref().unwrap()).unwrap()[0];
        let trace = verdict
            .trace
            .as_deref()
            .expect("the processing span's context");
        assert!(trace.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_eq!(
            TraceParent::from_headers(&second.headers)
                .map(|t| t.to_string())
                .as_deref(),
            Some(trace),
            "the record's header names its first traced verdict's span"
        );
    }

    #[test]
    fn a_shadow_candidate_is_compared_and_never_applied() {
        let mut batch = [
            handled(0, 0, Some("a"), Ok(vec![adjust("P", -1)])),
            handled(0, 1, Some("b"), Ok(vec![adjust("P", -1)])),
            handled(
                0,
                2,
                Some("c"),
                Err(HandleError::InvalidMessage("x".into())),
            ),
        ];
        batch[0].shadow = Some(Ok(vec![adjust("P", -1)]));
        batch[1].shadow = Some(Ok(vec![adjust("P", -2)]));
        batch[2].shadow = Some(Err(HandleError::InvalidMessage("y".into())));
        let records: Vec<&Handled> = batch.iter().collect();
        let mut cx = cx();
        cx.shadow_version = Some("v2".into());
        let new_ids = HashSet::from(["a", "b", "c"]);
        let mut stock = HashMap::from([("P".to_string(), 10)]);

        let plan = plan(&cx, Mode::Ingest, &records, &new_ids, &mut stock, None);

        assert_eq!(
            plan.stock,
            [("P".to_string(), 8)],
            "only the active outputs apply"
        );
        let tally = plan.shadow.expect("a tally");
        assert_eq!((tally.compared, tally.agreed), (3, 2));
        let (_, _, offset, active, shadow) = &tally.differences[0];
        assert_eq!(*offset, 1);
        assert_eq!(active["mutations"][0]["delta"], -1);
        assert_eq!(shadow["mutations"][0]["delta"], -2);
    }

    fn keyed(
        seen: Option<&str>,
        result: Result<Vec<Mutation>, HandleError>,
        offset: i64,
    ) -> Handled {
        Handled {
            seen_state: Some(seen.map(|s| s.as_bytes().to_vec())),
            ..handled(0, offset, Some(&format!("e{offset}")), result)
        }
    }

    fn set(value: &str) -> Mutation {
        Mutation::SetState(value.as_bytes().to_vec())
    }

    #[test]
    fn a_key_s_records_are_decided_on_the_state_the_applied_ones_before_them_leave() {
        // The calls assumed every record applies; the second is refused for stock, so the
        // third saw a state its key never had and is called again with the right one.
        let batch = [
            keyed(None, Ok(vec![adjust("P", -3), set("1")]), 0),
            keyed(Some("1"), Ok(vec![adjust("P", -3), set("2")]), 1),
            keyed(Some("2"), Ok(vec![set("3")]), 2),
        ];
        let records: Vec<&Handled> = batch.iter().collect();
        let new_ids = HashSet::from(["e0", "e1", "e2"]);
        let mut stock = HashMap::from([("P".to_string(), 5)]);
        let mut called_with = Vec::new();
        let mut recall = |h: &Handled, state: Option<&[u8]>| {
            called_with.push((h.record.offset, state.map(<[u8]>::to_vec)));
            let next = std::str::from_utf8(state.unwrap_or(b"0"))
                .unwrap()
                .parse::<u32>()
                .unwrap()
                + 1;
            Handled {
                result: Ok(vec![set(&next.to_string())]),
                seen_state: Some(state.map(<[u8]>::to_vec)),
                ..h.clone()
            }
        };
        let keyed = Keyed {
            states: HashMap::new(),
            recall: &mut recall,
        };

        let plan = plan(
            &cx(),
            Mode::Ingest,
            &records,
            &new_ids,
            &mut stock,
            Some(keyed),
        );

        let outcomes: Vec<&str> = plan.decisions.iter().map(Decision::outcome).collect();
        assert_eq!(outcomes, ["APPLIED", "REJECTED", "APPLIED"]);
        assert_eq!(
            called_with,
            [(2, Some(b"1".to_vec()))],
            "only the third, with the first's state"
        );
        assert_eq!(plan.state, [(b"k".to_vec(), Some(b"2".to_vec()))]);
        assert_eq!(plan.report.recalled, 1);
        assert_eq!(plan.stock, [("P".to_string(), 2)]);
    }

    #[test]
    fn a_key_changed_elsewhere_is_called_again_and_a_cleared_state_is_written_as_none() {
        let batch = [keyed(Some("old"), Ok(vec![Mutation::ClearState]), 0)];
        let records: Vec<&Handled> = batch.iter().collect();
        let new_ids = HashSet::from(["e0"]);
        let mut recalls = 0;
        let mut recall = |h: &Handled, state: Option<&[u8]>| {
            recalls += 1;
            assert_eq!(state, Some(&b"newer"[..]));
            h.clone()
        };
        let keyed = Keyed {
            states: HashMap::from([(b"k".to_vec(), b"newer".to_vec())]),
            recall: &mut recall,
        };
        let plan = plan(
            &cx(),
            Mode::Ingest,
            &records,
            &new_ids,
            &mut HashMap::new(),
            Some(keyed),
        );
        assert_eq!(recalls, 1);
        assert_eq!(plan.state, [(b"k".to_vec(), None)]);
    }

    #[test]
    fn a_product_only_a_second_call_names_is_reported_for_locking() {
        // The state changed elsewhere: called again, the record names a product no call of
        // the batch named before, whose stock was not locked.
        let batch = [keyed(Some("old"), Ok(vec![adjust("P", -1)]), 0)];
        let records: Vec<&Handled> = batch.iter().collect();
        let new_ids = HashSet::from(["e0"]);
        let mut recall = |h: &Handled, _: Option<&[u8]>| Handled {
            result: Ok(vec![adjust("P", -1), adjust("GIFT", -1)]),
            ..h.clone()
        };
        let keyed = Keyed {
            states: HashMap::from([(b"k".to_vec(), b"newer".to_vec())]),
            recall: &mut recall,
        };
        let mut stock = HashMap::from([("P".to_string(), 5)]);
        let plan = plan(
            &cx(),
            Mode::Ingest,
            &records,
            &new_ids,
            &mut stock,
            Some(keyed),
        );
        assert_eq!(plan.unlocked, ["GIFT"]);
    }

    #[test]
    fn records_an_applied_record_emits_are_queued_with_an_event_id_of_their_own() {
        let emitted = Mutation::Emit(Record {
            topic: "alerts".into(),
            key: Some(b"k".to_vec()),
            payload: Some(b"v".to_vec()),
            headers: vec![Header::text(EVENT_ID_HEADER, "the plugin's own")],
        });
        let batch = [
            handled(2, 7, Some("a"), Ok(vec![emitted.clone(), emitted.clone()])),
            handled(2, 8, Some("b"), Ok(vec![adjust("P", -9), emitted])),
        ];
        let records: Vec<&Handled> = batch.iter().collect();
        let new_ids = HashSet::from(["a", "b"]);
        let mut stock = HashMap::from([("P".to_string(), 1)]);

        let plan = plan(&cx(), Mode::Ingest, &records, &new_ids, &mut stock, None);

        let alerts: Vec<&Record> = plan.outbox.iter().filter(|r| r.topic == "alerts").collect();
        assert_eq!(alerts.len(), 2, "the refused record emits nothing");
        let ids: Vec<Option<String>> = alerts
            .iter()
            .map(|r| {
                let mut ids = r.headers.iter().filter(|h| h.key == EVENT_ID_HEADER);
                let id = ids
                    .next()
                    .and_then(|h| String::from_utf8(h.value.clone()?).ok());
                assert!(ids.next().is_none(), "one event id");
                id
            })
            .collect();
        assert_eq!(
            ids,
            [
                Some("g/orders/2/7/emit/0".to_string()),
                Some("g/orders/2/7/emit/1".to_string())
            ]
        );
        assert_eq!(
            plan.report.emitted,
            BTreeMap::from([("alerts".to_string(), 2)])
        );
    }

    #[test]
    fn a_redrive_reports_its_verdict_with_the_error_kind_and_writes_no_new_dead_letter() {
        let batch = [handled(3, 9, Some("e"), Ok(vec![adjust("P", -9)]))];
        let records: Vec<&Handled> = batch.iter().collect();
        let new_ids = HashSet::from(["e"]);
        let mut stock = HashMap::from([("P".to_string(), 5)]);

        let plan = plan(
            &cx(),
            Mode::Redrive { attempt: 2 },
            &records,
            &new_ids,
            &mut stock,
            None,
        );

        assert_eq!(plan.decisions[0].outcome(), "REJECTED");
        assert!(plan.outcomes.outcome.is_empty() && plan.dead_letters.is_empty());
        let [status] = plan.outbox.as_slice() else {
            panic!("one status event: {:?}", plan.outbox)
        };
        assert_eq!(
            status.headers[0].value.as_deref(),
            Some(&b"e/redrive/2"[..])
        );
        let [event] = decode_verdicts(status.payload.as_ref().unwrap())
            .unwrap()
            .try_into()
            .expect("one verdict");
        assert!(event.redriven);
        assert_eq!(event.error_kind.as_deref(), Some("insufficient-stock"));

        let poison = [handled(
            3,
            9,
            Some("e"),
            Err(HandleError::Trap("again".into())),
        )];
        let records: Vec<&Handled> = poison.iter().collect();
        let plan = super::plan(
            &cx(),
            Mode::Redrive { attempt: 3 },
            &records,
            &new_ids,
            &mut stock,
            None,
        );
        assert_eq!(plan.decisions[0].outcome(), "DEAD_LETTER");
        assert!(
            plan.outbox.is_empty(),
            "still poison: nothing to report, no new copy"
        );
    }
}
