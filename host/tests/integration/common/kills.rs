//! kill -9 under a steady feed: the orders go to a topic at a steady rate while a `sluice
//! serve` member is killed and restarted, then every record produced is waited for. What the
//! run must have left (stock, state, tables, published records) is each test's to check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use sqlx::PgPool;

use super::process::{Serve, ServeConfig};
use super::{Broker, processed_on, workload};

/// What a run did.
pub struct Killed {
    /// How many of the orders were produced (a prefix of them).
    pub produced: usize,
    /// (records of the topic decided, produced) when each counted kill landed.
    pub at_kills: Vec<(i64, i64)>,
    /// The member as it runs after the last restart (its relay may still be publishing).
    pub process: Serve,
}

/// Produce `orders` to `config.topic` (10 every 20 ms) while `sluice serve` with `config` is
/// killed (-9) at a random moment and restarted, until `kills` kills landed while records were
/// still undecided; then stop the feed and wait until every record produced is decided. The
/// member is left running.
pub async fn under_steady_feed(
    broker: &Broker,
    config: &ServeConfig,
    pool: &PgPool,
    orders: Arc<Vec<workload::Order>>,
    (kills, seed): (usize, u64),
    name: &str,
) -> Killed {
    let topic = config.topic.clone();
    let produced = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let feed = {
        let (producer, topic) = (broker.producer(), topic.clone());
        let (orders, produced, stop) = (orders.clone(), produced.clone(), stop.clone());
        tokio::spawn(async move {
            for chunk in orders.chunks(10) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                workload::produce(&producer, &topic, chunk).await;
                produced.fetch_add(chunk.len(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut process = Serve::spawn(config, name);
    let mut at_kills = Vec::new();
    while at_kills.len() < kills {
        process.wait_healthy().await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        process.kill9();
        let (decided, sent) = (
            processed_on(pool, &topic).await,
            produced.load(Ordering::Relaxed) as i64,
        );
        // A kill counts when records were still undecided as it landed.
        if decided < sent {
            at_kills.push((decided, sent));
        }
        process = Serve::spawn(config, name);
    }
    stop.store(true, Ordering::Relaxed);
    feed.await.expect("the feed");
    let produced = produced.load(Ordering::Relaxed);
    workload::wait_processed_on(pool, &topic, produced as i64, Duration::from_secs(180)).await;
    Killed {
        produced,
        at_kills,
        process,
    }
}
