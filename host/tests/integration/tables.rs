//! Contract 0.3: plugins write the team's own tables (upsert, delete, add on tables declared
//! per route), in the batch's transaction with the position: the read-model example and the
//! zero-code sink under kill -9 write each applied record's rows once (counters exact); a record
//! the team's constraints refuse is a dead letter alone; hostile writes are dead letters and
//! touch nothing; tables Sluice cannot write refuse the start.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{Serve, ServeConfig};
use common::{Stack, fixture, kills, processed_on, produce, workload};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const READ_MODEL: &str = "sluice_plugin_read_model";
const HOSTILE: &str = "sluice_fixture_hostile_tables";

/// The read side the example writes, as the README creates it, with two constraints of the
/// team's own for the refusal test: a blocked user, and a user allowed one order.
fn read_side() -> String {
    format!(
        "{}
         ALTER TABLE user_orders ADD CONSTRAINT not_blocked CHECK (user_id <> 'blocked');
         CREATE UNIQUE INDEX one_order_per_once_user ON user_orders (user_id)
             WHERE user_id = 'once';",
        include_str!("../../../plugins/read-model/tables.sql")
    )
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn create(pool: &PgPool, schema: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(schema.to_string()))
        .execute(pool)
        .await
        .expect("creating the team's tables");
}

/// `sluice serve` with the read-model example on `topic`, writing its two tables.
fn read_model_config(
    db_url: &str,
    broker: &common::Broker,
    topic: &str,
    group: &str,
) -> ServeConfig {
    ServeConfig::new(db_url, broker.bootstrap(), topic, group)
        .env("SLUICE_PLUGINS", fixture(READ_MODEL).display())
        .env("SLUICE_ROUTES", format!("{topic}={READ_MODEL}"))
        .env(
            "SLUICE_TABLES",
            format!("{topic}=user_orders:upsert,{topic}=product_sales:add"),
        )
        .env("SLUICE_BATCH_MAX_MESSAGES", 50)
}

/// Each order's outcome, by order id, for the records of `topic`.
async fn outcomes(pool: &PgPool, topic: &str) -> HashMap<String, (String, Option<String>)> {
    sqlx::query_as::<_, (String, String, Option<String>)>(
        "SELECT event_id, outcome, error_kind FROM processed_messages WHERE topic = $1",
    )
    .bind(topic)
    .fetch_all(pool)
    .await
    .expect("reading outcomes")
    .into_iter()
    .map(|(id, outcome, kind)| (id, (outcome, kind)))
    .collect()
}

/// Per product: (orders, units, revenue) in `product_sales`.
async fn sales(pool: &PgPool) -> BTreeMap<String, (i64, i64, i64)> {
    sqlx::query_as::<_, (String, i64, i64, i64)>(
        "SELECT product_id, orders, units, revenue FROM product_sales",
    )
    .fetch_all(pool)
    .await
    .expect("reading product_sales")
    .into_iter()
    .map(|(p, o, u, r)| (p, (o, u, r)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_a_steady_feed_writes_each_applied_order_s_row_and_counters_once() {
    // Arrange: 10 products with about three quarters of the units the feed orders, so that
    // late orders are refused for stock (and write nothing).
    let kills = env_or("SLUICE_TABLES_KILLS", 12);
    let (broker, topic, db_url, pool) = Stack::start(8).await.into_parts();
    create(&pool, &read_side()).await;
    let initial = workload::add_products(&pool, 10, 1_500).await;
    let seed: u64 = rand::random();
    let orders = Arc::new(workload::orders(20_000, &initial, seed));
    let group = format!("group-{}", Uuid::new_v4().simple());
    let config = read_model_config(&db_url, &broker, &topic, &group);

    // Act
    let started = Instant::now();
    let killed = kills::under_steady_feed(
        &broker,
        &config,
        &pool,
        orders.clone(),
        (kills, seed),
        "tables-crash",
    )
    .await;
    let orders = &orders[..killed.produced];

    // Assert: every order decided once and stock exact (the example's stock adjustment)...
    let tally = workload::check_exactly_once(&pool, &group, &initial, orders).await;
    assert!(
        tally.applied > 0 && tally.rejected > 0,
        "both outcomes: {tally:?}"
    );
    let outcomes = outcomes(&pool, &topic).await;
    let applied: Vec<&workload::Order> = orders
        .iter()
        .filter(|o| outcomes[&o.id.to_string()].0 == "APPLIED")
        .collect();
    // ...every applied order has exactly its row, with its values; none other does...
    let rows: HashMap<String, (String, i64, i64, String)> =
        sqlx::query_as::<_, (String, String, i64, i64, String)>(
            "SELECT order_id, product_id, quantity, total_price, status FROM user_orders",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, p, q, t, s)| (id, (p, q, t, s)))
        .collect();
    assert_eq!(
        rows.len(),
        applied.len(),
        "a row per applied order, no other"
    );
    for order in &applied {
        assert_eq!(
            rows.get(&order.id.to_string()),
            Some(&(
                order.product.clone(),
                order.quantity,
                order.quantity * 100,
                "APPLIED".to_string()
            )),
            "the row of {}",
            order.id
        );
    }
    // ...and the counters are the sums over applied orders exactly (an add applied twice, or
    // for a refused order, would show).
    let mut expected: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for order in &applied {
        let entry = expected.entry(order.product.clone()).or_default();
        entry.0 += 1;
        entry.1 += order.quantity;
        entry.2 += order.quantity * 100;
    }
    assert_eq!(sales(&pool).await, expected, "product_sales");
    let mut process = killed.process;
    let status = process.terminate().await;
    assert!(
        status.success(),
        "clean exit: {status}\n{}",
        process.log_tail()
    );
    eprintln!(
        "tables crash: {} orders fed at ~500/s, {} kills while records were undecided \
         (decided/produced at each: {:?}); {} applied ({} rows, counters of {} products exact), \
         {} rejected and written nowhere; seed {seed}, {:.1} s",
        orders.len(),
        killed.at_kills.len(),
        killed.at_kills,
        tally.applied,
        rows.len(),
        expected.len(),
        tally.rejected,
        started.elapsed().as_secs_f64()
    );
}

/// An order event as the order service publishes it, for `user`.
fn order_json(id: &str, user: &str, product: &str, quantity: i64) -> Vec<u8> {
    json!({"orderId": id, "userId": user, "productId": product, "quantity": quantity,
           "unitPrice": 100, "totalPrice": quantity * 100, "createdAt": "2026-12-07T10:00:00.000Z"})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_team_s_constraints_refuse_is_a_dead_letter_alone() {
    // Arrange: 60 orders in one batch; two of a blocked user (a CHECK), two of a user the
    // team allows one order (a unique index: the first stands, the second is refused).
    let (broker, topic, db_url, pool) = Stack::start(4).await.into_parts();
    create(&pool, &read_side()).await;
    let initial = workload::add_products(&pool, 3, 1_000).await;
    let producer = broker.producer();
    let mut expected_sales: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    let mut refused = Vec::new();
    for i in 0..60 {
        let id = format!("order-{i:02}");
        let product = format!("LOAD-{:02}", i % 3);
        let user = match i {
            7 | 33 => "blocked",
            11 | 40 => "once",
            _ => "anyone",
        };
        produce(
            &producer,
            &topic,
            &product,
            &order_json(&id, user, &product, 2),
            Some(&id),
        )
        .await;
        if matches!(i, 7 | 33 | 40) {
            refused.push(id);
        } else {
            let entry = expected_sales.entry(product).or_default();
            *entry = (entry.0 + 1, entry.1 + 2, entry.2 + 200);
        }
    }
    let group = format!("group-{}", Uuid::new_v4().simple());
    let config =
        read_model_config(&db_url, &broker, &topic, &group).env("SLUICE_BATCH_MAX_MESSAGES", 500);

    // Act
    let mut process = Serve::spawn(&config, "tables-constraints");
    workload::wait_processed_on(&pool, &topic, 60, Duration::from_secs(60)).await;

    // Assert
    let outcomes = outcomes(&pool, &topic).await;
    for (id, (outcome, kind)) in &outcomes {
        if refused.contains(id) {
            assert_eq!(
                (outcome.as_str(), kind.as_deref()),
                ("DEAD_LETTER", Some("table-refused")),
                "{id}"
            );
        } else {
            assert_eq!(outcome, "APPLIED", "{id}");
        }
    }
    let reasons: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, error FROM dead_letters ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].1.contains("not_blocked"), "{reasons:?}");
    assert!(
        reasons[2].1.contains("one_order_per_once_user"),
        "{reasons:?}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM user_orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 57, "the rest of the batch committed");
    assert_eq!(
        sales(&pool).await,
        expected_sales,
        "no counter for a refused order"
    );
    for (product, stock) in &initial {
        let sold = expected_sales.get(product).map_or(0, |s| s.1);
        assert_eq!(
            common::stock_of(&pool, product).await,
            stock - sold,
            "{product}"
        );
    }
    let status = process.terminate().await;
    assert!(status.success(), "{status}\n{}", process.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_table_writes_are_dead_letters_and_touch_nothing() {
    // Arrange
    let (broker, topic, db_url, pool) = Stack::start(4).await.into_parts();
    create(
        &pool,
        "CREATE TABLE notes (id text PRIMARY KEY, body text);
         CREATE TABLE secrets (id text PRIMARY KEY);",
    )
    .await;
    let group = format!("group-{}", Uuid::new_v4().simple());
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, &group)
        .env("SLUICE_PLUGINS", fixture(HOSTILE).display())
        .env("SLUICE_ROUTES", format!("{topic}={HOSTILE}"))
        .env("SLUICE_TABLES", format!("{topic}=notes:upsert"))
        // Making 100,000 writes takes the plugin itself a while on a loaded debug build: the
        // limit, not the deadline, is what `many` is to meet.
        .env("SLUICE_PLUGIN_TIMEOUT_MS", 5_000);
    let stock_before: i64 = common::stock_of(&pool, "CATALOG-0001").await;
    let cases: [(&str, &str); 10] = [
        ("many", "100000 mutations"),
        ("huge", "per write"),
        ("quote-table", "may not write"),
        ("quote-column", "no column"),
        ("system", "may not write"),
        ("sluice", "may not write"),
        ("undeclared", "may not write"),
        ("delete-only", "may only upsert"),
        ("no-key", "without key column id"),
        ("wrong-type", "cannot take a boolean"),
    ];
    let producer = broker.producer();
    for (i, (command, _)) in cases.iter().enumerate() {
        produce(
            &producer,
            &topic,
            "k",
            b"ok:before",
            Some(&format!("before-{i}")),
        )
        .await;
        produce(&producer, &topic, "k", command.as_bytes(), Some(command)).await;
    }
    produce(&producer, &topic, "k", b"ok:after", Some("after")).await;

    // Act
    let mut process = Serve::spawn(&config, "tables-hostile");
    workload::wait_processed_on(&pool, &topic, 21, Duration::from_secs(60)).await;

    // Assert: each hostile write a dead letter with the reason; the good ones applied.
    let outcomes = outcomes(&pool, &topic).await;
    for (command, words) in cases {
        assert_eq!(
            outcomes[command],
            (
                "DEAD_LETTER".to_string(),
                Some("invalid-output".to_string())
            ),
            "{command}"
        );
        let reason: String =
            sqlx::query_scalar("SELECT error FROM dead_letters WHERE event_id = $1")
                .bind(command)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(reason.contains(words), "{command}: {reason}");
    }
    assert_eq!(outcomes["after"].0, "APPLIED");
    let notes: Vec<String> = sqlx::query_scalar("SELECT id FROM notes ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(notes, ["after", "before"], "only the good writes");
    let secrets: i64 = sqlx::query_scalar("SELECT count(*) FROM secrets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(secrets, 0);
    assert_eq!(common::stock_of(&pool, "CATALOG-0001").await, stock_before);
    let evil: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_authid WHERE rolname = 'evil'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(evil, 0);
    let status = process.terminate().await;
    assert!(status.success(), "{status}\n{}", process.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_sluice_cannot_write_refuses_the_start_saying_why() {
    let (broker, topic, db_url, pool) = Stack::start(1).await.into_parts();
    create(
        &pool,
        "CREATE TABLE keyless (id text, body text);
         CREATE TABLE odd (id text PRIMARY KEY, at point NOT NULL);",
    )
    .await;
    for (tables, words) in [
        (format!("{topic}=keyless"), "keyless has no primary key"),
        (format!("{topic}=missing"), "missing does not exist"),
        (format!("{topic}=odd"), "no row could be inserted"),
        (format!("{topic}=catalog"), "one of Sluice's own tables"),
        (
            format!("{topic}=processed_records"),
            "one of Sluice's own tables",
        ),
        (format!("{topic}=pg_catalog.pg_authid"), "PostgreSQL's own"),
        (
            format!("{topic}=notes:upsert+drop"),
            "unknown table write `drop`",
        ),
        ("elsewhere=keyless".to_string(), "`elsewhere` has no route"),
    ] {
        let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, "g")
            .env("SLUICE_TABLES", &tables);
        let mut process = Serve::spawn(&config, "tables-refused");
        let status = process
            .wait_exit(Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("{tables}: serve kept running"));
        assert!(!status.success(), "{tables}");
        let log = std::fs::read_to_string(&process.log).unwrap();
        assert!(log.contains(words), "{tables}: {}", process.log_tail());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zero_code_sink_writes_a_topic_of_json_orders_into_a_table_exactly_once() {
    // Arrange: a table for the order service's events, the bundled sink routed to write it.
    let kills = env_or("SLUICE_TABLES_KILLS", 10);
    let (broker, topic, db_url, pool) = Stack::start(8).await.into_parts();
    create(
        &pool,
        "CREATE TABLE orders_sink (
             order_id uuid PRIMARY KEY,
             user_id text NOT NULL,
             product_id text NOT NULL,
             quantity integer NOT NULL,
             unit_price numeric NOT NULL,
             total_price numeric NOT NULL,
             created_at timestamptz NOT NULL,
             written_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await;
    let products = workload::add_products(&pool, 10, 0).await;
    let seed: u64 = rand::random();
    let orders = Arc::new(workload::orders(10_000, &products, seed));
    let group = format!("group-{}", Uuid::new_v4().simple());
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, &group)
        .env("SLUICE_ROUTES", format!("{topic}=sink"))
        .env("SLUICE_TABLES", format!("{topic}=orders_sink:upsert"))
        .env("SLUICE_PLUGIN_CONFIG", "sink:table=orders_sink")
        .env("SLUICE_BATCH_MAX_MESSAGES", 50);

    // Act
    let started = Instant::now();
    let killed = kills::under_steady_feed(
        &broker,
        &config,
        &pool,
        orders.clone(),
        (kills, seed),
        "sink",
    )
    .await;
    let orders = &orders[..killed.produced];

    // Assert: each record decided once, applied; each order's row, with its values.
    let decided: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT event_id, outcome, count(*) OVER (PARTITION BY event_id)
         FROM processed_messages WHERE topic = $1",
    )
    .bind(&topic)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(decided.len(), orders.len(), "each record decided once");
    assert!(
        decided
            .iter()
            .all(|(_, outcome, n)| outcome == "APPLIED" && *n == 1),
        "all applied, once each"
    );
    let rows: HashMap<Uuid, (String, i32, String)> =
        sqlx::query_as::<_, (Uuid, String, i32, String)>(
            "SELECT order_id, product_id, quantity, total_price::text FROM orders_sink",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, p, q, t)| (id, (p, q, t)))
        .collect();
    assert_eq!(rows.len(), orders.len(), "a row per order");
    for order in orders {
        assert_eq!(
            rows.get(&order.id),
            Some(&(
                order.product.clone(),
                order.quantity as i32,
                (order.quantity * 100).to_string()
            )),
            "{}",
            order.id
        );
    }
    assert_eq!(processed_on(&pool, &topic).await, orders.len() as i64);
    let mut process = killed.process;
    let status = process.terminate().await;
    assert!(status.success(), "{status}\n{}", process.log_tail());
    eprintln!(
        "sink crash: {} JSON orders, {} kills while records were undecided; a row each; {:.1} s",
        orders.len(),
        killed.at_kills.len(),
        started.elapsed().as_secs_f64()
    );
}
