//! Broker faults (request errors on Fetch, OffsetCommit and Produce, added latency, the
//! broker down and up) cost time, never records: every order is decided exactly once.
//! Faults can only be injected into the embedded broker, so this test always runs on one.

use crate::common;

use std::time::{Duration, Instant};

use common::process::{Serve, ServeConfig};
use common::{Stack, eventually, processed, workload};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::json;

const BROKER: i32 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_faults_lose_and_double_nothing() {
    // Arrange
    let (broker, topic, db_url, pool) =
        Stack::start_embedded(common::PARTITIONS).await.into_parts();
    let kafka = broker
        .embedded()
        .expect("an embedded broker, to inject faults into");
    let initial = workload::add_products(&pool, 5, 3_000).await;
    let mut orders = workload::orders(4_000, &initial, 23);
    workload::produce(&broker.producer(), &topic, &orders).await;
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, "faults-group")
        .env("SLUICE_BATCH_MAX_MESSAGES", 20);
    let mut process = Serve::spawn(&config, "faults");
    process.wait_healthy().await;
    let client = reqwest::Client::new();
    let count = || processed(&pool);
    eventually(Duration::from_secs(30), "ingest under way", || async {
        (count().await >= 500).then_some(())
    })
    .await;
    let started = Instant::now();
    let mut post = async |n: usize| {
        for i in 0..n {
            let product = format!("LOAD-{:02}", i % 5);
            let response = client
                .post(process.url("/orders"))
                .json(&json!({"userId": "faults", "productId": product, "quantity": 2, "unitPrice": 100}))
                .send()
                .await
                .expect("POST /orders");
            assert_eq!(
                response.status().as_u16(),
                201,
                "orders are accepted during broker faults"
            );
            let order: serde_json::Value = response.json().await.unwrap();
            orders.push(workload::Order {
                id: order["orderId"].as_str().unwrap().parse().unwrap(),
                product,
                quantity: 2,
            });
        }
    };

    // Act 1: request errors on fetching, committing offsets and producing.
    let cluster = kafka.cluster().unwrap();
    use RDKafkaRespErr::*;
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        ],
    );
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ],
    );
    post(100).await;
    let after_errors = count().await;

    // Act 2: 300 ms round trips for two seconds.
    cluster
        .broker_round_trip_time(BROKER, Duration::from_millis(300))
        .unwrap();
    post(20).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster
        .broker_round_trip_time(BROKER, Duration::ZERO)
        .unwrap();
    let after_latency = count().await;

    // Act 3: the broker goes down for three seconds; orders keep being accepted.
    cluster.broker_down(BROKER).unwrap();
    post(50).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.broker_up(BROKER).unwrap();
    let after_outage = count().await;
    drop(cluster);

    workload::wait_processed(
        &pool,
        "faults-group",
        orders.len() as i64,
        Duration::from_secs(90),
    )
    .await;

    // Assert
    let tally = workload::check_exactly_once(&pool, "faults-group", &initial, &orders).await;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dead, 0, "no record dead-lettered because of the broker");
    let pending = eventually(
        Duration::from_secs(30),
        "every posted order to get its verdict",
        || async {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'PENDING'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (pending == 0).then_some(pending)
        },
    )
    .await;
    let status = process.terminate().await;
    assert!(status.success(), "{status}\n{}", process.log_tail());
    eprintln!(
        "broker faults: {} orders (170 posted over HTTP during faults); decided {after_errors} after \
         request errors, {after_latency} after latency, {after_outage} after the outage; all decided \
         {:.1} s after the faults began: {} applied, {} rejected, 0 dead letters, {pending} pending",
        orders.len(),
        started.elapsed().as_secs_f64(),
        tally.applied,
        tally.rejected
    );
}
