//! Which outcome each record gets, in order, and the rows that go with it.

use std::collections::{BTreeMap, HashMap};

use super::{Case, adjust, handled};
use crate::domain::{ErrorKind, Outcome};
use crate::ingest::plan::{Decision, select_fresh};
use crate::runtime::HandleError;

#[test]
fn plugin_rejections_are_business_refusals_and_the_rest_is_poison() {
    let rejected = Decision::from_error(&HandleError::Rejected("closed".into()));
    assert_eq!(rejected.outcome(), Outcome::Rejected);
    for error in [
        HandleError::InvalidMessage("x".into()),
        HandleError::Trap("x".into()),
        HandleError::Timeout(100),
        HandleError::Blocked("x".into()),
        HandleError::InvalidOutput("x".into()),
    ] {
        assert_eq!(
            Decision::from_error(&error).outcome(),
            Outcome::DeadLetter,
            "{error}"
        );
    }
    for kind in ErrorKind::ALL {
        assert_eq!(
            Decision::refused(kind, String::new()).outcome(),
            kind.outcome()
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
    let plan = Case::new([
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
    ])
    .stock(&[("P", 5)])
    .decided_before(&["old"])
    .decide();

    let outcomes: Vec<Outcome> = plan.decisions.iter().map(Decision::outcome).collect();
    use Outcome::*;
    assert_eq!(
        outcomes,
        [Applied, Duplicate, Duplicate, Rejected, DeadLetter, Applied]
    );
    assert_eq!(plan.stock, [("P".to_string(), 0)]);
    assert_eq!(
        plan.outcomes.outcome, outcomes,
        "every record has an outcome row"
    );
    assert_eq!(
        plan.outcomes.error_kind[3],
        Some(ErrorKind::InsufficientStock)
    );
    assert_eq!(plan.dead_letters.len(), 1);
    assert_eq!(plan.dead_letters[0].record.offset, 4);
    let topics: Vec<&str> = plan.outbox.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(
        topics,
        ["orders.DLT", "status"],
        "the poison copy, and the verdicts of the partition's records in one record"
    );
    let r = &plan.report;
    assert_eq!(
        (
            r.applied,
            r.rejected,
            r.dead_lettered,
            r.duplicates,
            r.queued
        ),
        (2, 1, 1, 2, 2)
    );
}
