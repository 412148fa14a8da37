//! Crashes lose nothing and apply nothing twice: `sluice serve` processes are killed with
//! SIGKILL at random points of their batches and restarted, alone and beside a second member
//! of the group, and afterwards every order is decided exactly once.
//!
//! Sizes: `SLUICE_CRASH_ORDERS` (default 10,000) and `SLUICE_CRASH_KILLS` (default 20).

use crate::common;

use std::time::{Duration, Instant};

use common::process::{Serve, ServeConfig};
use common::{Broker, Stack, processed, workload};
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
    topic: String,
    config: ServeConfig,
    pool: sqlx::PgPool,
    initial: std::collections::HashMap<String, i64>,
    orders: Vec<workload::Order>,
    seed: u64,
}

/// A broker with an 8-partition topic, a migrated database with 10 products, and the orders
/// to produce (about a third more units than there is stock, so some are rejected). The
/// orders are produced chunk by chunk during the run, so that every kill finds work.
async fn setup(orders: usize) -> Setup {
    let (broker, topic, db_url, pool) = Stack::start(8).await.into_parts();
    let per_product = (orders as i64 * 55 / 10) * 3 / 4 / 10;
    let initial = workload::add_products(&pool, 10, per_product).await;
    let seed = rand::random();
    let orders = workload::orders(orders, &initial, seed);
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
        topic,
        config,
        pool,
        initial,
        orders,
        seed,
    }
}

/// Orders go out in chunks, one per kill attempt (room for as many attempts again as kills),
/// and the rest after the last restart.
struct Chunks<'a> {
    orders: &'a [workload::Order],
    size: usize,
    produced: usize,
}

impl Chunks<'_> {
    /// Produce the next chunk; returns (records produced so far, size of this chunk).
    async fn produce_next(&mut self, s: &Setup) -> (i64, i64) {
        let end = (self.produced + self.size).min(self.orders.len());
        let chunk = &self.orders[self.produced..end];
        workload::produce(&s.broker.producer(), &s.topic, chunk).await;
        self.produced = end;
        (end as i64, chunk.len() as i64)
    }
}

/// Kill `process` (named `name`) mid-work and restart it `kills` times, then produce the rest
/// and wait for every order to be decided. Returns (decided, produced) at each kill.
async fn kill_and_restart(
    s: &Setup,
    process: &mut Serve,
    name: &str,
    kills: usize,
) -> Vec<(i64, i64)> {
    let n = s.orders.len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    let mut chunks = Chunks {
        orders: &s.orders,
        size: (n / (2 * kills + 1)).max(2),
        produced: 0,
    };
    let mut at_kills = Vec::new();
    while at_kills.len() < kills {
        if let Some(at_kill) = kill_mid_work(process, s, &mut chunks, &mut rng).await {
            at_kills.push(at_kill);
        }
        *process = Serve::spawn(&s.config, name);
    }
    chunks.size = n;
    chunks.produce_next(s).await;
    workload::wait_processed(&s.pool, &s.config.group, n as i64, Duration::from_secs(180)).await;
    at_kills
}

fn sizes() -> (usize, usize) {
    (
        env_or("SLUICE_CRASH_ORDERS", 10_000),
        env_or("SLUICE_CRASH_KILLS", 20),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_and_doubles_nothing() {
    let (n, kills) = sizes();
    let s = setup(n).await;
    let started = Instant::now();

    // Act: produce a chunk, kill -9 the process while it works through it, restart.
    let mut process = Serve::spawn(&s.config, "crash");
    let at_kills = kill_and_restart(&s, &mut process, "crash", kills).await;
    let status = process.terminate().await;

    // Assert
    assert!(
        status.success(),
        "clean exit after the last restart: {status}\n{}",
        process.log_tail()
    );
    let tally = workload::check_exactly_once(&s.pool, &s.config.group, &s.initial, &s.orders).await;
    eprintln!(
        "crash: {n} orders, {kills} kills, each while records were being worked on \
         (decided/produced at each kill: {at_kills:?}), {} applied ({} units), {} rejected, \
         stock equation holds for {} products; seed {}, {:.1} s",
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_with_one_killed_repeatedly_lose_and_double_nothing() {
    let (n, kills) = sizes();
    let s = setup(n).await;
    let started = Instant::now();

    // Act: a steady member and one that is killed and restarted; each kill and each restart
    // moves partitions between them.
    let mut steady = Serve::spawn(&s.config, "steady");
    let mut flaky = Serve::spawn(&s.config, "flaky");
    steady.wait_healthy().await;
    let at_kills = kill_and_restart(&s, &mut flaky, "flaky", kills).await;

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
        "two members: {n} orders, {kills} kills of one member while records were being worked \
         on (decided/produced at each kill: {at_kills:?}), {} applied, {} rejected; seed {}, {:.1} s",
        tally.applied,
        tally.rejected,
        s.seed,
        started.elapsed().as_secs_f64()
    );
}

/// Produce the next chunk, wait until the group has decided a random part of it, then
/// SIGKILL the process: before, during or after a database commit, before or after the Kafka
/// commit. Returns (decided, produced) at the kill if the kill landed while records were still
/// undecided, `None` if the group finished the chunk first (the caller tries again). Fails if
/// the group makes no progress.
async fn kill_mid_work(
    process: &mut Serve,
    s: &Setup,
    chunks: &mut Chunks<'_>,
    rng: &mut impl Rng,
) -> Option<(i64, i64)> {
    process.wait_healthy().await;
    let (produced, chunk) = chunks.produce_next(s).await;
    assert!(
        chunk > 0,
        "every order is produced, yet the kills did not land while records were undecided \
         (the group finished each chunk before its kill)"
    );
    let target = produced - chunk + rng.random_range(0..chunk / 2 + 1);
    let started = Instant::now();
    while processed(&s.pool).await < target {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress: {} of {target} records decided after 60 s\n{}",
            processed(&s.pool).await,
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    process.kill9();
    let at_kill = processed(&s.pool).await;
    (at_kill < produced).then_some((at_kill, produced))
}
