//! `POST /orders` under concurrency: the orders of concurrent requests share statements
//! (group commit), yet each is written once with its event, and one order's failure is that
//! order's answer only.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt as _;
use secrecy::SecretString;
use serde_json::json;
use sluice::db::orders::OrderRow;
use sluice::domain::{Header, Record};
use sluice::http::{OrderWriter, WriteError};
use uuid::Uuid;

use common::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_are_each_written_once_with_their_event() {
    // Arrange
    let app = TestApp::spawn().await;
    let before = app.stock().await;
    // 100 orders of one unit for each demo product (stock 100, 110, 120): all can apply.
    let products = ["CATALOG-0001", "CATALOG-0002", "CATALOG-0003"];
    let orders = 300;

    // Act: 300 orders, 64 in flight at a time.
    let ids: Vec<String> = futures::stream::iter(0..orders)
        .map(|i| {
            let app = &app;
            async move {
                let response = app
                    .post_order(json!({"userId": format!("user-{}", i % 7),
                        "productId": products[i % 3], "quantity": 1, "unitPrice": 100}))
                    .await;
                assert_eq!(response.status(), 201, "order {i}");
                let body: serde_json::Value = response.json().await.expect("the order");
                body["orderId"].as_str().expect("orderId").to_string()
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;

    // Assert: every order is stored once, and its event was published and applied once.
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), orders);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.pool)
        .await
        .expect("counting orders");
    assert_eq!(stored, orders as i64);
    app.wait_processed(orders as i64, Duration::from_secs(60))
        .await;
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT event_id) FROM processed_messages WHERE outcome = 'APPLIED'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counting applied events");
    assert_eq!(applied, orders as i64);
    let after = app.stock().await;
    for product in products {
        assert_eq!(after[product], before[product] - 100, "{product}");
    }
    app.stop().await;
}

fn order(id: Uuid) -> (OrderRow, Record) {
    let row = OrderRow {
        order_id: id,
        user_id: "user-1".into(),
        product_id: "CATALOG-0001".into(),
        quantity: 1,
        unit_price: 100,
        total_price: 100,
        status: "PENDING".into(),
        status_reason: None,
        created_at: Utc::now(),
        plugin: None,
        plugin_version: None,
    };
    let event = Record {
        topic: "orders".into(),
        key: Some(b"CATALOG-0001".to_vec()),
        payload: Some(id.to_string().into_bytes()),
        headers: vec![Header::text("event-id", id.to_string())],
    };
    (row, event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_order_fails_alone_and_its_batch_is_written() {
    // Arrange: an order already stored, and a writer over the same database.
    let url = common::fresh_database().await;
    let pool = sluice::db::connect_and_migrate(&SecretString::from(url), 4)
        .await
        .expect("the database");
    let writer = OrderWriter::start(pool.clone(), Arc::new(tokio::sync::Notify::new()));
    let taken = Uuid::now_v7();
    let (row, event) = order(taken);
    writer.write(row, event).await.expect("the first order");

    // Act: 100 orders at once (they share statements), one of them reusing the stored id.
    let ids: Vec<Uuid> = (0..100)
        .map(|i| if i == 37 { taken } else { Uuid::now_v7() })
        .collect();
    let results = futures::future::join_all(ids.iter().map(|&id| {
        let writer = writer.clone();
        async move {
            let (row, event) = order(id);
            writer.write(row, event).await
        }
    }))
    .await;

    // Assert: only the duplicate failed, with the database's error; the others and their
    // events were written.
    for (i, result) in results.iter().enumerate() {
        match (i, result) {
            (37, Err(WriteError::Database(e))) => match e.as_ref() {
                sqlx::Error::Database(e) => assert_eq!(e.code().as_deref(), Some("23505"), "{e}"),
                other => panic!("the duplicate order: {other}"),
            },
            (37, other) => panic!("the duplicate order: {other:?}"),
            (_, Ok(())) => {}
            (i, Err(e)) => panic!("order {i} failed: {e}"),
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .expect("counting orders");
    assert_eq!(stored, 100);
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT records FROM outbox ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("the outbox");
    let mut events: Vec<String> = rows
        .iter()
        .flat_map(|r| sluice::domain::decode_records(r).expect("outbox rows decode"))
        .map(|r| String::from_utf8(r.payload.expect("payload")).expect("utf-8"))
        .collect();
    events.sort();
    let mut expected: Vec<String> = ids[..37]
        .iter()
        .chain(&ids[38..])
        .chain([&taken])
        .map(Uuid::to_string)
        .collect();
    expected.sort();
    assert_eq!(events, expected, "one event per written order");
}
