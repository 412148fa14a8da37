//! The catalog side's verdicts on orders, as they travel on the status topic: the verdicts of
//! one ingest batch's records from one source partition in one record, in a compact binary
//! layout (`codec`), what they share written once. The status topic carries one record per
//! source partition and batch instead of one per order.
//!
//! Layout (`content-type: application/vnd.sluice.verdicts.v1`): the magic `SLV1`; the source
//! topic and partition, the plugin and its version, whether a redrive decided (u8), the count
//! (u32); then per verdict: the order id (the record's event id), the record's offset (i64), the
//! status (u8: 1 applied, 2 rejected), the reason, the error kind and the processing span's
//! `traceparent` (each text or absent). Records written by earlier versions, one JSON
//! `StatusEvent` each, are still read.

use serde::{Deserialize, Serialize};

use super::OrderStatus;
use super::codec::{Reader, Writer};

/// The `content-type` header of a verdict batch record.
pub const VERDICTS_CONTENT_TYPE: &str = "application/vnd.sluice.verdicts.v1";

const MAGIC: &[u8; 4] = b"SLV1";

/// The catalog side's verdict on an order, reported back on the status topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusEvent {
    /// The order event's `event-id` (its order id).
    pub order_id: String,
    pub status: OrderStatus,
    pub reason: Option<String>,
    pub error_kind: Option<String>,
    pub plugin: String,
    pub plugin_version: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Decided by a dead-letter redrive, after an earlier rejection.
    #[serde(default)]
    pub redriven: bool,
    /// The W3C `traceparent` of the record's processing, when the record carried a trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

fn status_code(status: OrderStatus) -> u8 {
    match status {
        OrderStatus::Pending => 0,
        OrderStatus::Applied => 1,
        OrderStatus::Rejected => 2,
    }
}

/// A verdict batch being written: what its verdicts share first, then each verdict, the count
/// filled in at the end. All of one source partition, decided by one plugin version, all
/// redriven or none (as an ingest batch or a redrive makes them).
pub struct VerdictsWriter {
    out: Writer,
    count_at: usize,
    count: usize,
}

impl VerdictsWriter {
    pub fn new(
        (topic, partition): (&str, i32),
        (plugin, plugin_version): (&str, &str),
        redriven: bool,
    ) -> Self {
        let mut out = Writer(Vec::with_capacity(256));
        out.0.extend_from_slice(MAGIC);
        out.text(Some(topic));
        out.i32(partition);
        out.text(Some(plugin));
        out.text(Some(plugin_version));
        out.u8(u8::from(redriven));
        let count_at = out.0.len();
        out.u32(0);
        Self {
            out,
            count_at,
            count: 0,
        }
    }

    pub fn push(
        &mut self,
        (order_id, offset): (&str, i64),
        status: OrderStatus,
        (reason, error_kind): (Option<&str>, Option<&str>),
        trace: Option<&str>,
    ) {
        self.out.text(Some(order_id));
        self.out.i64(offset);
        self.out.u8(status_code(status));
        self.out.text(reason);
        self.out.text(error_kind);
        self.out.text(trace);
        self.count += 1;
    }

    pub fn finish(mut self) -> Vec<u8> {
        let count = u32::try_from(self.count).unwrap_or(u32::MAX - 1);
        self.out.0[self.count_at..self.count_at + 4].copy_from_slice(&count.to_le_bytes());
        self.out.0
    }
}

/// One record's payload for `verdicts` (see `VerdictsWriter`); `None` when there are none.
pub fn encode_verdicts(verdicts: &[StatusEvent]) -> Option<Vec<u8>> {
    let first = verdicts.first()?;
    let mut writer = VerdictsWriter::new(
        (&first.topic, first.partition),
        (&first.plugin, &first.plugin_version),
        first.redriven,
    );
    for v in verdicts {
        writer.push(
            (&v.order_id, v.offset),
            v.status,
            (v.reason.as_deref(), v.error_kind.as_deref()),
            v.trace.as_deref(),
        );
    }
    Some(writer.finish())
}

/// The verdicts of a status record: a batch, or one JSON `StatusEvent` (earlier versions).
pub fn decode_verdicts(payload: &[u8]) -> Result<Vec<StatusEvent>, String> {
    let Some(body) = payload.strip_prefix(MAGIC) else {
        return serde_json::from_slice::<StatusEvent>(payload)
            .map(|event| vec![event])
            .map_err(|e| format!("neither a verdict batch nor a status event: {e}"));
    };
    let mut input = Reader {
        input: body,
        what: "verdict batch",
    };
    let topic = input.text()?;
    let partition = input.i32()?;
    let plugin = input.text()?;
    let plugin_version = input.text()?;
    let redriven = input.u8()? != 0;
    let count = input.u32()? as usize;
    let mut verdicts = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let order_id = input.text()?;
        let offset = input.i64()?;
        let status = match input.u8()? {
            1 => OrderStatus::Applied,
            2 => OrderStatus::Rejected,
            other => return Err(format!("a verdict with status {other}")),
        };
        verdicts.push(StatusEvent {
            order_id,
            status,
            reason: input.optional_text()?,
            error_kind: input.optional_text()?,
            plugin: plugin.clone(),
            plugin_version: plugin_version.clone(),
            topic: topic.clone(),
            partition,
            offset,
            redriven,
            trace: input.optional_text()?,
        });
    }
    input.done()?;
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(order: &str, offset: i64, status: OrderStatus) -> StatusEvent {
        StatusEvent {
            order_id: order.into(),
            status,
            reason: (status == OrderStatus::Rejected).then(|| "insufficient stock".into()),
            error_kind: (status == OrderStatus::Rejected).then(|| "insufficient-stock".into()),
            plugin: "stock".into(),
            plugin_version: "v1".into(),
            topic: "orders".into(),
            partition: 3,
            offset,
            redriven: false,
            trace: (offset == 8)
                .then(|| "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        }
    }

    #[test]
    fn a_batch_of_verdicts_round_trips() {
        let verdicts = vec![
            verdict("a", 7, OrderStatus::Applied),
            verdict("b", 8, OrderStatus::Rejected),
        ];
        let encoded = encode_verdicts(&verdicts).unwrap();
        assert_eq!(decode_verdicts(&encoded).unwrap(), verdicts);
        assert!(decode_verdicts(&encoded[..encoded.len() - 1]).is_err());
        assert!(decode_verdicts(&[encoded.as_slice(), b"x"].concat()).is_err());
        assert_eq!(encode_verdicts(&[]), None);
    }

    #[test]
    fn a_status_event_of_an_earlier_version_is_read() {
        let json = br#"{"orderId":"a","status":"APPLIED","reason":null,"errorKind":null,
            "plugin":"stock","pluginVersion":"v1","topic":"orders","partition":3,"offset":7}"#;
        let read = decode_verdicts(json).unwrap();
        assert_eq!(
            read,
            vec![StatusEvent {
                trace: None,
                ..verdict("a", 7, OrderStatus::Applied)
            }]
        );
        assert!(decode_verdicts(b"not a verdict").is_err());
    }
}
