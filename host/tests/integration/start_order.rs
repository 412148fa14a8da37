//! Start in any order: `sluice serve` started before its topics exist, before the brokers
//! answer or before PostgreSQL does says what it waits for, resumes by itself, and decides every
//! record exactly once; so does one that loses either dependency for a minute. Each under both
//! group protocols (`auto` is the consumer protocol on these brokers), on the embedded broker
//! and, for the late topics and a hot swap, on a standalone one (another librdkafka's mock
//! cluster, in a process of its own).

use crate::common;

use std::time::{Duration, Instant};

use common::process::{Serve, ServeConfig};
use common::{Broker, Stack, eventually, fixture, fresh_database, metric, processed_on, workload};
use reqwest::Client;
use serde_json::{Value, json};
use sluice::dev::EmbeddedPostgres;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// The fixture plugin that keeps a tally per key and emits a record per applied order.
const TALLY: &str = "sluice_fixture_tally";

/// `/readyz`: its status and its answer.
async fn readyz(client: &Client, process: &Serve) -> Option<(u16, Value)> {
    let response = client.get(process.url("/readyz")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// Wait until `/readyz` answers 200 and what `flow` waits for contains `needle`.
async fn wait_reported(client: &Client, process: &Serve, flow: &str, needle: &str) -> Value {
    eventually(
        Duration::from_secs(20),
        &format!("/readyz to say that {flow} waits for \"{needle}\""),
        || async {
            let (status, body) = readyz(client, process).await?;
            let reason = body["waiting"][flow].as_str()?;
            (status == 200 && reason.contains(needle)).then_some(body)
        },
    )
    .await
}

/// Wait until `/readyz` answers 200 with nothing waiting.
async fn wait_nothing_waits(client: &Client, process: &Serve) {
    eventually(
        Duration::from_secs(30),
        "/readyz to report nothing waiting",
        || async {
            let (status, body) = readyz(client, process).await?;
            (status == 200 && body.get("waiting").is_none()).then_some(())
        },
    )
    .await;
}

/// The log's lines at ERROR level (none are expected while Sluice waits).
fn errors_logged(process: &Serve) -> Vec<String> {
    std::fs::read_to_string(&process.log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(" ERROR "))
        .map(str::to_string)
        .collect()
}

/// POST `n` orders of `product`: the orders, as the workload checks them.
async fn post_orders(
    client: &Client,
    process: &Serve,
    product: &str,
    n: usize,
) -> Vec<workload::Order> {
    let mut orders = Vec::with_capacity(n);
    for _ in 0..n {
        let response = client
            .post(process.url("/orders"))
            .json(
                &json!({"userId": "start", "productId": product, "quantity": 1, "unitPrice": 100}),
            )
            .send()
            .await
            .expect("POST /orders");
        assert_eq!(response.status().as_u16(), 201, "an order is taken");
        let order: Value = response.json().await.expect("the order");
        orders.push(workload::Order {
            id: order["orderId"].as_str().unwrap().parse().unwrap(),
            product: product.to_string(),
            quantity: 1,
        });
    }
    orders
}

/// Wait until none of the orders in the database is `PENDING`.
async fn wait_all_verdicts(pool: &PgPool, within: Duration) {
    eventually(within, "every order's verdict", || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'PENDING'")
                .fetch_one(pool)
                .await
                .ok()?;
        (pending == 0).then_some(())
    })
    .await;
}

/// `sluice serve` started before any of its topics exist; the first order creates the order
/// topic (its event's produce), its verdict the status topic, and the record the plugin emits
/// the emitted topic, on which a route of its own waits. Each flow says what it waits for
/// meanwhile (at INFO, no ERROR line), and decides within seconds of its topic's creation.
async fn late_topics(broker: Broker, protocol: &str, bound: Duration) {
    common::init_logging();
    let db_url = fresh_database().await;
    let pool = sluice::db::connect_and_migrate(&secrecy::SecretString::from(db_url.clone()), 2)
        .await
        .unwrap();
    let topic = format!("late-{}", Uuid::new_v4().simple());
    let emitted = format!("{topic}.tally");
    let group = format!("late-{}", Uuid::new_v4().simple());
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, &group)
        .env("SLUICE_PLUGINS", fixture(TALLY).display())
        .env(
            "SLUICE_ROUTES",
            format!("{topic}={TALLY},{emitted}={TALLY}"),
        )
        .env("SLUICE_STATE", &topic)
        .env("SLUICE_EMIT", format!("{topic}={emitted}"))
        .env(
            "SLUICE_PLUGIN_CONFIG",
            format!("{TALLY}:emit-topic={emitted}"),
        )
        .env("SLUICE_GROUP_PROTOCOL", protocol);
    // A classic member whose subscription grows (the emitted topic, after the order topic)
    // rejoins its group. Kafka completes that rejoin once every member rejoined (at once,
    // alone); librdkafka's mock cluster waits the member's session timeout less a second
    // (45 s by default: rdkafka_mock_cgrp.c, `rd_kafka_mock_cgrp_classic_rebalance`).
    let config = if protocol == "classic" {
        config.env("SLUICE_KAFKA_OPTIONS", "session.timeout.ms=6000")
    } else {
        config
    };
    let mut process = Serve::spawn(&config, "late-topics");
    process.wait_healthy().await;
    let client = Client::new();

    // Waiting, and saying so.
    let ready = wait_reported(&client, &process, "ingest", "does not exist yet").await;
    assert!(
        ready["waiting"]["orderStatus"]
            .as_str()
            .is_some_and(|r| r.contains("does not exist yet")),
        "{ready}"
    );
    let exposition = client
        .get(process.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for t in [&topic, &emitted] {
        assert_eq!(
            metric(&exposition, "sluice_assigned_partitions", &[("topic", t)]),
            Some(0.0),
            "owned partitions of {t}: zero, not absent"
        );
    }

    // Act: the first order; its event's produce creates the order topic.
    let posted = Instant::now();
    let orders = post_orders(&client, &process, "CATALOG-0001", 1).await;

    // Assert: the order decided, its verdict back, the emitted record decided downstream.
    workload::wait_processed_on(&pool, &topic, 1, bound).await;
    let decided = posted.elapsed();
    wait_all_verdicts(&pool, bound).await;
    let verdict = posted.elapsed();
    workload::wait_processed_on(&pool, &emitted, 1, bound).await;
    let downstream = posted.elapsed();
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1")
        .bind(orders[0].id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "APPLIED");
    wait_nothing_waits(&client, &process).await;
    let exposition = client
        .get(process.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let owned = metric(
        &exposition,
        "sluice_assigned_partitions",
        &[("topic", &topic)],
    );
    assert!(
        owned.is_some_and(|n| n > 0.0),
        "owned partitions of {topic}: {owned:?}"
    );
    let log = std::fs::read_to_string(&process.log).unwrap_or_default();
    assert!(
        log.contains(&format!("protocol={}", expected_protocol(protocol))),
        "the members use the {protocol} protocol:\n{}",
        process.log_tail()
    );
    let status = process.terminate().await;
    assert!(status.success(), "{status}\n{}", process.log_tail());
    let errors = errors_logged(&process);
    assert!(
        errors.is_empty(),
        "ERROR lines while waiting:\n{}",
        errors.join("\n")
    );
    assert_eq!(processed_on(&pool, &topic).await, 1, "decided once");
    eprintln!(
        "late topics ({protocol}): from the POST of the first order, decided {decided:.2?}, \
         verdict {verdict:.2?}, emitted record decided downstream {downstream:.2?}"
    );
}

/// What `--group-protocol` becomes on these brokers (both have the consumer protocol).
fn expected_protocol(flag: &str) -> &str {
    match flag {
        "auto" => "consumer",
        other => other,
    }
}

/// On the embedded broker the whole chain takes well under the bound; it is generous for a
/// loaded test machine.
const LATE_TOPIC_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_topics_are_consumed_under_the_default_protocol() {
    late_topics(Broker::start_embedded(), "auto", LATE_TOPIC_BOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_topics_are_consumed_under_the_classic_protocol() {
    late_topics(Broker::start(), "classic", LATE_TOPIC_BOUND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_topics_are_consumed_on_a_standalone_broker_under_the_default_protocol() {
    late_topics(Broker::start_standalone(), "auto", LATE_TOPIC_BOUND).await;
}

/// The standalone broker delays a new classic group's first rebalance by 3 s (as Kafka's
/// `group.initial.rebalance.delay.ms` does): each group joins when its first topic exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_topics_are_consumed_on_a_standalone_broker_under_the_classic_protocol() {
    late_topics(
        Broker::start_standalone(),
        "classic",
        LATE_TOPIC_BOUND + Duration::from_secs(3),
    )
    .await;
}

/// The brokers do not answer when `sluice serve` starts: it serves the API (orders wait in the
/// outbox), says what ingest waits for, and once the brokers are back decides every record
/// exactly once.
async fn brokers_down_at_start(protocol: &str) {
    let (broker, topic, db_url, pool) =
        Stack::start_embedded(common::PARTITIONS).await.into_parts();
    let kafka = broker
        .embedded()
        .expect("an embedded broker")
        .cluster()
        .unwrap();
    let initial = workload::add_products(&pool, 5, 100_000).await;
    let mut orders = workload::orders(2_000, &initial, 5);
    workload::produce(&broker.producer(), &topic, &orders).await;
    kafka.broker_down(1).unwrap();
    let group = format!("down-{}", Uuid::new_v4().simple());
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, &group)
        .env("SLUICE_GROUP_PROTOCOL", protocol);
    let mut process = Serve::spawn(&config, "brokers-down");
    process.wait_healthy().await;
    let client = Client::new();

    wait_reported(&client, &process, "ingest", "brokers do not answer").await;
    orders.extend(post_orders(&client, &process, "LOAD-00", 50).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        common::processed(&pool).await,
        0,
        "nothing decided without brokers"
    );

    // Act
    let up = Instant::now();
    kafka.broker_up(1).unwrap();

    // Assert
    workload::wait_processed(&pool, &group, orders.len() as i64, Duration::from_secs(60)).await;
    let caught_up = up.elapsed();
    let tally = workload::check_exactly_once(&pool, &group, &initial, &orders).await;
    wait_all_verdicts(&pool, Duration::from_secs(30)).await;
    wait_nothing_waits(&client, &process).await;
    let status = process.terminate().await;
    assert!(status.success(), "{status}\n{}", process.log_tail());
    let errors = errors_logged(&process);
    assert!(errors.is_empty(), "ERROR lines:\n{}", errors.join("\n"));
    eprintln!(
        "brokers down at start ({protocol}): {} records ({} applied) decided {caught_up:.2?} \
         after the brokers came up",
        orders.len(),
        tally.applied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_down_at_start_under_the_default_protocol() {
    brokers_down_at_start("auto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_down_at_start_under_the_classic_protocol() {
    brokers_down_at_start("classic").await;
}

/// A PostgreSQL of the test's own with a migrated database `name`; its URL.
async fn own_postgres(name: &str) -> (EmbeddedPostgres, String) {
    common::init_logging();
    let postgres = tokio::task::spawn_blocking(EmbeddedPostgres::start)
        .await
        .unwrap()
        .unwrap();
    let mut admin = PgConnection::connect(&postgres.url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let db_url = format!("{}/{name}", postgres.url().trim_end_matches("/postgres"));
    (postgres, db_url)
}

async fn stop(postgres: EmbeddedPostgres) -> EmbeddedPostgres {
    tokio::task::spawn_blocking(move || {
        let mut postgres = postgres;
        postgres.stop_server().unwrap();
        postgres
    })
    .await
    .unwrap()
}

async fn start(postgres: EmbeddedPostgres) -> EmbeddedPostgres {
    tokio::task::spawn_blocking(move || {
        let mut postgres = postgres;
        postgres.start_server().unwrap();
        postgres
    })
    .await
    .unwrap()
}

/// PostgreSQL does not answer when `sluice serve` starts: every request is answered 503 with
/// why (`/readyz` included), and once the database is up it migrates, joins and decides every
/// record exactly once.
async fn database_down_at_start(protocol: &str) {
    let (postgres, db_url) = own_postgres("late").await;
    let url = secrecy::SecretString::from(db_url.clone());
    let pool = sluice::db::connect_and_migrate(&url, 2).await.unwrap();
    let initial = workload::add_products(&pool, 5, 100_000).await;
    pool.close().await;
    let broker = Broker::start_embedded();
    let topic = format!("orders-{}", Uuid::new_v4().simple());
    common::create_topics(&broker, &topic).await;
    let orders = workload::orders(2_000, &initial, 6);
    workload::produce(&broker.producer(), &topic, &orders).await;
    let postgres = stop(postgres).await;
    let group = format!("nodb-{}", Uuid::new_v4().simple());
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, &group)
        .env("SLUICE_GROUP_PROTOCOL", protocol);
    let mut process = Serve::spawn(&config, "database-down");
    let client = Client::new();

    let waiting = eventually(
        Duration::from_secs(30),
        "/readyz to say that it waits for PostgreSQL",
        || async {
            let (status, body) = readyz(&client, &process).await?;
            let reason = body["error"].as_str()?;
            (status == 503 && reason.starts_with("starting: waiting for PostgreSQL"))
                .then_some(body)
        },
    )
    .await;
    assert!(
        waiting["error"]
            .as_str()
            .is_some_and(|r| r.contains("refused")),
        "{waiting}"
    );
    let order = client
        .post(process.url("/orders"))
        .json(&json!({"userId": "u", "productId": "LOAD-00", "quantity": 1, "unitPrice": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        order.status().as_u16(),
        503,
        "an order cannot be taken without the database"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Act
    let up = Instant::now();
    let _postgres = start(postgres).await;

    // Assert
    process.wait_healthy().await;
    let pool = sluice::db::connect_and_migrate(&url, 2).await.unwrap();
    workload::wait_processed(&pool, &group, orders.len() as i64, Duration::from_secs(60)).await;
    let caught_up = up.elapsed();
    let tally = workload::check_exactly_once(&pool, &group, &initial, &orders).await;
    let status = process.terminate().await;
    assert!(status.success(), "{status}\n{}", process.log_tail());
    let errors = errors_logged(&process);
    assert!(errors.is_empty(), "ERROR lines:\n{}", errors.join("\n"));
    eprintln!(
        "database down at start ({protocol}): {} records ({} applied) decided {caught_up:.2?} \
         after PostgreSQL started",
        orders.len(),
        tally.applied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_at_start_under_the_default_protocol() {
    database_down_at_start("auto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_at_start_under_the_classic_protocol() {
    database_down_at_start("classic").await;
}

/// How long each outage of `outages` lasts: a minute, unless `SLUICE_TEST_OUTAGE_S` says
/// otherwise (a quicker local loop).
fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("SLUICE_TEST_OUTAGE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    )
}

/// Under a steady feed (records produced, orders posted), PostgreSQL goes away for a minute,
/// then the brokers do: orders are refused (503) without the database and taken without the
/// brokers, nothing is dead-lettered, and once both are back every record and order is decided
/// exactly once.
async fn outages(protocol: &str) {
    let (postgres, db_url) = own_postgres("outages").await;
    let url = secrecy::SecretString::from(db_url.clone());
    let pool = sluice::db::connect_and_migrate(&url, 2).await.unwrap();
    let initial = workload::add_products(&pool, 5, 1_000_000).await;
    pool.close().await;
    let broker = Broker::start_embedded();
    let kafka = broker.embedded().unwrap().cluster().unwrap();
    let topic = format!("orders-{}", Uuid::new_v4().simple());
    common::create_topics(&broker, &topic).await;
    let group = format!("outage-{}", Uuid::new_v4().simple());
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, &group)
        .env("SLUICE_GROUP_PROTOCOL", protocol)
        .env("SLUICE_BATCH_MAX_MESSAGES", 50);
    let mut process = Serve::spawn(&config, "outages");
    process.wait_healthy().await;
    let client = Client::new();

    // A steady feed: 100 records a second, produced whatever happens.
    let feed = workload::orders(100 * (2 * outage().as_secs() as usize + 30), &initial, 9);
    let producing = {
        let (producer, topic, feed) = (broker.producer(), topic.clone(), feed.clone());
        tokio::spawn(async move {
            let mut next = Instant::now();
            for chunk in feed.chunks(10) {
                workload::produce(&producer, &topic, chunk).await;
                next += Duration::from_millis(100);
                tokio::time::sleep_until(next.into()).await;
            }
        })
    };
    let mut posted = post_orders(&client, &process, "LOAD-01", 20).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Act 1: no database for a minute.
    let postgres = stop(postgres).await;
    let refused = eventually(
        Duration::from_secs(20),
        "/readyz to report the database outage",
        || async { (readyz(&client, &process).await?.0 == 503).then_some(()) },
    );
    refused.await;
    tokio::time::sleep(outage()).await;
    let postgres = start(postgres).await;
    wait_nothing_waits(&client, &process).await;
    posted.extend(post_orders(&client, &process, "LOAD-02", 20).await);

    // Act 2: no brokers for a minute; orders are still taken.
    kafka.broker_down(1).unwrap();
    wait_reported(&client, &process, "ingest", "brokers do not answer").await;
    posted.extend(post_orders(&client, &process, "LOAD-03", 20).await);
    tokio::time::sleep(outage()).await;
    kafka.broker_up(1).unwrap();
    producing.await.unwrap();
    posted.extend(post_orders(&client, &process, "LOAD-04", 20).await);

    // Assert
    let pool = sluice::db::connect_and_migrate(&url, 2).await.unwrap();
    let all: Vec<workload::Order> = feed.iter().chain(&posted).cloned().collect();
    workload::wait_processed(&pool, &group, all.len() as i64, Duration::from_secs(120)).await;
    let tally = workload::check_exactly_once(&pool, &group, &initial, &all).await;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dead, 0, "nothing dead-lettered for an outage");
    wait_all_verdicts(&pool, Duration::from_secs(60)).await;
    let status = process.terminate().await;
    assert!(status.success(), "{status}\n{}", process.log_tail());
    drop(postgres);
    eprintln!(
        "outages ({protocol}): {} records and {} posted orders decided exactly once ({} applied) \
         across {:?} without the database and {:?} without the brokers",
        feed.len(),
        posted.len(),
        tally.applied,
        outage(),
        outage()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_without_each_dependency_under_the_default_protocol() {
    outages("auto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_without_each_dependency_under_the_classic_protocol() {
    outages("classic").await;
}
