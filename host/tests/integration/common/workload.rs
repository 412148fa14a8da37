//! Order workloads and the invariants every failure test checks afterwards.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// One order event the test produced.
#[derive(Debug, Clone)]
pub struct Order {
    pub id: Uuid,
    pub product: String,
    pub quantity: i64,
}

impl Order {
    pub fn payload(&self) -> Vec<u8> {
        json!({"orderId": self.id, "userId": "load", "productId": self.product,
               "quantity": self.quantity, "unitPrice": 100, "totalPrice": self.quantity * 100,
               "createdAt": "2026-11-25T08:00:00.000Z"})
        .to_string()
        .into_bytes()
    }
}

/// Products `LOAD-00..LOAD-{n}` with `stock` each, added to a migrated database.
pub async fn add_products(pool: &PgPool, n: usize, stock: i64) -> HashMap<String, i64> {
    let ids: Vec<String> = (0..n).map(|i| format!("LOAD-{i:02}")).collect();
    sqlx::query(
        "INSERT INTO catalog (product_id, product_name, stock, unit_price)
         SELECT id, id, $2, 100 FROM UNNEST($1::text[]) AS id",
    )
    .bind(&ids)
    .bind(stock)
    .execute(pool)
    .await
    .expect("adding products");
    ids.into_iter().map(|id| (id, stock)).collect()
}

/// `n` orders over `products`, quantities 1..=10, reproducible from `seed`.
pub fn orders(n: usize, products: &HashMap<String, i64>, seed: u64) -> Vec<Order> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut names: Vec<&String> = products.keys().collect();
    names.sort();
    (0..n)
        .map(|_| Order {
            id: Uuid::new_v4(),
            product: names[rng.random_range(0..names.len())].clone(),
            quantity: rng.random_range(1..=10),
        })
        .collect()
}

/// Produce orders as the order service would: key = product, header `event-id` = order id.
pub async fn produce(producer: &FutureProducer, topic: &str, orders: &[Order]) {
    for chunk in orders.chunks(2000) {
        let payloads: Vec<(String, Vec<u8>, String)> = chunk
            .iter()
            .map(|o| (o.product.clone(), o.payload(), o.id.to_string()))
            .collect();
        let sends = payloads.iter().map(|(key, payload, id)| {
            let record = FutureRecord::to(topic).key(key).payload(payload).headers(
                OwnedHeaders::new().insert(Header {
                    key: sluice::domain::EVENT_ID_HEADER,
                    value: Some(id.as_bytes()),
                }),
            );
            producer.send(record, Duration::from_secs(30))
        });
        for result in join_all(sends).await {
            result.map_err(|(e, _)| e).expect("producing an order");
        }
    }
}

/// Wait until `n` records of `group` are decided (any outcome), or fail.
pub async fn wait_processed(pool: &PgPool, group: &str, n: i64, timeout: Duration) {
    let started = Instant::now();
    loop {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM processed_messages WHERE group_id = $1")
                .bind(group)
                .fetch_one(pool)
                .await
                .expect("counting the group's decided records");
        if count >= n {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "only {count} of {n} records processed after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until `n` records of `topic` are decided (any outcome, by any group), or fail.
pub async fn wait_processed_on(pool: &PgPool, topic: &str, n: i64, timeout: Duration) {
    let started = Instant::now();
    loop {
        let count = super::processed_on(pool, topic).await;
        if count >= n {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "only {count} of {n} records of {topic} processed after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a run ended with.
#[derive(Debug, Default)]
pub struct Tally {
    pub applied: usize,
    pub rejected: usize,
    pub applied_units: i64,
}

/// Every order decided exactly once (`APPLIED` or `REJECTED`, never dead-lettered), and for
/// every product: final stock = initial − Σ quantities of its applied orders, never < 0.
pub async fn check_exactly_once(
    pool: &PgPool,
    group: &str,
    initial: &HashMap<String, i64>,
    orders: &[Order],
) -> Tally {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT event_id, outcome, count(*) OVER (PARTITION BY event_id)
         FROM processed_messages WHERE group_id = $1 AND event_id IS NOT NULL",
    )
    .bind(group)
    .fetch_all(pool)
    .await
    .expect("reading outcomes");
    let ids: std::collections::HashSet<String> = orders.iter().map(|o| o.id.to_string()).collect();
    let mut outcome: HashMap<String, String> = HashMap::new();
    // The orders' events (a route downstream may decide other events of the group).
    for (event_id, decided, copies) in rows.into_iter().filter(|(id, _, _)| ids.contains(id)) {
        assert_eq!(copies, 1, "event {event_id} was decided {copies} times");
        outcome.insert(event_id, decided);
    }

    let mut tally = Tally::default();
    let mut expected = initial.clone();
    for order in orders {
        match outcome.get(&order.id.to_string()).map(String::as_str) {
            Some("APPLIED") => {
                tally.applied += 1;
                tally.applied_units += order.quantity;
                *expected.get_mut(&order.product).expect("known product") -= order.quantity;
            }
            Some("REJECTED") => tally.rejected += 1,
            other => panic!("order {} ended as {other:?}", order.id),
        }
    }
    let actual: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT product_id, stock FROM catalog")
            .fetch_all(pool)
            .await
            .expect("reading stock")
            .into_iter()
            .collect();
    for (product, stock) in &expected {
        assert!(*stock >= 0, "{product} would be negative: {stock}");
        assert_eq!(actual.get(product), Some(stock), "stock of {product}");
    }
    tally
}
