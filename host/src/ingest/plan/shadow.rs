//! The decision, a shadow candidate's part: its outputs compared with the active version's,
//! never applied.

use super::{BatchContext, Handled, Output};
use crate::db::plugins::ShadowTally;

/// Differences noted per batch (the database keeps the first few of each candidate).
const DIFFERENCES_PER_BATCH: usize = 5;

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

/// The comparison of a batch's shadow outputs with the active ones, the records as they were
/// finally called; `None` when no candidate ran.
pub fn tally(batch: &BatchContext, records: &[&Handled]) -> Option<ShadowTally> {
    let version = batch.shadow_version.clone()?;
    let mut tally = ShadowTally {
        name: batch.plugin.clone(),
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
