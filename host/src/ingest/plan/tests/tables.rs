//! The team's tables: the writes of applied records folded into one last word per row, in
//! offset order; a record whose writes PostgreSQL refused is a dead letter and writes nothing.

use std::sync::Arc;

use super::{Case, adjust, handled};
use crate::domain::tables::{
    Cell, Column, ColumnType, Float, TableOp, TableShape, TableValue, Tables,
};
use crate::domain::{ErrorKind, Mutation, Outcome};
use crate::ingest::plan::Decision;

fn tables() -> Arc<Tables> {
    let column = |name: &str, ty: ColumnType| Column {
        name: name.into(),
        ty,
        not_null: false,
        has_default: false,
        generated: false,
    };
    let sales = TableShape {
        name: "sales".into(),
        schema: "public".into(),
        table: "sales".into(),
        columns: vec![
            column("product", ColumnType::Text),
            column("orders", ColumnType::BigInt),
            column("revenue", ColumnType::Double),
            column("note", ColumnType::Text),
            column("exact", ColumnType::Numeric),
        ],
        key: vec![0],
    };
    Arc::new(Tables::new(vec![Arc::new(sales)]))
}

fn key(product: &str) -> Vec<Cell> {
    vec![Cell::new("product", TableValue::Text(product.into()))]
}

fn add(product: &str, column: &str, delta: TableValue) -> Mutation {
    Mutation::Add {
        table: "sales".into(),
        key: key(product),
        column: column.into(),
        delta,
    }
}

fn upsert(product: &str, cells: &[(&str, TableValue)]) -> Mutation {
    let mut row = key(product);
    row.extend(cells.iter().map(|(c, v)| Cell::new(*c, v.clone())));
    Mutation::Upsert {
        table: "sales".into(),
        row,
    }
}

fn delete(product: &str) -> Mutation {
    Mutation::Delete {
        table: "sales".into(),
        key: key(product),
    }
}

fn text(s: &str) -> TableValue {
    TableValue::Text(s.into())
}

#[test]
fn a_batch_s_writes_fold_into_the_last_word_per_row_in_offset_order() {
    let plan = Case::new([
        handled(
            0,
            0,
            Some("a"),
            Ok(vec![add("P", "orders", TableValue::Int(1))]),
        ),
        handled(
            0,
            1,
            Some("b"),
            Ok(vec![add("P", "orders", TableValue::Int(2))]),
        ),
        handled(
            0,
            2,
            Some("c"),
            Ok(vec![upsert("Q", &[("note", text("first"))])]),
        ),
        handled(
            0,
            3,
            Some("d"),
            Ok(vec![upsert("Q", &[("orders", TableValue::Int(10))])]),
        ),
        handled(
            0,
            4,
            Some("e"),
            Ok(vec![add("Q", "orders", TableValue::Int(5))]),
        ),
        handled(
            0,
            5,
            Some("f"),
            Ok(vec![upsert("R", &[("note", text("gone"))]), delete("R")]),
        ),
        handled(
            0,
            6,
            Some("g"),
            Ok(vec![
                delete("S"),
                add("S", "revenue", TableValue::Float(Float(1.5))),
            ]),
        ),
        // Refused for stock: its write is not folded.
        handled(
            0,
            7,
            Some("h"),
            Ok(vec![
                adjust("X", -9),
                add("P", "orders", TableValue::Int(100)),
            ]),
        ),
    ])
    .stock(&[("X", 1)])
    .batch(|b| b.tables = tables())
    .decide();

    let [sales] = plan.tables.tables.as_slice() else {
        panic!("one table: {:?}", plan.tables)
    };
    assert!(!plan.tables.sequential);
    type Cells = Vec<(usize, TableValue)>;
    let rows: Vec<(String, Cells, Cells)> = sales
        .merges
        .iter()
        .map(|m| {
            let TableValue::Text(product) = &m.key[0] else {
                panic!()
            };
            (
                product.clone(),
                m.set.iter().map(|(c, v)| (*c, v.clone())).collect(),
                m.add.iter().map(|(c, v)| (*c, v.clone())).collect(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("P".into(), vec![], vec![(1, TableValue::Int(3))]),
            (
                "Q".into(),
                vec![(1, TableValue::Int(15)), (3, text("first"))],
                vec![]
            ),
            ("S".into(), vec![], vec![(2, TableValue::Float(Float(1.5)))]),
        ],
        "adds summed, a set then an add made one value, a delete then an add a fresh row"
    );
    assert_eq!(sales.deletes, [vec![text("R")], vec![text("S")]]);
    assert_eq!(plan.tables.counts[&("sales".to_string(), TableOp::Add)], 4);
    assert_eq!(plan.report.table_writes, plan.tables.counts);
}

#[test]
fn writes_that_cannot_be_folded_exactly_are_written_record_by_record() {
    let plan = Case::new([
        handled(
            0,
            0,
            Some("a"),
            Ok(vec![upsert("P", &[("exact", text("1.25"))])]),
        ),
        handled(
            0,
            1,
            Some("b"),
            Ok(vec![add("P", "exact", TableValue::Int(1))]),
        ),
    ])
    .batch(|b| b.tables = tables())
    .decide();
    assert!(
        plan.tables.sequential,
        "a decimal text plus an int: PostgreSQL adds it"
    );
    assert_eq!(
        plan.applied_writes(&[]).len(),
        0,
        "no records given, none listed"
    );
}

#[test]
fn a_record_whose_writes_postgresql_refused_is_a_dead_letter_and_writes_nothing() {
    let records = [
        handled(
            0,
            0,
            Some("a"),
            Ok(vec![add("P", "orders", TableValue::Int(1))]),
        ),
        handled(
            0,
            1,
            Some("b"),
            Ok(vec![
                adjust("X", -1),
                add("P", "orders", TableValue::Int(2)),
            ]),
        ),
    ];
    let plan = Case::new(records.clone())
        .stock(&[("X", 5)])
        .batch(|b| b.tables = tables())
        .refused(&[(1, "violates check constraint \"orders_small\"")])
        .decide();

    assert_eq!(plan.decisions[0], Decision::Applied);
    let Decision::DeadLetter { kind, reason } = &plan.decisions[1] else {
        panic!("{:?}", plan.decisions[1])
    };
    assert_eq!(
        (*kind, kind.outcome()),
        (ErrorKind::TableRefused, Outcome::DeadLetter)
    );
    assert!(reason.contains("orders_small"), "{reason}");
    assert!(
        plan.stock.is_empty(),
        "its stock adjustment is not applied either"
    );
    assert_eq!(plan.tables.tables[0].merges[0].add[&1], TableValue::Int(1));
    let refs: Vec<&_> = records.iter().collect();
    let writes = plan.applied_writes(&refs);
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].0, (0, 0));
    assert_eq!(plan.dead_letters.len(), 1);
}

#[test]
fn a_shadow_candidate_s_table_writes_are_compared_and_never_written() {
    let mut records = [
        handled(
            0,
            0,
            Some("a"),
            Ok(vec![add("P", "orders", TableValue::Int(1))]),
        ),
        handled(
            0,
            1,
            Some("b"),
            Ok(vec![upsert("Q", &[("note", text("x"))])]),
        ),
    ];
    records[0].shadow = Some(Ok(vec![add("P", "orders", TableValue::Int(1))]));
    records[1].shadow = Some(Ok(vec![upsert("Q", &[("note", text("y"))])]));

    let plan = Case::new(records)
        .batch(|b| {
            b.tables = tables();
            b.shadow_version = Some("v2".into());
        })
        .decide();

    let tally = plan.shadow.expect("a tally");
    assert_eq!((tally.compared, tally.agreed), (2, 1));
    let (_, _, offset, active, shadow) = &tally.differences[0];
    assert_eq!(*offset, 1);
    assert_ne!(
        active["mutations"], shadow["mutations"],
        "{active} / {shadow}"
    );
    let [sales] = plan.tables.tables.as_slice() else {
        panic!("one table: {:?}", plan.tables)
    };
    let notes: Vec<&TableValue> = sales.merges.iter().flat_map(|m| m.set.values()).collect();
    assert_eq!(
        notes,
        [&text("x")],
        "only the active version's writes: {:?}",
        sales.merges
    );
}
