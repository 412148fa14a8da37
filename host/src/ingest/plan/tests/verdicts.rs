//! Verdicts: one status record per source partition, in offset order, with a trace.

use super::{Case, adjust, handled};
use crate::domain::{Consumed, EVENT_ID_HEADER, ErrorKind, Header, OrderStatus, decode_verdicts};
use crate::ingest::plan::Handled;
use crate::runtime::HandleError;
use crate::trace::{TRACEPARENT, TraceParent};

#[test]
fn a_verdict_per_decided_event_none_for_duplicates_or_records_without_an_event_id() {
    let plan = Case::new([
        handled(0, 0, Some("a"), Ok(vec![adjust("P", -3)])),
        handled(0, 1, Some("a"), Ok(vec![adjust("P", -3)])),
        handled(0, 3, Some("b"), Ok(vec![adjust("P", -3)])),
        handled(
            0,
            4,
            Some("c"),
            Err(HandleError::InvalidMessage("no".into())),
        ),
        handled(0, 5, None, Ok(vec![adjust("P", -2)])),
    ])
    .stock(&[("P", 5)])
    .decide();

    let status = plan.outbox.iter().find(|r| r.topic == "status").unwrap();
    assert_eq!(status.key.as_deref(), Some(&b"orders/0"[..]));
    let verdicts = decode_verdicts(status.payload.as_ref().unwrap()).unwrap();
    let orders: Vec<&str> = verdicts.iter().map(|v| v.order_id.as_str()).collect();
    assert_eq!(orders, ["a", "b", "c"], "in offset order");
    assert_eq!(verdicts[1].status, OrderStatus::Rejected);
    assert_eq!(
        verdicts[1].error_kind.as_deref(),
        Some(ErrorKind::InsufficientStock.as_str())
    );
    assert_eq!(
        verdicts[2].status,
        OrderStatus::Rejected,
        "poison rejects the order"
    );
}

#[test]
fn verdicts_travel_one_record_per_source_partition_with_a_trace() {
    let traced = Handled::new(
        Consumed {
            headers: vec![
                Header::text(EVENT_ID_HEADER, "t"),
                Header::text(
                    TRACEPARENT,
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
            ..handled(1, 4, None, Ok(vec![])).record
        },
        Ok(vec![adjust("P", -1)]),
    );
    let plan = Case::new([
        handled(0, 7, Some("a"), Ok(vec![adjust("P", -1)])),
        traced,
        handled(0, 8, Some("b"), Ok(vec![adjust("P", -1)])),
    ])
    .stock(&[("P", 10)])
    .decide();

    let keys: Vec<&[u8]> = plan
        .outbox
        .iter()
        .filter_map(|r| r.key.as_deref())
        .collect();
    assert_eq!(keys, [&b"orders/0"[..], &b"orders/1"[..]]);
    let first = decode_verdicts(plan.outbox[0].payload.as_ref().unwrap()).unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|v| v.trace.is_none()));
    let second = &plan.outbox[1];
    let verdict = &decode_verdicts(second.payload.as_ref().unwrap()).unwrap()[0];
    let trace = verdict
        .trace
        .as_deref()
        .expect("the processing span's context");
    assert!(trace.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert_eq!(
        TraceParent::from_headers(&second.headers)
            .map(|t| t.to_string())
            .as_deref(),
        Some(trace),
        "the record's header names its first traced verdict's span"
    );
}
