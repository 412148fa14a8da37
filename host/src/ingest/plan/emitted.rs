//! The decision, emitted records' part: what an applied record emits, each with an
//! `event-id` of its own derived from the record's place.

use super::{BatchContext, Handled};
use crate::domain::{Mutation, Record, emitted_event_id, emitted_headers};

/// The records `handled` (applied, with `mutations`) emits, in order.
pub fn emitted<'a>(
    batch: &'a BatchContext,
    handled: &'a Handled,
    mutations: &'a [Mutation],
) -> impl Iterator<Item = Record> + 'a {
    let source = &handled.record;
    mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::Emit(record) => Some(record),
            _ => None,
        })
        .enumerate()
        .map(move |(index, record)| {
            let id = emitted_event_id(
                &batch.group_id,
                &source.topic,
                source.partition,
                source.offset,
                index,
            );
            Record {
                topic: record.topic.clone(),
                key: record.key.clone(),
                payload: record.payload.clone(),
                headers: emitted_headers(&record.headers, id),
            }
        })
}
