//! The decision, the orders' part: each decided order's verdict, gathered per source partition
//! into one status record, with the trace context of its processing span.

use std::collections::BTreeMap;

use super::{BatchContext, Decision, Handled, Mode};
use crate::domain::{EVENT_ID_HEADER, Header, Record, VERDICTS_CONTENT_TYPE, VerdictsWriter};
use crate::trace::{TRACEPARENT, TraceParent};

/// The verdicts of a batch being gathered: one writer per source partition.
pub struct Verdicts<'b> {
    batch: &'b BatchContext,
    mode: Mode,
    partitions: BTreeMap<i32, PartitionVerdicts>,
}

/// The verdicts on one source partition's records, being written.
struct PartitionVerdicts {
    writer: VerdictsWriter,
    /// The first verdict's order id and offset (the record's own event id names them).
    first: (String, i64),
    /// The first traced verdict's processing span.
    trace: Option<String>,
}

impl<'b> Verdicts<'b> {
    pub fn new(batch: &'b BatchContext, mode: Mode) -> Self {
        Self {
            batch,
            mode,
            partitions: BTreeMap::new(),
        }
    }

    /// Note `handled`'s verdict, if it reports one: a record with an event id, decided (not a
    /// duplicate) at ingest; applied or rejected at a redrive (poison again changes nothing
    /// for the order); and only where the batch reports verdicts.
    pub fn push(&mut self, handled: &Handled, decision: &Decision) {
        let reported = match self.mode {
            Mode::Ingest => *decision != Decision::Duplicate,
            Mode::Redrive { .. } => {
                matches!(decision, Decision::Applied | Decision::Rejected { .. })
            }
        };
        let (Some(event_id), true, Some(_)) =
            (&handled.event_id, reported, &self.batch.status_topic)
        else {
            return;
        };
        let trace = processing_context(handled, self.mode).map(|(_, processing)| processing);
        let record = &handled.record;
        let (batch, mode) = (self.batch, self.mode);
        let partition =
            self.partitions
                .entry(record.partition)
                .or_insert_with(|| PartitionVerdicts {
                    writer: VerdictsWriter::new(
                        (&record.topic, record.partition),
                        (&batch.plugin, &batch.plugin_version),
                        matches!(mode, Mode::Redrive { .. }),
                    ),
                    first: (event_id.clone(), record.offset),
                    trace: None,
                });
        let trace = trace.map(|t| t.to_string());
        let (kind, reason) = decision.kind_and_reason();
        partition.writer.push(
            (event_id, record.offset),
            decision.order_status(),
            (reason, kind.map(|k| k.as_str())),
            trace.as_deref(),
        );
        if partition.trace.is_none() {
            partition.trace = trace;
        }
    }

    /// The status records: one per source partition, in partition order.
    pub fn records(self) -> impl Iterator<Item = Record> + 'b {
        let (batch, mode) = (self.batch, self.mode);
        let topic = batch.status_topic.as_deref().unwrap_or_default();
        self.partitions
            .into_iter()
            .map(move |(partition, verdicts)| record(topic, batch, mode, partition, verdicts))
    }
}

/// The context of a record's processing span, a child of the context the record carries
/// (returned first): derived from it and the record's place, so the status event (written in
/// the plan) and the span exported after commit name the same span. `None` for a record
/// without one.
pub fn processing_context(handled: &Handled, mode: Mode) -> Option<(TraceParent, TraceParent)> {
    let carried = TraceParent::from_headers(&handled.record.headers)?;
    let mut place = [0u8; 16];
    place[..4].copy_from_slice(&handled.record.partition.to_be_bytes());
    place[4..12].copy_from_slice(&handled.record.offset.to_be_bytes());
    let len = match mode {
        Mode::Ingest => 12,
        Mode::Redrive { attempt } => {
            place[12..].copy_from_slice(&attempt.to_be_bytes());
            16
        }
    };
    Some((carried, carried.hop(&place[..len])))
}

/// The status topic's record for the verdicts on one source partition's records, keyed by
/// that partition (so a redrive's verdict follows the first one on the same status partition).
/// Its `event-id` is its own, distinct per record; its `traceparent` is that of its first
/// traced verdict (each verdict's own is in the payload), so that a trace goes on from Kafka
/// headers alone.
fn record(
    topic: &str,
    batch: &BatchContext,
    mode: Mode,
    partition: i32,
    verdicts: PartitionVerdicts,
) -> Record {
    let (first_order, first_offset) = &verdicts.first;
    let dedupe_id = match mode {
        Mode::Ingest => format!("{}/{partition}/{first_offset}/status", batch.topic),
        Mode::Redrive { attempt } => format!("{first_order}/redrive/{attempt}"),
    };
    let mut headers = vec![
        Header::text(EVENT_ID_HEADER, dedupe_id),
        Header::text("content-type", VERDICTS_CONTENT_TYPE),
    ];
    if let Some(trace) = verdicts.trace {
        headers.push(Header::text(TRACEPARENT, trace));
    }
    Record {
        topic: topic.to_string(),
        key: Some(format!("{}/{partition}", batch.topic).into_bytes()),
        payload: Some(verdicts.writer.finish()),
        headers,
    }
}
