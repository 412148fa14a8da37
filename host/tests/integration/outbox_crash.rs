//! A crash between an order's commit and its publication loses nothing: the outbox row is
//! published after restart and the order is applied exactly once.

use crate::common;

use std::time::Duration;

use common::process::{Serve, ServeConfig};
use common::{Stack, stock_of, wait_for_order};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_committed_before_a_crash_are_published_after_restart_and_applied_once() {
    // Arrange
    let (broker, topic, db_url, pool) = Stack::start(common::PARTITIONS).await.into_parts();
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, "outbox-group");
    // The first incarnation cannot reach any broker (a closed port): works the same against
    // the embedded broker and an external one.
    let unreachable = ServeConfig {
        brokers: common::closed_port_address(),
        ..config.clone()
    };
    let mut process = Serve::spawn(&unreachable, "outbox");
    process.wait_healthy().await;
    let client = reqwest::Client::new();

    // Act: with the broker unreachable, orders commit but cannot be published; then SIGKILL.
    let mut ids = Vec::new();
    for quantity in 1..=5 {
        let response = client
            .post(process.url("/orders"))
            .json(&json!({"userId": "crash", "productId": "CATALOG-0003", "quantity": quantity, "unitPrice": 2000}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let order: serde_json::Value = response.json().await.unwrap();
        ids.push(order["orderId"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(waiting, 5, "committed, not yet published");
    process.kill9();
    let mut process = Serve::spawn(&config, "outbox-restarted");
    process.wait_healthy().await;

    // Assert: published after restart, applied once each, verdicts back on the orders.
    for id in &ids {
        wait_for_order(&client, &process.url(&format!("/orders/{id}")), "APPLIED").await;
        let decided: Vec<String> =
            sqlx::query_scalar("SELECT outcome FROM processed_messages WHERE event_id = $1")
                .bind(id)
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(
            decided.iter().filter(|o| *o == "APPLIED").count() == 1,
            "{id}: {decided:?}"
        );
    }
    let stock = stock_of(&pool, "CATALOG-0003").await;
    assert_eq!(stock, 120 - (1 + 2 + 3 + 4 + 5));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let status = process.terminate().await;
    assert!(status.success(), "{status}\n{}", process.log_tail());
    eprintln!(
        "outbox crash: 5 orders committed while no broker was reachable, process killed, \
               all 5 published after restart and applied once; CATALOG-0003 120 -> {stock}"
    );
}
