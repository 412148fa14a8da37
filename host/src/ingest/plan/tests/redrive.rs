//! A redrive: its verdict reported with its error kind, no new dead letter, no outcome row.

use super::{Case, adjust, handled};
use crate::domain::{ErrorKind, Outcome, decode_verdicts};
use crate::ingest::plan::Mode;
use crate::runtime::HandleError;

#[test]
fn a_redrive_reports_its_verdict_with_the_error_kind_and_writes_no_new_dead_letter() {
    let plan = Case::new([handled(3, 9, Some("e"), Ok(vec![adjust("P", -9)]))])
        .stock(&[("P", 5)])
        .mode(Mode::Redrive { attempt: 2 })
        .decide();

    assert_eq!(plan.decisions[0].outcome(), Outcome::Rejected);
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
    assert_eq!(
        event.error_kind.as_deref(),
        Some(ErrorKind::InsufficientStock.as_str())
    );

    let plan = Case::new([handled(
        3,
        9,
        Some("e"),
        Err(HandleError::Trap("again".into())),
    )])
    .mode(Mode::Redrive { attempt: 3 })
    .decide();
    assert_eq!(plan.decisions[0].outcome(), Outcome::DeadLetter);
    assert!(
        plan.outbox.is_empty(),
        "still poison: nothing to report, no new copy"
    );
}
