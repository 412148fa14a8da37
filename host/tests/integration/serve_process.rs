//! `sluice serve` as a separate process against a broker and a database this test owns,
//! the way an operator runs it.

use crate::common;

use std::time::Duration;

use common::process::{Serve, ServeConfig};
use common::{Stack, eventually, get_json};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_both_flows_and_stops_cleanly_on_sigterm() {
    // Arrange: broker, topics and database owned by the test.
    let Stack {
        broker,
        topic,
        db_url,
        ..
    } = Stack::start(common::PARTITIONS).await;
    let group = format!("group-{}", uuid::Uuid::new_v4().simple());
    let mut process = Serve::spawn(
        &ServeConfig::new(&db_url, broker.bootstrap(), &topic, &group),
        "serve",
    );
    process.wait_healthy().await;
    let client = reqwest::Client::new();

    // Act
    let response = client
        .post(process.url("/orders"))
        .json(&json!({"userId": "user-7", "productId": "CATALOG-0003", "quantity": 20, "unitPrice": 2000}))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(response.status().as_u16(), 201);
    eventually(
        Duration::from_secs(15),
        "CATALOG-0003 stock to drop to 100",
        || async {
            let product = get_json(&client, &process.url("/catalogs/CATALOG-0003")).await;
            (product["stock"] == 100).then_some(())
        },
    )
    .await;
    let status = process.terminate().await;
    assert!(
        status.success(),
        "sluice serve exits 0 on SIGTERM, got {status}\n{}",
        process.log_tail()
    );
}
