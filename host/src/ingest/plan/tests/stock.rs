//! Stock in memory: a record's adjustments apply all together or not at all.

use std::collections::HashMap;

use super::{adjust, kind};
use crate::domain::ErrorKind;
use crate::ingest::plan::Decision;
use crate::ingest::plan::stock::apply_in_memory;

#[test]
fn a_record_applies_whole_or_not_at_all() {
    let mut stock = HashMap::from([("A".to_string(), 5), ("B".to_string(), 1)]);
    let refused = apply_in_memory(&mut stock, &[adjust("A", -2), adjust("B", -2)]);
    assert_eq!(kind(&refused.unwrap_err()), ErrorKind::InsufficientStock);
    assert_eq!(stock["A"], 5, "nothing of a refused record is applied");

    let refused = apply_in_memory(&mut stock, &[adjust("A", -1), adjust("Z", -1)]);
    assert_eq!(kind(&refused.unwrap_err()), ErrorKind::UnknownProduct);
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
            kind: ErrorKind::InvalidOutput,
            ..
        })
    ));
}
