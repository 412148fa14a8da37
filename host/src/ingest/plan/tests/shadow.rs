//! A shadow candidate: compared with the active version, never applied.

use super::{Case, adjust, handled};
use crate::runtime::HandleError;

#[test]
fn a_shadow_candidate_is_compared_and_never_applied() {
    let mut records = [
        handled(0, 0, Some("a"), Ok(vec![adjust("P", -1)])),
        handled(0, 1, Some("b"), Ok(vec![adjust("P", -1)])),
        handled(
            0,
            2,
            Some("c"),
            Err(HandleError::InvalidMessage("x".into())),
        ),
    ];
    records[0].shadow = Some(Ok(vec![adjust("P", -1)]));
    records[1].shadow = Some(Ok(vec![adjust("P", -2)]));
    records[2].shadow = Some(Err(HandleError::InvalidMessage("y".into())));

    let plan = Case::new(records)
        .stock(&[("P", 10)])
        .batch(|b| b.shadow_version = Some("v2".into()))
        .decide();

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
