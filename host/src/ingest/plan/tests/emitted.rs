//! Emitted records: queued for applied records only, each with an event id of its own.

use std::collections::BTreeMap;

use super::{Case, adjust, handled};
use crate::domain::{EVENT_ID_HEADER, Header, Mutation, Record};

#[test]
fn records_an_applied_record_emits_are_queued_with_an_event_id_of_their_own() {
    let emitted = Mutation::Emit(Record {
        topic: "alerts".into(),
        key: Some(b"k".to_vec()),
        payload: Some(b"v".to_vec()),
        headers: vec![Header::text(EVENT_ID_HEADER, "the plugin's own")],
    });
    let plan = Case::new([
        handled(2, 7, Some("a"), Ok(vec![emitted.clone(), emitted.clone()])),
        handled(2, 8, Some("b"), Ok(vec![adjust("P", -9), emitted])),
    ])
    .stock(&[("P", 1)])
    .decide();

    let alerts: Vec<&Record> = plan.outbox.iter().filter(|r| r.topic == "alerts").collect();
    assert_eq!(alerts.len(), 2, "the refused record emits nothing");
    let ids: Vec<Option<String>> = alerts
        .iter()
        .map(|r| {
            let mut ids = r.headers.iter().filter(|h| h.key == EVENT_ID_HEADER);
            let id = ids
                .next()
                .and_then(|h| String::from_utf8(h.value.clone()?).ok());
            assert!(ids.next().is_none(), "one event id");
            id
        })
        .collect();
    assert_eq!(
        ids,
        [
            Some("g/orders/2/7/emit/0".to_string()),
            Some("g/orders/2/7/emit/1".to_string())
        ]
    );
    assert_eq!(
        plan.report.emitted,
        BTreeMap::from([("alerts".to_string(), 2)])
    );
}
