//! The one place the host generates bindings from `wit/`: the `handler` world every plugin
//! exports, and `checked-handler` (the same plus `self-test`) for plugins that vouch for
//! themselves, of the current contract (`sluice:handler@0.3.0`) and of 0.2 (`v0_2`) and 0.1
//! (`v0_1`), which plugins built before export. Each version's worlds share one set of
//! interface types.

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

/// Contract 0.2 (`wit/v0.2`): `handle` takes the message and its key's state and returns
/// stock adjustments, emitted records and state changes. Its `message` record is the same as
/// 0.3's, so the host calls it with 0.3's [`Message`] (see `plugin`); the types here are its
/// output and its imports.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2",
        world: "handler",
    });

    /// The 0.2 `checked-handler` world: `handle` and `self-test`.
    pub mod checked {
        wasmtime::component::bindgen!({
            path: "../wit/v0.2",
            world: "checked-handler",
            with: {
                "sluice:handler/types": super::sluice::handler::types,
                "sluice:handler/host": super::sluice::handler::host,
            },
        });
    }
}

/// Contract 0.1 (`wit/v0.1`): `handle` takes the message alone and returns stock adjustments.
/// Its `message` record is the same as 0.3's, called the same way.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "handler",
    });

    /// The 0.1 `checked-handler` world: `handle` and `self-test`.
    pub mod checked {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1",
            world: "checked-handler",
            with: {
                "sluice:handler/types": super::sluice::handler::types,
                "sluice:handler/host": super::sluice::handler::host,
            },
        });
    }
}

pub use self::sluice::handler::host::Level;
pub use self::sluice::handler::types::{
    Add, Cell, Delete, Emitted, Header, StockAdjustment, Upsert, Value,
};

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
            headers: record.headers.iter().cloned().map(Header::from).collect(),
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
            headers: record.headers.into_iter().map(Header::from).collect(),
            timestamp_ms: record.timestamp_ms,
        }
    }
}

/// A header across the boundary, either way (the same fields on both sides).
impl From<crate::domain::Header> for Header {
    fn from(h: crate::domain::Header) -> Self {
        Self {
            key: h.key,
            value: h.value,
        }
    }
}

impl From<Header> for crate::domain::Header {
    fn from(h: Header) -> Self {
        Self {
            key: h.key,
            value: h.value,
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
            headers: self.headers.into_iter().map(Into::into).collect(),
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
