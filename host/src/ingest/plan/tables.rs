//! The decision, the team's tables' part: what a batch's applied records write to each
//! declared table, folded in offset order into one last word per row, so that a few set-based
//! statements per table apply it (`db::tables`). The writes of each record stay on its
//! outcome; when the set-based statements fail, they are applied record by record to find the
//! one the table refuses.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::domain::Mutation;
use crate::domain::tables::{
    Cell, Float, Merge, TableBatch, TableShape, TableValue, TableWrites, Tables, sql_text,
};

/// A row's state while the batch's writes are folded.
enum Row {
    Merge { merge: Merge, fresh: bool },
    Deleted { key: Vec<TableValue> },
}

/// A table's shape, its rows in first-write order, and where each key's row is.
type TableRows = (
    Arc<TableShape>,
    Vec<Row>,
    HashMap<Vec<Option<String>>, usize>,
);

/// Fold the table writes of `applied` (each applied record's mutations, in offset order) for
/// the `tables` of the batch's route.
pub fn fold<'a>(tables: &Tables, applied: impl Iterator<Item = &'a [Mutation]>) -> TableWrites {
    let mut writes = TableWrites::default();
    // Per table (by rank), its rows by key, in first-write order.
    let mut rows: BTreeMap<usize, TableRows> = BTreeMap::new();
    for mutations in applied {
        for mutation in mutations {
            let Some((table, op, _)) = mutation.table_write() else {
                continue;
            };
            // Checked when the plugin returned it: a declared table, with a shape.
            let Some(shape) = tables.get(table) else {
                writes.sequential = true;
                continue;
            };
            *writes.counts.entry((table.to_string(), op)).or_default() += 1;
            let (shape, list, index) = rows
                .entry(tables.rank(table))
                .or_insert_with(|| (Arc::clone(shape), Vec::new(), HashMap::new()));
            let cells = match mutation {
                Mutation::Upsert { row, .. } => row.as_slice(),
                Mutation::Delete { key, .. } | Mutation::Add { key, .. } => key.as_slice(),
                _ => continue,
            };
            let Some((key, identity)) = key_of(shape, cells) else {
                writes.sequential = true;
                continue;
            };
            let at = match index.get(&identity) {
                Some(&at) => at,
                None => {
                    // The batch's first write to this row: nothing on it yet.
                    index.insert(identity, list.len());
                    list.push(match mutation {
                        Mutation::Delete { .. } => Row::Deleted { key },
                        _ => Row::Merge {
                            merge: Merge {
                                key,
                                set: BTreeMap::new(),
                                add: BTreeMap::new(),
                            },
                            fresh: false,
                        },
                    });
                    list.len() - 1
                }
            };
            if !apply(shape, &mut list[at], mutation) {
                writes.sequential = true;
            }
        }
    }
    for (_, (shape, list, _)) in rows {
        let mut batch = TableBatch {
            shape,
            deletes: Vec::new(),
            merges: Vec::new(),
        };
        for row in list {
            match row {
                Row::Deleted { key } => batch.deletes.push(key),
                Row::Merge { merge, fresh } => {
                    if fresh {
                        batch.deletes.push(merge.key.clone());
                    }
                    batch.merges.push(merge);
                }
            }
        }
        writes.tables.push(batch);
    }
    writes
}

/// The key's values in the key's column order, and its identity (the text PostgreSQL reads).
fn key_of(shape: &TableShape, cells: &[Cell]) -> Option<(Vec<TableValue>, Vec<Option<String>>)> {
    let mut values = Vec::with_capacity(shape.key.len());
    let mut identity = Vec::with_capacity(shape.key.len());
    for &index in &shape.key {
        let column = &shape.columns[index];
        let cell = cells.iter().find(|c| c.column == column.name)?;
        identity.push(sql_text(shape, column, &cell.value).ok()?);
        values.push(cell.value.clone());
    }
    Some((values, identity))
}

/// One write onto a row's last word; `false` if it cannot be folded (then the batch is written
/// record by record).
fn apply(shape: &TableShape, row: &mut Row, mutation: &Mutation) -> bool {
    match mutation {
        Mutation::Delete { .. } => {
            let key = match row {
                Row::Merge { merge, .. } => std::mem::take(&mut merge.key),
                Row::Deleted { key } => std::mem::take(key),
            };
            *row = Row::Deleted { key };
            true
        }
        Mutation::Upsert { row: cells, .. } => {
            let merge = merge_of(row);
            for cell in cells {
                let Some((index, _)) = shape.column(&cell.column) else {
                    return false;
                };
                if shape.is_key(index) {
                    continue;
                }
                merge.add.remove(&index);
                merge.set.insert(index, cell.value.clone());
            }
            true
        }
        Mutation::Add { column, delta, .. } => {
            let Some((index, _)) = shape.column(column) else {
                return false;
            };
            let merge = merge_of(row);
            let slot = if merge.set.contains_key(&index) {
                merge.set.get_mut(&index)
            } else {
                Some(merge.add.entry(index).or_insert(TableValue::Int(0)))
            };
            match slot.and_then(|current| sum(current, delta).map(|total| (current, total))) {
                Some((current, total)) => {
                    *current = total;
                    true
                }
                None => false,
            }
        }
        _ => true,
    }
}

/// The row as a merge to write onto (a deleted row is written again: fresh).
fn merge_of(row: &mut Row) -> &mut Merge {
    if let Row::Deleted { key } = row {
        *row = Row::Merge {
            merge: Merge {
                key: std::mem::take(key),
                set: BTreeMap::new(),
                add: BTreeMap::new(),
            },
            fresh: true,
        };
    }
    match row {
        Row::Merge { merge, .. } => merge,
        Row::Deleted { .. } => unreachable!("made a merge above"),
    }
}

/// `a + b` for numbers that can be added here exactly; `None` otherwise.
fn sum(a: &TableValue, b: &TableValue) -> Option<TableValue> {
    use TableValue::{Float as F, Int};
    match (a, b) {
        (Int(x), Int(y)) => x.checked_add(*y).map(Int),
        (F(x), F(y)) => Some(F(Float(x.0 + y.0))),
        (Int(0), F(y)) => Some(F(*y)),
        _ => None,
    }
}
