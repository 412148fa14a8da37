//! Ingest, the decision: given handled records, which event ids are new and the current
//! stock (and, on a route that keeps state, its keys' state), what happens to each record,
//! what the stock and state become, and which rows and records to write. The transaction
//! (`apply`) reads what this needs and writes what it answers; ingest and redrive both go
//! through here.
//!
//! Pure, with one exception: on a route that keeps state, a record whose call saw another
//! state than its key's at its place is called again, through [`Keyed::recall`] (a plugin
//! call, bounded by its deadline). One step per file: [`decision`] (one record), [`stock`],
//! [`verdicts`], [`dead_letters`], [`emitted`], [`shadow`]; [`reads`] says what to lock first.

mod dead_letters;
mod decision;
mod emitted;
mod reads;
mod shadow;
mod stock;
mod tables;
mod verdicts;

#[cfg(test)]
mod tests;

pub use decision::Decision;
pub use reads::{select_fresh, state_keys, touched_products};
pub use shadow::{agrees, output_json};
pub use verdicts::processing_context;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::db::ingest::{DeadLetterRow, Outcomes};
use crate::db::plugins::ShadowTally;
use crate::domain::tables::{TableOp, TableWrites, Tables};
use crate::domain::{Consumed, Mutation, Record, SeenState};
use crate::runtime::HandleError;
use decision::Decided;
use verdicts::Verdicts;

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
    /// The key's state the calls were given to see.
    pub seen_state: SeenState,
}

impl Handled {
    pub fn new(record: Consumed, result: Output) -> Self {
        Self {
            event_id: record.event_id(),
            record,
            result,
            shadow: None,
            seen_state: SeenState::NotGiven,
        }
    }
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
    /// The declared tables' shapes when the batch began (what its writes were checked against).
    pub tables: Arc<Tables>,
}

/// First decisions, or a dead letter's redrive (its `attempt`-th).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ingest,
    Redrive { attempt: i32 },
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
    /// Table writes of the applied records, by table and kind.
    pub table_writes: BTreeMap<(String, TableOp), u64>,
}

impl BatchReport {
    /// Records decided (any outcome).
    pub fn decided(&self) -> usize {
        self.applied + self.rejected + self.dead_lettered + self.duplicates
    }
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
    /// Status events, dead-letter copies and emitted records.
    pub outbox: Vec<Record>,
    /// What the shadow candidate's outputs add to its tally.
    pub shadow: Option<ShadowTally>,
    /// Keys whose state changes, with their new state (`None`: cleared).
    pub state: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Products that records called again adjust and that were not locked (the calls the
    /// batch started with did not name them): lock them and decide again.
    pub unlocked: Vec<String>,
    /// What the applied records write to the declared tables.
    pub tables: TableWrites,
    /// The records called again (see [`Keyed`]), as called the second time, by position.
    pub recalled: Vec<(usize, Handled)>,
    pub report: BatchReport,
}

impl Plan {
    /// Each applied record's place and table writes, in order, as finally called (`records`:
    /// what the plan decided): what the tables get, record by record.
    pub fn applied_writes<'a>(
        &'a self,
        records: &[&'a Handled],
    ) -> Vec<((i32, i64), &'a [Mutation])> {
        let mut recalled = self.recalled.iter().peekable();
        let mut writes = Vec::new();
        for (position, (&original, decision)) in records.iter().zip(&self.decisions).enumerate() {
            let handled = match recalled.peek() {
                Some((at, again)) if *at == position => {
                    recalled.next();
                    again
                }
                _ => original,
            };
            if *decision != Decision::Applied {
                continue;
            }
            let mutations = handled.result.as_deref().unwrap_or_default();
            if mutations.iter().any(|m| m.table_write().is_some()) {
                let place = (handled.record.partition, handled.record.offset);
                writes.push((place, mutations));
            }
        }
        writes
    }
}

/// Records whose table writes PostgreSQL refused, by (partition, offset), with its message.
pub type Refused = HashMap<(i32, i64), String>;

/// On a route that keeps state: the locked state of every key whose state the batch's calls
/// saw (keys without one absent), and how to call a record again with its key's state at its
/// place in the batch when what its call saw differs (an earlier record of the key was not
/// applied, or the key changed since the calls' state was read).
pub struct Keyed<'a> {
    pub states: HashMap<Vec<u8>, Vec<u8>>,
    pub recall: &'a mut dyn FnMut(&Handled, SeenState) -> Handled,
}

/// Decide `records` in order. `new_ids`: the event ids this transaction recorded first (an id
/// outside it was decided before, or appears twice here); `refused`: records whose table
/// writes PostgreSQL refused in an earlier try of this transaction (dead letters now);
/// `stock`: the locked stock of every product the records touch, updated as records apply;
/// `keyed`: the keys' state, updated as records apply.
pub fn plan(
    batch: &BatchContext,
    mode: Mode,
    records: &[&Handled],
    (new_ids, refused): (&HashSet<&str>, &Refused),
    stock: &mut HashMap<String, i64>,
    mut keyed: Option<Keyed<'_>>,
) -> Plan {
    let mut plan = Plan::default();
    let stock_before = stock.clone();
    let states_before = keyed.as_ref().map(|k| k.states.clone());
    let mut decided_here: HashSet<&str> = HashSet::new();
    let mut verdicts = Verdicts::new(batch, mode);
    let mut decided: Vec<Decided<'_>> = Vec::with_capacity(records.len());
    for &original in records {
        let duplicate = original
            .event_id
            .as_deref()
            .is_some_and(|id| !new_ids.contains(id) || !decided_here.insert(id));
        let refusal = refused.get(&(original.record.partition, original.record.offset));
        let one = decision::decide(original, (duplicate, refusal), stock, keyed.as_mut());
        plan.add(batch, mode, &one, stock);
        verdicts.push(one.handled(), &one.decision);
        decided.push(one);
    }
    plan.outbox.extend(verdicts.records());
    plan.stock = changed(&stock_before, stock);
    if let (Some(keyed), Some(before)) = (keyed, states_before) {
        plan.state = changed_states(&before, &keyed.states);
    }
    let finals: Vec<&Handled> = decided.iter().map(Decided::handled).collect();
    plan.shadow = shadow::tally(batch, &finals);
    let applied = decided
        .iter()
        .filter(|d| d.decision == Decision::Applied)
        .map(|d| d.handled().result.as_deref().unwrap_or_default());
    plan.tables = tables::fold(&batch.tables, applied);
    plan.report.table_writes = plan.tables.counts.clone();
    plan.unlocked.sort_unstable();
    plan.unlocked.dedup();
    plan.report.queued = plan.outbox.len();
    for (position, one) in decided.into_iter().enumerate() {
        if let Some(again) = one.again {
            plan.recalled.push((position, again));
        }
        plan.decisions.push(one.decision);
    }
    plan
}

impl Plan {
    /// What one decided record adds: its count, the products its second call names that are
    /// not locked, the records it emits, its dead letter and its outcome row.
    fn add(
        &mut self,
        batch: &BatchContext,
        mode: Mode,
        decided: &Decided<'_>,
        stock: &HashMap<String, i64>,
    ) {
        let handled = decided.handled();
        if decided.again.is_some() {
            self.report.recalled += 1;
            let products = handled
                .result
                .iter()
                .flatten()
                .filter_map(Mutation::product);
            self.unlocked.extend(
                products
                    .filter(|id| !stock.contains_key(*id))
                    .map(str::to_string),
            );
        }
        match &decided.decision {
            Decision::Applied => {
                self.report.applied += 1;
                let mutations = handled.result.as_deref().unwrap_or_default();
                for record in emitted::emitted(batch, handled, mutations) {
                    *self.report.emitted.entry(record.topic.clone()).or_default() += 1;
                    self.outbox.push(record);
                }
            }
            Decision::Rejected { .. } => self.report.rejected += 1,
            Decision::DeadLetter { kind, reason } => {
                self.report.dead_lettered += 1;
                if mode == Mode::Ingest {
                    let (row, copy) = dead_letters::dead_letter(batch, handled, *kind, reason);
                    self.outbox.extend(copy);
                    self.dead_letters.push(row);
                }
            }
            Decision::Duplicate => self.report.duplicates += 1,
        }
        if mode == Mode::Ingest {
            self.outcomes.push(handled, &decided.decision);
        }
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

/// The products whose stock differs from the locked one, sorted.
fn changed(before: &HashMap<String, i64>, after: &HashMap<String, i64>) -> Vec<(String, i64)> {
    let mut changed: Vec<(String, i64)> = after
        .iter()
        .filter(|(id, value)| before.get(*id) != Some(*value))
        .map(|(id, value)| (id.clone(), *value))
        .collect();
    changed.sort_unstable();
    changed
}

/// The keys whose state differs from the locked one, sorted, with their new state.
fn changed_states(
    before: &HashMap<Vec<u8>, Vec<u8>>,
    after: &HashMap<Vec<u8>, Vec<u8>>,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut keys: Vec<&Vec<u8>> = after.keys().chain(before.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter(|key| after.get(*key) != before.get(*key))
        .map(|key| (key.clone(), after.get(key).cloned()))
        .collect()
}
