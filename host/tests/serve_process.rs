//! `sluice serve` as a separate process against a broker and a database this test owns,
//! the way an operator runs it.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Broker, eventually, fresh_database};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

/// Kills the process if the test fails before stopping it.
struct Process(Option<Child>);

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_both_flows_and_stops_cleanly_on_sigterm() {
    // Arrange: broker, topic and database owned by the test.
    common::init_logging();
    let broker = Broker::start();
    let topic = format!("orders-{}", uuid::Uuid::new_v4().simple());
    broker.create_topic(&topic, common::PARTITIONS).await;
    let db_url = fresh_database().await;
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");

    // Act
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .env("DATABASE_URL", &db_url)
        .env("SLUICE_KAFKA_BROKERS", broker.bootstrap())
        .env("SLUICE_TOPIC", &topic)
        .env(
            "SLUICE_GROUP_ID",
            format!("group-{}", uuid::Uuid::new_v4().simple()),
        )
        .env("SLUICE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "SLUICE_KAFKA_OPTIONS",
            "session.timeout.ms=6000,statistics.interval.ms=0",
        )
        .env("RUST_LOG", "info")
        .env("SLUICE_ADMIN_OPEN_ON_LOOPBACK", "true")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting sluice serve");
    let mut process = Process(Some(child));
    let client = reqwest::Client::new();
    eventually(
        Duration::from_secs(30),
        "sluice serve to answer /healthz",
        || async {
            let response = client.get(format!("{base}/healthz")).send().await.ok()?;
            response.status().is_success().then_some(())
        },
    )
    .await;
    let response = client
        .post(format!("{base}/orders"))
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
            let product: serde_json::Value = client
                .get(format!("{base}/catalogs/CATALOG-0003"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (product["stock"] == 100).then_some(())
        },
    )
    .await;

    let mut child = process.0.take().unwrap();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "sluice serve exits 0 on SIGTERM, got {status}"
    );
}
