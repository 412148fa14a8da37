//! The decision, poison's part: a dead letter's row (the record kept whole) and its copy for
//! the dead-letter topic.

use super::{BatchContext, Handled};
use crate::db::ingest::DeadLetterRow;
use crate::domain::{ErrorKind, Header, Record};

/// The largest payload copied to the dead-letter topic: under Kafka's default 1 MB limit.
const MAX_DLT_PAYLOAD: usize = crate::domain::MAX_RECORD_BYTES;

/// The dead letter of `handled`, and its copy for the batch's dead-letter topic (if it has one).
pub fn dead_letter(
    batch: &BatchContext,
    handled: &Handled,
    kind: ErrorKind,
    reason: &str,
) -> (DeadLetterRow, Option<Record>) {
    let row = DeadLetterRow {
        record: handled.record.clone(),
        event_id: handled.event_id.clone(),
        error_kind: kind,
        error: reason.to_string(),
    };
    let copy = batch
        .dead_letter_topic
        .as_deref()
        .map(|topic| copy(topic, batch, &row));
    (row, copy)
}

/// The poison record for `<topic>.DLT`: the original key, value and headers, plus where it
/// came from and why it failed (Spring Kafka's `kafka_dlt-*` header names, text values).
fn copy(topic: &str, batch: &BatchContext, row: &DeadLetterRow) -> Record {
    let original = &row.record;
    let mut headers = original.headers.clone();
    // A record too large to republish is copied truncated; the table keeps it whole.
    let mut payload = original.payload.clone();
    if let Some(bytes) = payload.as_mut().filter(|p| p.len() > MAX_DLT_PAYLOAD) {
        headers.push(Header::text(
            "sluice-payload-truncated-from",
            bytes.len().to_string(),
        ));
        bytes.truncate(MAX_DLT_PAYLOAD);
    }
    headers.extend([
        Header::text("kafka_dlt-original-topic", original.topic.clone()),
        Header::text(
            "kafka_dlt-original-partition",
            original.partition.to_string(),
        ),
        Header::text("kafka_dlt-original-offset", original.offset.to_string()),
        Header::text("kafka_dlt-original-consumer-group", batch.group_id.clone()),
        Header::text("kafka_dlt-exception-message", row.error.clone()),
        Header::text("sluice-error-kind", row.error_kind.as_str()),
        Header::text("sluice-plugin", batch.plugin.clone()),
        Header::text("sluice-plugin-version", batch.plugin_version.clone()),
    ]);
    Record {
        topic: topic.to_string(),
        key: original.key.clone(),
        payload,
        headers,
    }
}
