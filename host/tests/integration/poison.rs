//! A corpus of poison records: each ends as a dead letter (table, `<topic>.DLT`, API) or a
//! rejection, with a reason; the host keeps running and valid records keep flowing.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::process::{Serve, ServeConfig};
use common::{Stack, get_json, read_topic, workload};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

fn order(fields: &[(&str, Value)]) -> Vec<u8> {
    let mut order = json!({"orderId": "o-1", "userId": "u", "productId": "CATALOG-0001",
                           "quantity": 1, "unitPrice": 1500, "totalPrice": 1500,
                           "createdAt": "2026-11-25T08:00:00.000Z"});
    for (key, value) in fields {
        match value {
            Value::Null => order.as_object_mut().unwrap().remove(*key),
            v => order
                .as_object_mut()
                .unwrap()
                .insert(key.to_string(), v.clone()),
        };
    }
    order.to_string().into_bytes()
}

/// (name, payload, expected outcome, words the reason must contain)
fn corpus() -> Vec<(&'static str, Option<Vec<u8>>, &'static str, &'static str)> {
    let mut huge = b"{\"padding\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 1 << 20));
    vec![
        ("non-UTF-8 bytes", Some(vec![0xc3, 0x28, 0xff, 0xfe]), "DEAD_LETTER", "not UTF-8"),
        ("not JSON", Some(b"order: 10 x CATALOG-0001".to_vec()), "DEAD_LETTER", "not JSON"),
        ("JSON array", Some(b"[1, 2, 3]".to_vec()), "DEAD_LETTER", "an array"),
        ("JSON null", Some(b"null".to_vec()), "DEAD_LETTER", "null"),
        ("JSON string", Some(b"\"CATALOG-0001\"".to_vec()), "DEAD_LETTER", "a string"),
        ("missing productId", Some(order(&[("productId", Value::Null)])), "DEAD_LETTER", "missing field `productId`"),
        ("missing quantity", Some(order(&[("quantity", Value::Null)])), "DEAD_LETTER", "missing field `quantity`"),
        ("productId is a number", Some(order(&[("productId", json!(1))])), "DEAD_LETTER", "`productId` must be a string"),
        ("quantity is a string", Some(order(&[("quantity", json!("10"))])), "DEAD_LETTER", "`quantity` must be an integer"),
        ("quantity is fractional", Some(order(&[("quantity", json!(2.5))])), "DEAD_LETTER", "`quantity` must be an integer"),
        ("negative quantity", Some(order(&[("quantity", json!(-5))])), "DEAD_LETTER", "must be positive"),
        ("zero quantity", Some(order(&[("quantity", json!(0))])), "DEAD_LETTER", "must be positive"),
        ("huge quantity", Some(order(&[("quantity", json!(1_000_000_000_000i64))])), "DEAD_LETTER", "at most"),
        ("unknown product", Some(order(&[("productId", json!("CATALOG-4040"))])), "REJECTED", "unknown product CATALOG-4040"),
        ("more than in stock", Some(order(&[("quantity", json!(999_999))])), "REJECTED", "insufficient stock"),
        ("1 MiB payload", Some(huge), "DEAD_LETTER", "not JSON"),
        ("empty payload", Some(Vec::new()), "DEAD_LETTER", "empty payload"),
        ("null payload (tombstone)", None, "DEAD_LETTER", "empty payload"),
        ("duplicate keys", Some(br#"{"orderId":"o","userId":"u","productId":"CATALOG-0001","quantity":1,"quantity":900,"unitPrice":1,"totalPrice":1,"createdAt":"t"}"#.to_vec()), "DEAD_LETTER", "duplicate field `quantity`"),
        ("deeply nested", Some(format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes()), "DEAD_LETTER", "not JSON"),
        ("empty productId", Some(order(&[("productId", json!(""))])), "DEAD_LETTER", "`productId` is empty"),
    ]
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    payload: Option<&[u8]>,
    event_id: &str,
) {
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: sluice::domain::EVENT_ID_HEADER,
        value: Some(event_id.as_bytes()),
    });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .partition(partition)
        .headers(headers);
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("producing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_poison_record_costs_only_itself() {
    poison_run(ServeConfig::new).await;
}

/// The same corpus with the Python version of the stock plugin active (as `stock`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_poison_record_costs_only_itself_with_the_python_plugin_active() {
    let python = common::interpreted("plugins/python/stock");
    poison_run(|db, brokers, topic, group| {
        ServeConfig::new(db, brokers, topic, group)
            .env("SLUICE_PLUGINS", python.display())
            // An interpreter's fresh instance and call cost more than the default 100 ms
            // allow on a loaded debug build (README "Plugins in Python and JavaScript").
            .env("SLUICE_PLUGIN_TIMEOUT_MS", "1000")
    })
    .await;
}

async fn poison_run(config: impl FnOnce(&str, &str, &str, &str) -> ServeConfig) {
    // Arrange
    let (broker, topic, db_url, pool) = Stack::start(common::PARTITIONS).await.into_parts();
    let initial = workload::add_products(&pool, 3, 1_000).await;
    let valid = workload::orders(300, &initial, 7);
    let config = config(&db_url, broker.bootstrap(), &topic, "poison-group");
    let mut process = Serve::spawn(&config, "poison");
    process.wait_healthy().await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();

    // Act: poison on partition 0, valid orders on the other partitions around it.
    let corpus = corpus();
    let mut expected: HashMap<String, (&str, &str, &str)> = HashMap::new();
    let mut valid_iter = valid.chunks(valid.len() / corpus.len() + 1);
    for (i, (name, payload, outcome, reason)) in corpus.iter().enumerate() {
        let event_id = format!("poison-{i}");
        send(&producer, &topic, 0, payload.as_deref(), &event_id).await;
        expected.insert(event_id, (name, outcome, reason));
        for (j, order) in valid_iter.next().unwrap_or_default().iter().enumerate() {
            let partition = 1 + (j as i32 % 3);
            send(
                &producer,
                &topic,
                partition,
                Some(&order.payload()),
                &order.id.to_string(),
            )
            .await;
        }
    }
    let total = (corpus.len() + valid.len()) as i64;
    workload::wait_processed(&pool, "poison-group", total, Duration::from_secs(60)).await;

    // Assert: each poison record has its outcome and a reason that says why.
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT event_id, outcome, reason FROM processed_messages WHERE event_id LIKE 'poison-%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), corpus.len());
    for (event_id, outcome, reason) in &rows {
        let (name, want_outcome, want_reason) = expected[event_id];
        let reason = reason.as_deref().unwrap_or_default();
        assert_eq!(outcome, want_outcome, "{name}: {reason}");
        assert!(
            reason.contains(want_reason),
            "{name}: `{reason}` should mention `{want_reason}`"
        );
    }
    let dead = rows.iter().filter(|r| r.1 == "DEAD_LETTER").count();
    let rejected = rows.iter().filter(|r| r.1 == "REJECTED").count();

    // The valid orders around them were all decided (none dead-lettered) and the stock adds up.
    let tally = workload::check_exactly_once(&pool, "poison-group", &initial, &valid).await;
    assert_eq!(tally.applied + tally.rejected, valid.len());

    // Dead letters: in the table and API, whole, and on the DLT topic with their coordinates.
    let client = reqwest::Client::new();
    let page: Value = get_json(&client, &process.url("/dead-letters?limit=5")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    let mut listed = 5;
    let mut before = page["nextBefore"].as_i64();
    while let Some(id) = before {
        let page: Value = get_json(
            &client,
            &process.url(&format!("/dead-letters?limit=5&before={id}")),
        )
        .await;
        listed += page["items"].as_array().unwrap().len();
        before = page["nextBefore"].as_i64();
    }
    assert_eq!(
        listed, dead,
        "paging newest first reaches every dead letter"
    );
    let newest = &page["items"][0];
    let id = newest["id"].as_i64().unwrap();
    let detail: Value = get_json(&client, &process.url(&format!("/dead-letters/{id}"))).await;
    assert_eq!(detail["topic"], topic.as_str());
    assert_eq!(detail["partition"], 0);
    assert_eq!(detail["plugin"], "stock");
    assert!(
        detail["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["key"] == "event-id")
    );
    assert!(detail.get("payload").is_some());

    let redriven: Value = client
        .post(process.url(&format!("/dead-letters/{id}/redrive")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        redriven["outcome"], "DEAD_LETTER",
        "the same plugin refuses it again: {redriven}"
    );
    let detail: Value = get_json(&client, &process.url(&format!("/dead-letters/{id}"))).await;
    assert_eq!(detail["redriveCount"], 1);
    assert_eq!(detail["lastRedriveOutcome"], "DEAD_LETTER");
    let missing = client
        .post(process.url("/dead-letters/999999/redrive"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    let dlt = read_topic(broker.bootstrap(), &format!("{topic}.DLT"), dead).await;
    assert_eq!(dlt.len(), dead, "every dead letter is on the DLT topic");
    for record in &dlt {
        let headers: HashMap<&str, String> = record
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value.as_deref().unwrap_or_default());
                (h.key.as_str(), value.into_owned())
            })
            .collect();
        assert_eq!(
            headers.get("kafka_dlt-original-topic").map(String::as_str),
            Some(topic.as_str())
        );
        assert_eq!(
            headers
                .get("kafka_dlt-original-partition")
                .map(String::as_str),
            Some("0")
        );
        assert!(headers.contains_key("kafka_dlt-original-offset"));
        assert!(!headers["kafka_dlt-exception-message"].is_empty());
        assert!(headers["event-id"].starts_with("poison-"));
    }

    let status = process.terminate().await;
    assert!(
        status.success(),
        "the host survived the corpus: {status}\n{}",
        process.log_tail()
    );
    eprintln!(
        "poison: {} kinds -> {dead} dead letters ({} on the DLT topic), {rejected} rejected; \
         {} valid orders on other partitions: {} applied, {} rejected",
        corpus.len(),
        dlt.len(),
        valid.len(),
        tally.applied,
        tally.rejected
    );
}
