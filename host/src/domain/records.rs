//! Records: what Sluice consumes and produces, with their headers, and the compact encoding
//! that carries a batch of records in one outbox row. No I/O: the Kafka client's types are
//! converted in `kafka`, the database's in `db`.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::codec::{Reader, Writer};
use super::{EVENT_ID_HEADER, MAX_ID_LEN};

/// The dedupe keys of a consumer group's event ids: 8 bytes of SHA-256(group), then the id's
/// bytes. Exact (the id itself, not a hash of it), and ordered as the ids are, so ids that
/// follow each other land on neighbouring index pages. `sluice_event_key` in the schema
/// computes the same.
pub struct EventKeys {
    group: [u8; 8],
}

impl EventKeys {
    pub fn new(group_id: &str) -> Self {
        let digest = Sha256::digest(group_id.as_bytes());
        let mut group = [0u8; 8];
        group.copy_from_slice(&digest[..8]);
        Self { group }
    }

    pub fn key(&self, event_id: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(8 + event_id.len());
        key.extend_from_slice(&self.group);
        key.extend_from_slice(event_id.as_bytes());
        key
    }
}

/// A record header; Kafka allows binary and null values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub key: String,
    #[serde(with = "base64_bytes")]
    pub value: Option<Vec<u8>>,
}

impl Header {
    pub fn text(key: &str, value: impl Into<String>) -> Self {
        Self {
            key: key.to_string(),
            value: Some(value.into().into_bytes()),
        }
    }
}

/// A consumed record, as Sluice keeps it: for the plugin, the dead-letter table and the DLT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    pub timestamp_ms: Option<i64>,
}

impl Consumed {
    /// The producer's event id (the `event-id` header), if the record carries a usable one.
    pub fn event_id(&self) -> Option<String> {
        let header = self.headers.iter().find(|h| h.key == EVENT_ID_HEADER)?;
        let id = std::str::from_utf8(header.value.as_deref()?).ok()?.trim();
        (!id.is_empty() && id.len() <= MAX_ID_LEN).then(|| id.to_string())
    }
}

/// A Kafka record as it will be produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

/// Records one after the other, each field length-prefixed (`codec`: u32 little-endian,
/// `u32::MAX` for an absent key, payload or header value). The records of an ingest batch (its
/// verdicts and dead-letter copies) are one outbox row.
pub fn encode_records<R: std::borrow::Borrow<Record>>(records: &[R]) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(records.len() * 256));
    out.len(records.len());
    for record in records {
        let record = record.borrow();
        out.text(Some(&record.topic));
        out.bytes(record.key.as_deref());
        out.bytes(record.payload.as_deref());
        out.len(record.headers.len());
        for header in &record.headers {
            out.text(Some(&header.key));
            out.bytes(header.value.as_deref());
        }
    }
    out.0
}

/// The records `encode_records` wrote.
pub fn decode_records(input: &[u8]) -> Result<Vec<Record>, String> {
    let mut input = Reader {
        input,
        what: "record batch",
    };
    let count = input.u32()? as usize;
    let mut records = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let topic = input.text()?;
        let key = input.bytes()?.map(<[u8]>::to_vec);
        let payload = input.bytes()?.map(<[u8]>::to_vec);
        let header_count = input.u32()? as usize;
        let mut headers = Vec::with_capacity(header_count.min(256));
        for _ in 0..header_count {
            headers.push(Header {
                key: input.text()?,
                value: input.bytes()?.map(<[u8]>::to_vec),
            });
        }
        records.push(Record {
            topic,
            key,
            payload,
            headers,
        });
    }
    input.done()?;
    Ok(records)
}

/// Binary header values as base64 strings in JSON.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| STANDARD.decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_batches_round_trip() {
        let records = vec![
            Record {
                topic: "status".into(),
                key: Some(b"k".to_vec()),
                payload: Some(b"{}".to_vec()),
                headers: vec![
                    Header::text("event-id", "e-1"),
                    Header {
                        key: "binary".into(),
                        value: Some(vec![0, 255, 10]),
                    },
                    Header {
                        key: "null".into(),
                        value: None,
                    },
                ],
            },
            Record {
                topic: "dlt".into(),
                key: None,
                payload: None,
                headers: Vec::new(),
            },
            Record {
                topic: "empty".into(),
                key: Some(Vec::new()),
                payload: Some(Vec::new()),
                headers: Vec::new(),
            },
        ];
        let encoded = encode_records(&records);
        assert_eq!(decode_records(&encoded).unwrap(), records);
        assert_eq!(
            decode_records(&encode_records::<Record>(&[])).unwrap(),
            Vec::new()
        );
        assert!(decode_records(&encoded[..encoded.len() - 1]).is_err());
        assert!(decode_records(&[encoded.as_slice(), b"x"].concat()).is_err());
        assert!(
            decode_records(&[255, 255, 255, 255]).is_err(),
            "a count with no records"
        );
    }

    #[test]
    fn event_keys_separate_groups_and_ids() {
        let event_key = |group: &str, id: &str| EventKeys::new(group).key(id);
        let key = event_key("sluice-catalog", "e-1");
        assert_eq!(key, event_key("sluice-catalog", "e-1"));
        assert_ne!(key, event_key("sluice-catalog", "e-2"));
        assert_ne!(key, event_key("sluice-orders", "e-1"));
        assert_ne!(event_key("ab", "c"), event_key("a", "bc"));
        assert!(
            event_key("g", "o-1") < event_key("g", "o-2"),
            "ordered as the ids"
        );
    }

    #[test]
    fn event_ids_come_from_the_header_when_usable() {
        let mut record = Consumed {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: None,
            headers: vec![Header::text(EVENT_ID_HEADER, "  e-1 ")],
            timestamp_ms: None,
        };
        assert_eq!(record.event_id().as_deref(), Some("e-1"));
        record.headers = vec![Header::text(EVENT_ID_HEADER, "")];
        assert_eq!(record.event_id(), None);
        record.headers = vec![Header::text(EVENT_ID_HEADER, "x".repeat(256))];
        assert_eq!(record.event_id(), None);
        record.headers = vec![Header {
            key: EVENT_ID_HEADER.into(),
            value: Some(vec![0xff]),
        }];
        assert_eq!(record.event_id(), None);
    }
}
