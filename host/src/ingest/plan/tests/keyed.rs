//! Keyed state: a key's records decided on the state the applied ones before them leave; a
//! record whose call saw another state is called again (through the recall), in order.

use super::{Case, adjust, keyed, set};
use crate::domain::{Mutation, Outcome, SeenState};
use crate::ingest::plan::{Decision, Handled};

#[test]
fn a_key_s_records_are_decided_on_the_state_the_applied_ones_before_them_leave() {
    // The calls assumed every record applies; the second is refused for stock, so the third
    // saw a state its key never had and is called again with the right one.
    let mut called_with = Vec::new();
    let mut recall = |h: &Handled, state: SeenState| {
        called_with.push((h.record.offset, state.clone()));
        let next = std::str::from_utf8(state.value().unwrap_or(b"0"))
            .unwrap()
            .parse::<u32>()
            .unwrap()
            + 1;
        Handled {
            result: Ok(vec![set(&next.to_string())]),
            seen_state: state,
            ..h.clone()
        }
    };
    let plan = Case::new([
        keyed(None, Ok(vec![adjust("P", -3), set("1")]), 0),
        keyed(Some("1"), Ok(vec![adjust("P", -3), set("2")]), 1),
        keyed(Some("2"), Ok(vec![set("3")]), 2),
    ])
    .stock(&[("P", 5)])
    .decide_keyed(&[], &mut recall);

    let outcomes: Vec<Outcome> = plan.decisions.iter().map(Decision::outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Applied, Outcome::Rejected, Outcome::Applied]
    );
    assert_eq!(
        called_with,
        [(2, SeenState::Value(b"1".to_vec()))],
        "only the third, with the first's state"
    );
    assert_eq!(plan.state, [(b"k".to_vec(), Some(b"2".to_vec()))]);
    assert_eq!(plan.report.recalled, 1);
    assert_eq!(plan.stock, [("P".to_string(), 2)]);
}

#[test]
fn a_key_changed_elsewhere_is_called_again_and_a_cleared_state_is_written_as_none() {
    let mut recalls = 0;
    let mut recall = |h: &Handled, state: SeenState| {
        recalls += 1;
        assert_eq!(state, SeenState::Value(b"newer".to_vec()));
        h.clone()
    };
    let plan = Case::new([keyed(Some("old"), Ok(vec![Mutation::ClearState]), 0)])
        .decide_keyed(&[("k", "newer")], &mut recall);
    assert_eq!(recalls, 1);
    assert_eq!(plan.state, [(b"k".to_vec(), None)]);
}

#[test]
fn a_product_only_a_second_call_names_is_reported_for_locking() {
    // The state changed elsewhere: called again, the record names a product no call of the
    // batch named before, whose stock was not locked.
    let mut recall = |h: &Handled, _: SeenState| Handled {
        result: Ok(vec![adjust("P", -1), adjust("GIFT", -1)]),
        ..h.clone()
    };
    let plan = Case::new([keyed(Some("old"), Ok(vec![adjust("P", -1)]), 0)])
        .stock(&[("P", 5)])
        .decide_keyed(&[("k", "newer")], &mut recall);
    assert_eq!(plan.unlocked, ["GIFT"]);
}
