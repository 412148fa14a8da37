//! Crashes lose nothing and apply nothing twice: `sluice serve` processes are killed with
//! SIGKILL at random points of their batches and restarted, alone and beside a second member
//! of the group, and afterwards every order is decided exactly once.
//!
//! Sizes: `SLUICE_CRASH_ORDERS` (default 10,000) and `SLUICE_CRASH_KILLS` (default 20).

mod common;

use std::time::{Duration, Instant};

use common::process::{Serve, ServeConfig};
use common::{Broker, Stack, workload};
use rand::{Rng, SeedableRng};
use uuid::Uuid;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    broker: Broker,
    config: ServeConfig,
    pool: sqlx::PgPool,
    initial: std::collections::HashMap<String, i64>,
    orders: Vec<workload::Order>,
    seed: u64,
}

/// A broker with an 8-partition topic, a migrated database with 10 products, and the orders
/// already on the topic (about a third more units than there is stock, so some are rejected).
async fn setup(orders: usize) -> Setup {
    let Stack {
        broker,
        topic,
        db_url,
        pool,
    } = Stack::start(8).await;
    let per_product = (orders as i64 * 55 / 10) * 3 / 4 / 10;
    let initial = workload::add_products(&pool, 10, per_product).await;
    let seed = rand::random();
    let orders = workload::orders(orders, &initial, seed);
    workload::produce(&broker.producer(), &topic, &orders).await;
    let config = ServeConfig::new(
        &db_url,
        broker.bootstrap(),
        &topic,
        &format!("group-{}", Uuid::new_v4().simple()),
    )
    // Small batches: many commits for the kills to land between, before and during.
    .env("SLUICE_BATCH_MAX_MESSAGES", 50);
    Setup {
        broker,
        config,
        pool,
        initial,
        orders,
        seed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_and_doubles_nothing() {
    let (n, kills) = (
        env_or("SLUICE_CRASH_ORDERS", 10_000),
        env_or("SLUICE_CRASH_KILLS", 20),
    );
    let s = setup(n).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    let started = Instant::now();

    // Act: run, kill -9 at a random moment, restart; `kills` times.
    let mut process = Serve::spawn(&s.config, "crash");
    let mut progress = Vec::new();
    for _ in 0..kills {
        kill_while_working(&mut process, &s.pool, &mut rng).await;
        progress.push(processed(&s.pool).await);
        process = Serve::spawn(&s.config, "crash");
    }
    workload::wait_processed(&s.pool, &s.config.group, n as i64, Duration::from_secs(180)).await;
    let status = process.terminate().await;

    // Assert
    assert!(
        status.success(),
        "clean exit after the last restart: {status}\n{}",
        process.log_tail()
    );
    let tally = workload::check_exactly_once(&s.pool, &s.config.group, &s.initial, &s.orders).await;
    eprintln!(
        "crash: {n} orders, {kills} kills (records decided at each kill: {progress:?}), \
         {} applied ({} units), {} rejected, stock equation holds for {} products; \
         seed {}, {:.1} s",
        tally.applied,
        tally.applied_units,
        tally.rejected,
        s.initial.len(),
        s.seed,
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.applied > 0 && tally.rejected > 0,
        "the run exercised both outcomes"
    );
    drop(s.broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_with_one_killed_repeatedly_lose_and_double_nothing() {
    let (n, kills) = (
        env_or("SLUICE_CRASH_ORDERS", 10_000),
        env_or("SLUICE_CRASH_KILLS", 20),
    );
    let s = setup(n).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    let started = Instant::now();

    // Act: a steady member and one that is killed and restarted; each kill and each restart
    // moves partitions between them.
    let mut steady = Serve::spawn(&s.config, "steady");
    let mut flaky = Serve::spawn(&s.config, "flaky");
    let mut progress = Vec::new();
    for _ in 0..kills {
        kill_while_working(&mut flaky, &s.pool, &mut rng).await;
        progress.push(processed(&s.pool).await);
        flaky = Serve::spawn(&s.config, "flaky");
    }
    workload::wait_processed(&s.pool, &s.config.group, n as i64, Duration::from_secs(180)).await;

    // Assert
    for process in [&mut steady, &mut flaky] {
        let status = process.terminate().await;
        assert!(
            status.success(),
            "clean exit: {status}\n{}",
            process.log_tail()
        );
    }
    let tally = workload::check_exactly_once(&s.pool, &s.config.group, &s.initial, &s.orders).await;
    eprintln!(
        "two members: {n} orders, {kills} kills of one member (decided at each kill: {progress:?}), \
         {} applied, {} rejected; seed {}, {:.1} s",
        tally.applied,
        tally.rejected,
        s.seed,
        started.elapsed().as_secs_f64()
    );
    drop(s.broker);
}

/// Wait until the group decides more records (the process is up and the group is consuming),
/// then SIGKILL the process at a random moment of its batch stream: before, during or after
/// a database commit, before or after the Kafka commit.
async fn kill_while_working(process: &mut Serve, pool: &sqlx::PgPool, rng: &mut impl Rng) {
    process.wait_healthy().await;
    let before = processed(pool).await;
    let started = Instant::now();
    while processed(pool).await == before && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
    process.kill9();
}

async fn processed(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM processed_messages")
        .fetch_one(pool)
        .await
        .expect("counting")
}
