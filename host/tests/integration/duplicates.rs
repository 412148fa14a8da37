//! The same event delivered more than once changes stock once.

use crate::common;

use std::time::Duration;

use common::{TestApp, eventually, produce, wait_for_order};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_three_times_is_applied_once() {
    // Arrange
    let app = TestApp::spawn().await;
    let producer = app.broker.producer();
    let event_id = uuid::Uuid::new_v4().to_string();
    let payload = json!({"orderId": event_id, "userId": "u", "productId": "CATALOG-0001",
                         "quantity": 4, "unitPrice": 1500, "totalPrice": 6000,
                         "createdAt": "2026-11-25T08:00:00.000Z"})
    .to_string();

    // Act: twice back to back (likely one batch, different partitions), once later.
    produce(
        &producer,
        &app.topic,
        "key-a",
        payload.as_bytes(),
        Some(&event_id),
    )
    .await;
    produce(
        &producer,
        &app.topic,
        "key-b",
        payload.as_bytes(),
        Some(&event_id),
    )
    .await;
    app.wait_processed(2, Duration::from_secs(10)).await;
    produce(
        &producer,
        &app.topic,
        "key-c",
        payload.as_bytes(),
        Some(&event_id),
    )
    .await;
    app.wait_processed(3, Duration::from_secs(10)).await;

    // Assert
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM processed_messages WHERE event_id = $1 ORDER BY processed_at, outcome",
    )
    .bind(&event_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let applied = outcomes.iter().filter(|o| *o == "APPLIED").count();
    let duplicates = outcomes.iter().filter(|o| *o == "DUPLICATE").count();
    assert_eq!((applied, duplicates), (1, 2), "{outcomes:?}");
    assert_eq!(app.stock().await["CATALOG-0001"], 96);
    eprintln!(
        "duplicates: 1 event x 3 deliveries -> {applied} applied, {duplicates} duplicates, stock 100 -> 96"
    );

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_outbox_event_is_applied_once_and_the_order_reports_its_verdict() {
    // Arrange: an order that went all the way through.
    let app = TestApp::spawn().await;
    let order: serde_json::Value = app
        .post_order(json!({"userId": "user-9", "productId": "CATALOG-0002", "quantity": 7, "unitPrice": 1000}))
        .await
        .json()
        .await
        .unwrap();
    let order_id = order["orderId"].as_str().unwrap().to_string();
    let path = format!("/orders/{order_id}");
    let applied = wait_for_order(&app.http, &app.url(&path), "APPLIED").await;
    assert_eq!(applied["handledBy"]["plugin"], "stock");
    assert_eq!(
        applied["handledBy"]["version"].as_str().unwrap().len(),
        64,
        "sha256 hex"
    );

    // Act: the relay published but crashed before deleting the row: the same event again.
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload, headers)
         SELECT $1, convert_to('CATALOG-0002', 'UTF8'), convert_to($2, 'UTF8'),
                jsonb_build_array(jsonb_build_object('key', 'event-id',
                                  'value', encode(convert_to($3, 'UTF8'), 'base64')))",
    )
    .bind(&app.topic)
    .bind(
        serde_json::to_string(&json!({"orderId": order_id, "userId": "user-9",
        "productId": "CATALOG-0002", "quantity": 7, "unitPrice": 1000, "totalPrice": 7000,
        "createdAt": order["createdAt"]}))
        .unwrap(),
    )
    .bind(&order_id)
    .execute(&app.pool)
    .await
    .unwrap();
    app.relay_wake();
    app.wait_processed(2, Duration::from_secs(10)).await;

    // Assert
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM processed_messages WHERE event_id = $1 ORDER BY outcome",
    )
    .bind(&order_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(outcomes, ["APPLIED", "DUPLICATE"]);
    assert_eq!(app.stock().await["CATALOG-0002"], 103);
    let (_, order) = app.get_json(&path).await;
    assert_eq!(
        order["status"], "APPLIED",
        "a duplicate does not change the verdict"
    );

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_record_the_broker_can_never_accept_is_dropped_and_the_rows_behind_it_go_out() {
    // Arrange: a record larger than the producer's `message.max.bytes` (1,000,000 bytes), and
    // behind it an order event, in rows of their own.
    let app = TestApp::spawn().await;
    let before = app.stock().await["CATALOG-0003"];
    let insert = |payload: String, event_id: String| {
        sqlx::query(
            "INSERT INTO outbox (topic, key, payload, headers)
             SELECT $1, convert_to('CATALOG-0003', 'UTF8'), convert_to($2, 'UTF8'),
                    jsonb_build_array(jsonb_build_object('key', 'event-id',
                                      'value', encode(convert_to($3, 'UTF8'), 'base64')))",
        )
        .bind(app.topic.clone())
        .bind(payload)
        .bind(event_id)
        .execute(&app.pool)
    };
    insert("x".repeat(1_200_000), "too-large".into())
        .await
        .unwrap();
    let order_id = uuid::Uuid::now_v7().to_string();
    insert(
        serde_json::to_string(&json!({"orderId": order_id, "userId": "user-3",
            "productId": "CATALOG-0003", "quantity": 2, "unitPrice": 10, "totalPrice": 20,
            "createdAt": "2026-01-01T00:00:00Z"}))
        .unwrap(),
        order_id.clone(),
    )
    .await
    .unwrap();

    // Act
    app.relay_wake();
    app.wait_processed(1, Duration::from_secs(10)).await;

    // Assert: the order's event was published and applied; no row is left to block the relay.
    assert_eq!(app.stock().await["CATALOG-0003"], before - 2);
    eventually(Duration::from_secs(10), "the outbox drains", || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (rows == 0).then_some(())
    })
    .await;
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM processed_messages WHERE event_id = $1")
            .bind(&order_id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(outcomes, ["APPLIED"]);

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_are_forgotten_after_the_retention_window() {
    // Arrange: the app's own sweep, every 100 ms, with the default 7-day window.
    let app = TestApp::spawn_with(|settings| {
        settings.ingest.dedupe_retention = Duration::from_secs(7 * 24 * 3600);
        settings.ingest.dedupe_sweep_interval = Duration::from_millis(100);
    })
    .await;

    // Act: one id decided 8 days ago, one an hour ago, in one statement (so every sweep
    // sees both or neither).
    sqlx::query(
        "INSERT INTO processed_messages (group_id, topic, partition, \"offset\", event_id, outcome,
                                         plugin, plugin_version, processed_at) VALUES
         ('g', 't', 0, 0, 'old', 'APPLIED', 'p', 'v', now() - interval '8 days'),
         ('g', 't', 0, 1, 'recent', 'APPLIED', 'p', 'v', now() - interval '1 hour')",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    // Assert: the sweep that removed the old id kept the recent one.
    let left: Vec<String> = eventually(
        Duration::from_secs(10),
        "the old event id to be swept",
        || async {
            let left: Vec<String> =
                sqlx::query_scalar("SELECT event_id FROM processed_messages WHERE group_id = 'g'")
                    .fetch_all(&app.pool)
                    .await
                    .ok()?;
            (!left.iter().any(|id| id == "old")).then_some(left)
        },
    )
    .await;
    assert_eq!(left, ["recent"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sweep_waits_a_full_period() {
    // Arrange: a sweep period far longer than the test.
    let app = TestApp::spawn_with(|settings| {
        settings.ingest.dedupe_retention = Duration::from_secs(3600);
        settings.ingest.dedupe_sweep_interval = Duration::from_secs(3600);
    })
    .await;

    // Act
    sqlx::query(
        "INSERT INTO processed_messages (group_id, topic, partition, \"offset\", event_id, outcome,
                                         plugin, plugin_version, processed_at)
         VALUES ('g', 't', 0, 0, 'old', 'APPLIED', 'p', 'v', now() - interval '2 hours')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Assert: nothing swept at start; the SQL itself removes exactly what is older.
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 1, "no sweep at start");
    let cutoff = chrono::Utc::now() - chrono::Duration::hours(1);
    let forgotten = sluice::db::ingest::forget_events_before(&app.pool, cutoff)
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
    app.stop().await;
}
