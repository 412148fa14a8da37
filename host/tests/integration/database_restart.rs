//! PostgreSQL going away mid-stream skips nothing and dead-letters nothing: ingest pauses,
//! reports not-ready, and resumes when the database is back.

use crate::common;

use std::time::{Duration, Instant};

use common::process::{Serve, ServeConfig};
use common::{Broker, create_topics, eventually, processed, workload};
use sluice::dev::EmbeddedPostgres;
use sqlx::{Connection, PgConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_stream_skips_nothing() {
    // Arrange: a PostgreSQL of this test's own, so it can be stopped.
    common::init_logging();
    let mut postgres = tokio::task::spawn_blocking(EmbeddedPostgres::start)
        .await
        .unwrap()
        .unwrap();
    let mut admin = PgConnection::connect(&postgres.url()).await.unwrap();
    sqlx::query("CREATE DATABASE restart")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let db_url = format!("{}/restart", postgres.url().trim_end_matches("/postgres"));
    let pool = sluice::db::connect_and_migrate(&secrecy::SecretString::from(db_url.clone()), 3)
        .await
        .unwrap();
    let initial = workload::add_products(&pool, 5, 2_000).await;
    let orders = workload::orders(4_000, &initial, 11);
    let broker = Broker::start();
    let topic = format!("orders-{}", uuid::Uuid::new_v4().simple());
    create_topics(&broker, &topic).await;
    workload::produce(&broker.producer(), &topic, &orders).await;
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, "restart-group")
        .env("SLUICE_BATCH_MAX_MESSAGES", 20);
    let mut process = Serve::spawn(&config, "restart");
    process.wait_healthy().await;
    eventually(
        Duration::from_secs(30),
        "ingest to be well under way",
        || async { (processed(&pool).await >= 1_000).then_some(()) },
    )
    .await;

    // Act: stop the database for a few seconds in the middle of the stream.
    let stopped_at = processed(&pool).await;
    let pg = tokio::task::spawn_blocking(move || {
        postgres.stop_server().unwrap();
        postgres
    });
    let mut postgres = pg.await.unwrap();
    let client = reqwest::Client::new();
    let not_ready = eventually(
        Duration::from_secs(10),
        "/readyz to report the outage",
        || async {
            let response = client.get(process.url("/readyz")).send().await.ok()?;
            (response.status().as_u16() == 503).then_some(response.text().await.ok()?)
        },
    )
    .await;
    // The HTTP API answers 503 on every route while the database is away, not 500.
    let asked = Instant::now();
    let order = client
        .post(process.url("/orders"))
        .json(&serde_json::json!({"userId": "u", "productId": "LOAD-00", "quantity": 1, "unitPrice": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        order.status().as_u16(),
        503,
        "POST /orders during the outage"
    );
    // Concurrent orders share statements (group commit): a group meets the outage once, and
    // every order of it is answered 503 at once, not one pool timeout after another.
    let group_asked = Instant::now();
    let statuses = futures::future::join_all((0..20).map(|i| {
        client
            .post(process.url("/orders"))
            .json(
                &serde_json::json!({"userId": format!("u{i}"), "productId": "LOAD-00",
                                      "quantity": 1, "unitPrice": 1}),
            )
            .send()
    }))
    .await;
    for status in statuses {
        assert_eq!(
            status.unwrap().status().as_u16(),
            503,
            "concurrent POST /orders during the outage"
        );
    }
    let group_answered = group_asked.elapsed();
    assert!(
        group_answered < Duration::from_secs(10),
        "20 concurrent orders took {group_answered:?} to be refused (one pool timeout each?)"
    );
    let catalogs = client.get(process.url("/catalogs")).send().await.unwrap();
    assert_eq!(
        catalogs.status().as_u16(),
        503,
        "GET /catalogs during the outage"
    );
    let unavailable_in = asked.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down_for = Instant::now();
    postgres = tokio::task::spawn_blocking(move || {
        postgres.start_server().unwrap();
        postgres
    })
    .await
    .unwrap();
    let pool = sluice::db::connect_and_migrate(&secrecy::SecretString::from(db_url.clone()), 3)
        .await
        .unwrap();
    workload::wait_processed(
        &pool,
        "restart-group",
        orders.len() as i64,
        Duration::from_secs(60),
    )
    .await;
    let recovered_in = down_for.elapsed();

    // Assert
    let tally = workload::check_exactly_once(&pool, "restart-group", &initial, &orders).await;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        dead, 0,
        "nothing dead-lettered because the database was down"
    );
    let ready = client.get(process.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "ready again");
    let status = process.terminate().await;
    assert!(status.success(), "{status}\n{}", process.log_tail());
    eprintln!(
        "database restart: stopped after {stopped_at} of {} records, /readyz said {not_ready}; \
         POST /orders and GET /catalogs answered 503 in {unavailable_in:?}; \
         all decided {:.1} s after restart: {} applied, {} rejected, 0 dead letters",
        orders.len(),
        recovered_in.as_secs_f64(),
        tally.applied,
        tally.rejected
    );
    drop(postgres);
}
