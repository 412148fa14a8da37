//! The one place the host generates bindings from `wit/`: the `handler` world every plugin
//! exports, and `checked-handler` (the same plus `self-test`) for plugins that vouch for
//! themselves. Both share one set of interface types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
});

/// The `checked-handler` world: `handle` and `self-test`.
pub mod checked {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "checked-handler",
        with: {
            "sluice:handler/types": super::sluice::handler::types,
            "sluice:handler/host": super::sluice::handler::host,
        },
    });
}

pub use self::sluice::handler::host::Level;
pub use self::sluice::handler::types::{Header, StockAdjustment};

use crate::domain::Consumed;

/// A consumed record as the plugin sees it (a tombstone's payload is empty).
impl From<&Consumed> for Message {
    fn from(record: &Consumed) -> Self {
        Self {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            key: record.key.clone(),
            payload: record.payload.clone().unwrap_or_default(),
            headers: record
                .headers
                .iter()
                .map(|h| Header {
                    key: h.key.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            timestamp_ms: record.timestamp_ms,
        }
    }
}

/// The same, taking the record's buffers instead of copying them (ingest gives them back with
/// [`Message::into_record`] once the calls are made).
impl From<Consumed> for Message {
    fn from(record: Consumed) -> Self {
        Self {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            key: record.key,
            payload: record.payload.unwrap_or_default(),
            headers: record
                .headers
                .into_iter()
                .map(|h| Header {
                    key: h.key,
                    value: h.value,
                })
                .collect(),
            timestamp_ms: record.timestamp_ms,
        }
    }
}

impl Message {
    /// The record this message was made of; `tombstone`: whether it had no payload at all (a
    /// message's payload is empty for both).
    pub fn into_record(self, tombstone: bool) -> Consumed {
        Consumed {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key,
            payload: (!tombstone).then_some(self.payload),
            headers: self
                .headers
                .into_iter()
                .map(|h| crate::domain::Header {
                    key: h.key,
                    value: h.value,
                })
                .collect(),
            timestamp_ms: self.timestamp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_reaches_the_plugin_as_an_empty_payload() {
        let record = Consumed {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: None,
            headers: Vec::new(),
            timestamp_ms: None,
        };
        assert_eq!(
            Message::from(&record).payload,
            Vec::<u8>::new(),
            "tombstone"
        );
    }
}
