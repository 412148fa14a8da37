//! Contract 0.2: records a plugin emits and the state it keeps per key are committed with the
//! consumer position — proven under SIGKILL with a steady feed; a route's allowances and the
//! output limits; state through the admin API and across version swaps; the guard rolling a
//! broken version back on its own; contract 0.1 and 0.2 plugins side by side.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::ServeConfig;
use common::{Broker, Stack, TestApp, eventually, fixture, kills, workload};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// The fixture plugin: a tally per key in state, a record emitted per applied order.
const TALLY: &str = "sluice_fixture_tally";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `sluice serve` with the tally plugin on `topic` (keeping state, emitting to
/// `<topic>.tally`) and on `<topic>.tally` itself: the downstream route that dedupes what the
/// first one emits.
fn tally_config(db_url: &str, broker: &Broker, topic: &str, group: &str) -> ServeConfig {
    let emitted = format!("{topic}.tally");
    ServeConfig::new(db_url, broker.bootstrap(), topic, group)
        .env("SLUICE_PLUGINS", fixture(TALLY).display())
        .env(
            "SLUICE_ROUTES",
            format!("{topic}={TALLY},{emitted}={TALLY}"),
        )
        .env("SLUICE_STATE", topic)
        .env("SLUICE_EMIT", format!("{topic}={emitted}"))
        .env(
            "SLUICE_PLUGIN_CONFIG",
            format!("{TALLY}:emit-topic={emitted}"),
        )
        // Small batches: many commits for the kills to land between, before and during.
        .env("SLUICE_BATCH_MAX_MESSAGES", 50)
}

/// Every record of `topic`, from the beginning to each partition's end now.
async fn read_all(bootstrap: &str, topic: &str) -> Vec<sluice::domain::Consumed> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a test consumer");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("the topic's metadata");
        let partitions: Vec<i32> = metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let mut ends = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for &p in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .expect("watermarks");
            assert_eq!(low, 0, "the broker dropped records of {topic}[{p}]");
            if high > 0 {
                ends.insert(p, high);
                assignment
                    .add_partition_offset(&topic, p, Offset::Beginning)
                    .expect("assigning");
            }
        }
        consumer.assign(&assignment).expect("assigning");
        let mut records = Vec::new();
        let mut done: HashSet<i32> = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.len() < ends.len() {
            assert!(Instant::now() < deadline, "reading {topic} took over 60 s");
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                let record = sluice::kafka::consumed(&message);
                if record.offset + 1 >= ends[&record.partition] {
                    done.insert(record.partition);
                }
                records.push(record);
            }
        }
        records
    })
    .await
    .expect("reading the topic")
}

/// The tally plugin's state of every key.
async fn tallies(pool: &PgPool) -> HashMap<String, Value> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT key, value FROM plugin_state WHERE plugin = $1 AND value IS NOT NULL",
    )
    .bind(TALLY)
    .fetch_all(pool)
    .await
    .expect("reading state");
    rows.into_iter()
        .map(|(key, value)| {
            (
                String::from_utf8(key).expect("text keys"),
                serde_json::from_slice(&value).expect("JSON state"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_a_steady_feed_publishes_each_emitted_record_and_folds_each_key_once() {
    // Arrange: 10 products with about three quarters of the units the feed will order, so
    // that late orders are refused for stock (and their keys' later records are called again).
    let kills = env_or("SLUICE_CONTRACT_KILLS", 12);
    let (broker, topic, db_url, pool) = Stack::start(8).await.into_parts();
    let emitted = format!("{topic}.tally");
    common::create_topics_with(&broker, &emitted, 8).await;
    let per_product = 1_500;
    let initial = workload::add_products(&pool, 10, per_product).await;
    let seed: u64 = rand::random();
    let orders = Arc::new(workload::orders(20_000, &initial, seed));
    let group = format!("group-{}", Uuid::new_v4().simple());
    let config = tally_config(&db_url, &broker, &topic, &group);

    // Act: a steady feed (10 orders every 20 ms) while the member is killed and restarted.
    let started = Instant::now();
    let killed = kills::under_steady_feed(
        &broker,
        &config,
        &pool,
        orders.clone(),
        (kills, seed),
        "contract-crash",
    )
    .await;
    let (n, at_kills, mut process) = (killed.produced, killed.at_kills, killed.process);
    let orders = &orders[..n];

    // Assert: every order decided once, stock exact.
    let tally = workload::check_exactly_once(&pool, &group, &initial, orders).await;
    assert!(
        tally.applied > 0 && tally.rejected > 0,
        "both outcomes: {tally:?}"
    );

    // The state of every key is the fold of its applied orders, nothing more.
    let outcomes: HashMap<String, (String, i32, i64)> =
        sqlx::query_as::<_, (String, String, i32, i64)>(
            "SELECT event_id, outcome, partition, \"offset\" FROM processed_messages
         WHERE topic = $1",
        )
        .bind(&topic)
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, outcome, p, o)| (id, (outcome, p, o)))
        .collect();
    let mut folded: BTreeMap<&str, (u64, i64, String)> = BTreeMap::new();
    for order in orders {
        if outcomes[&order.id.to_string()].0 == "APPLIED" {
            let entry = folded.entry(&order.product).or_default();
            entry.0 += 1;
            entry.1 += order.quantity;
            entry.2 = order.id.to_string();
        }
    }
    let state = tallies(&pool).await;
    for (product, (count, units, last)) in &folded {
        let kept = &state[*product];
        assert_eq!(
            (
                kept["orders"].as_u64(),
                kept["units"].as_i64(),
                kept["last"].as_str()
            ),
            (Some(*count), Some(*units), Some(last.as_str())),
            "the state of {product}"
        );
    }
    assert_eq!(
        state.len(),
        folded.len(),
        "no state for a key without applied orders"
    );

    // Every applied order's record is on the topic (at least once), with the event id derived
    // from its source; none for an order that was not applied.
    let expected: HashMap<String, String> = outcomes
        .iter()
        .filter(|(_, (outcome, _, _))| outcome == "APPLIED")
        .map(|(order, (_, p, o))| {
            let id = sluice::domain::emitted_event_id(&group, &topic, *p, *o, 0);
            (id, order.clone())
        })
        .collect();
    workload::wait_processed_on(
        &pool,
        &emitted,
        expected.len() as i64,
        Duration::from_secs(120),
    )
    .await;
    let on_topic = read_all(broker.bootstrap(), &emitted).await;
    let mut published: HashMap<String, usize> = HashMap::new();
    for record in &on_topic {
        let id = record
            .event_id()
            .expect("an emitted record has an event id");
        let order = expected
            .get(&id)
            .unwrap_or_else(|| panic!("{id} was published but its order was not applied"));
        let value: Value = serde_json::from_slice(record.payload.as_deref().unwrap()).unwrap();
        assert_eq!(value["orderId"].as_str(), Some(order.as_str()), "{id}");
        *published.entry(id).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .keys()
        .filter(|id| !published.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} emitted records never published: {missing:?}",
        missing.len()
    );

    // A relay killed between the broker's ack and its outbox delete publishes a record again:
    // republish a hundred of them as it would (same key, value, headers), then the downstream
    // route must have decided each emitted record exactly once.
    let producer = broker.producer();
    let again: Vec<&sluice::domain::Consumed> =
        on_topic.iter().step_by(on_topic.len() / 100 + 1).collect();
    for record in &again {
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for h in &record.headers {
            headers = headers.insert(rdkafka::message::Header {
                key: &h.key,
                value: h.value.as_deref(),
            });
        }
        let copy = rdkafka::producer::FutureRecord::to(&emitted)
            .key(record.key.as_deref().unwrap_or_default())
            .payload(record.payload.as_deref().unwrap_or_default())
            .headers(headers);
        producer
            .send(copy, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let decided_downstream = expected.len() + (on_topic.len() - published.len()) + again.len();
    workload::wait_processed_on(
        &pool,
        &emitted,
        decided_downstream as i64,
        Duration::from_secs(60),
    )
    .await;
    let downstream: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_id, count(*) FILTER (WHERE outcome <> 'DUPLICATE')
         FROM processed_messages WHERE topic = $1 GROUP BY event_id",
    )
    .bind(&emitted)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        downstream.len(),
        expected.len(),
        "every emitted record reached downstream"
    );
    for (id, decisions) in &downstream {
        assert!(
            expected.contains_key(id),
            "{id} decided downstream but never emitted"
        );
        assert_eq!(*decisions, 1, "{id} decided {decisions} times downstream");
    }
    let republished = on_topic.len() - published.len();
    let (duplicates,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM processed_messages WHERE topic = $1 AND outcome = 'DUPLICATE'",
    )
    .bind(&emitted)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        duplicates as usize,
        republished + again.len(),
        "each copy a duplicate"
    );
    let status = process.terminate().await;
    assert!(
        status.success(),
        "clean exit: {status}\n{}",
        process.log_tail()
    );
    eprintln!(
        "contract crash: {n} orders fed at ~500/s, {} kills while records were undecided \
         (decided/produced at each: {at_kills:?}); {} applied, {} rejected; {} records emitted, \
         {republished} published twice by the relay and {} republished by the test, all deduped \
         downstream; {} keys' state = fold; seed {seed}, {:.1} s",
        at_kills.len(),
        tally.applied,
        tally.rejected,
        expected.len(),
        again.len(),
        folded.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Produce `payload` keyed `key` and wait for its outcome: (outcome, error kind, reason).
async fn outcome_of(
    app: &TestApp,
    key: &str,
    payload: &[u8],
) -> (String, Option<String>, Option<String>) {
    let id = Uuid::new_v4().to_string();
    common::produce(&app.broker.producer(), &app.topic, key, payload, Some(&id)).await;
    eventually(Duration::from_secs(30), "the record's outcome", || {
        let (pool, id) = (app.pool.clone(), id.clone());
        async move {
            sqlx::query_as(
                "SELECT outcome, error_kind, reason FROM processed_messages WHERE event_id = $1",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
        }
    })
    .await
}

fn order(product: &str, quantity: i64) -> Vec<u8> {
    json!({"orderId": Uuid::new_v4(), "userId": "u", "productId": product, "quantity": quantity,
           "unitPrice": 1, "totalPrice": quantity, "createdAt": "2026-12-01T00:00:00Z"})
    .to_string()
    .into_bytes()
}

/// An app with the tally plugin on its topic: state kept, emitting to `<topic>.tally` only.
async fn tally_app() -> TestApp {
    TestApp::spawn_with(|settings| {
        let topic = settings.kafka.topic.clone();
        let emitted = format!("{topic}.tally");
        settings.plugins.paths = vec![fixture(TALLY)];
        settings.kafka.routes = sluice::domain::Routes::single(&topic, TALLY)
            .allow(
                std::slice::from_ref(&topic),
                &[(topic.clone(), emitted.clone())],
            )
            .expect("routes");
        settings.sandbox.plugin_config =
            sluice::runtime::PluginConfig::from_pairs([(format!("{TALLY}:emit-topic"), emitted)]);
        settings.sandbox.output.emit_records = 16;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_allows_only_what_it_names_and_the_limits_hold() {
    let app = tally_app().await;
    let product = "CATALOG-0001";
    let before = common::stock_of(&app.pool, product).await;

    // Each misbehaving output costs only its record, with the reason; the key's state and the
    // stock stay as the applied records left them.
    let (outcome, _, _) = outcome_of(&app, product, &order(product, 2)).await;
    assert_eq!(outcome, "APPLIED");
    for (payload, reason) in [
        (
            &b"emit-forbidden"[..],
            "`not-allowed`, which this route may not emit to",
        ),
        (
            b"emit-many",
            "1000 records emitted for one message, at most 16",
        ),
        (b"emit-huge", "a record of 4194305 bytes"),
        (b"state-huge", "a state of 4194304 bytes"),
        (b"state-twice", "at most one allowed"),
    ] {
        let (outcome, kind, why) = outcome_of(&app, product, payload).await;
        assert_eq!(
            (outcome.as_str(), kind.as_deref()),
            ("DEAD_LETTER", Some("invalid-output")),
            "{payload:?}: {why:?}"
        );
        assert!(
            why.as_deref().unwrap_or_default().contains(reason),
            "{why:?}"
        );
    }
    let keyless = Uuid::new_v4().to_string();
    let producer = app.broker.producer();
    let record = rdkafka::producer::FutureRecord::<(), [u8]>::to(&app.topic)
        .payload(&b"state-keyless"[..])
        .headers(
            rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: "event-id",
                value: Some(keyless.as_bytes()),
            }),
        );
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let (outcome, _, _) = outcome_of(&app, product, &order(product, 3)).await;
    assert_eq!(outcome, "APPLIED");
    let (keyless_reason,): (Option<String>,) =
        sqlx::query_as("SELECT reason FROM processed_messages WHERE event_id = $1")
            .bind(&keyless)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(keyless_reason.unwrap_or_default().contains("no key"));
    assert_eq!(common::stock_of(&app.pool, product).await, before - 5);
    let state = tallies(&app.pool).await;
    assert_eq!(
        state[product]["orders"], 2,
        "only the applied orders count: {state:?}"
    );

    // The state is readable through the admin API.
    let (status, view) = app
        .get_json(&format!("/plugins/{TALLY}/state/{product}"))
        .await;
    assert_eq!(status, 200, "{view}");
    let value: Value = serde_json::from_str(view["value"].as_str().unwrap()).unwrap();
    assert_eq!(value["units"], 5, "{view}");
    assert_eq!(
        app.get_json(&format!("/plugins/{TALLY}/state/nobody"))
            .await
            .0,
        404
    );
    let (_, listed) = app.get_json(&format!("/plugins/{TALLY}")).await;
    assert_eq!(listed["contract"], "sluice:handler@0.2.0", "{listed}");
    let (_, stock) = app.get_json("/plugins/stock").await;
    assert_eq!(stock["contract"], "sluice:handler@0.1.0", "{stock}");

    // Two records emitted, one per applied order, counted by topic.
    let emitted =
        common::read_topic(app.broker.bootstrap(), &format!("{}.tally", app.topic), 2).await;
    assert_eq!(emitted.len(), 2);
    let metrics = app.metrics().await;
    let counted = common::metric(
        &metrics,
        "sluice_emitted_records_total",
        &[("topic", &format!("{}.tally", app.topic))],
    );
    assert_eq!(counted, Some(2.0), "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_belongs_to_the_plugin_name_across_versions_of_either_contract() {
    // Arrange: the tally plugin keeps a key's state.
    let app = tally_app().await;
    let product = "CATALOG-0001";
    for _ in 0..2 {
        outcome_of(&app, product, &order(product, 1)).await;
    }
    let kept = tallies(&app.pool).await[product].clone();
    assert_eq!(kept["orders"], 2);

    // Act: a contract 0.1 version (the stock logic) under the same name, then back.
    let stock = std::fs::read(fixture("sluice_plugin_stock")).unwrap();
    let (status, body) = app.put(&format!("/plugins/{TALLY}"), stock).await;
    assert_eq!(status, 200, "{body}");
    let (outcome, _, _) = outcome_of(&app, product, &order(product, 1)).await;
    assert_eq!(
        outcome, "APPLIED",
        "a 0.1 plugin on a route that keeps state"
    );
    assert_eq!(
        tallies(&app.pool).await[product],
        kept,
        "a 0.1 plugin leaves state alone"
    );
    let (_, listed) = app.get_json(&format!("/plugins/{TALLY}")).await;
    assert_eq!(listed["contract"], "sluice:handler@0.1.0");
    let (status, body) = app.post(&format!("/plugins/{TALLY}/rollback")).await;
    assert_eq!(status, 200, "{body}");
    outcome_of(&app, product, &order(product, 1)).await;

    // Assert: the tally goes on from the state it had.
    assert_eq!(tallies(&app.pool).await[product]["orders"], 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_rolls_a_broken_version_back_on_its_own_and_its_dead_letters_redrive() {
    // Arrange: a steady stream of orders under the stock plugin; the guard judges a new
    // version after 40 records.
    let app = TestApp::spawn_with(|settings| {
        settings.plugins.policy.guard.window = 40;
        settings.plugins.policy.guard.every = Duration::from_millis(100);
        settings.ingest.batch_max_messages = 10;
    })
    .await;
    let good = app.get_json("/plugins/stock").await.1["version"].clone();
    workload::add_products(&app.pool, 1, 100_000).await;
    let product = "LOAD-00";
    let before = common::stock_of(&app.pool, product).await;
    let producer = app.broker.producer();
    let feed = |from: usize, n: usize| {
        let (producer, topic) = (producer.clone(), app.topic.clone());
        async move {
            for i in from..from + n {
                let id = Uuid::new_v4().to_string();
                common::produce(&producer, &topic, product, &order(product, 1), Some(&id)).await;
                if i % 10 == 9 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    };
    feed(0, 100).await;
    app.wait_processed(100, Duration::from_secs(30)).await;

    // Act: a version that traps on every order goes live, while orders keep coming.
    let broken = std::fs::read(fixture("sluice_fixture_stock_broken")).unwrap();
    let (status, body) = app.put("/plugins/stock", broken.clone()).await;
    assert_eq!(status, 200, "{body}");
    let broken_version = sluice::runtime::version_of(&broken);
    let started = Instant::now();
    let mut sent = 100;
    let plugin = loop {
        feed(sent, 20).await;
        sent += 20;
        let (_, plugin) = app.get_json("/plugins/stock").await;
        if plugin["guard"]["state"] == "rolled-back" {
            break plugin;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no rollback: {plugin}"
        );
    };
    feed(sent, 50).await;
    sent += 50;
    app.wait_processed(sent as i64, Duration::from_secs(60))
        .await;

    // Assert: rolled back fleet-wide within its window, saying why; the broken version's
    // records are dead letters, the rest applied.
    assert_eq!(plugin["version"], good, "{plugin}");
    assert_eq!(
        plugin["guard"]["version"],
        broken_version.as_str(),
        "{plugin}"
    );
    let reason = plugin["guard"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("dead letters") && reason.contains("0.0 %"),
        "{reason}"
    );
    let (by_broken,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM processed_messages WHERE plugin_version = $1")
            .bind(&broken_version)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    eprintln!("the broken version decided {by_broken} records before the guard rolled it back");
    assert!(
        (40..=100).contains(&by_broken),
        "the broken version decided {by_broken} records; the window is 40 (batches of 10)"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        common::metric(
            &metrics,
            "sluice_guard_rollbacks_total",
            &[("plugin", "stock")]
        ),
        Some(1.0)
    );
    let letters: Vec<(i64,)> =
        sqlx::query_as("SELECT id FROM dead_letters WHERE resolved_at IS NULL ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        letters.len() as i64,
        by_broken,
        "each of its records is a dead letter"
    );
    for (id,) in &letters {
        let (_, body) = app.post(&format!("/dead-letters/{id}/redrive")).await;
        assert_eq!(body["outcome"], "APPLIED", "{body}");
    }
    assert_eq!(
        common::stock_of(&app.pool, product).await,
        before - sent as i64,
        "after the redrive every order took its unit, once"
    );

    // Turned off, the guard lets a broken version stand.
    let response = app
        .http
        .put(app.url("/plugins/stock/guard"))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    app.put("/plugins/stock", broken).await;
    feed(sent, 80).await;
    app.wait_processed(sent as i64 + 80, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, plugin) = app.get_json("/plugins/stock").await;
    assert_eq!(plugin["version"], broken_version.as_str(), "{plugin}");
    assert_eq!(plugin["guard"]["enabled"], false, "{plugin}");
    app.stop().await;
}

/// `component` with a custom section appended: the same plugin as another version.
fn another_version(component: &[u8], tag: &str) -> Vec<u8> {
    let mut section = vec![tag.len() as u8];
    section.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.extend([0, section.len() as u8]);
    out.extend(section);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_runs_and_redrives_see_the_key_s_state() {
    let app = tally_app().await;
    let product = "CATALOG-0003";
    let tally = std::fs::read(fixture(TALLY)).unwrap();
    for _ in 0..2 {
        outcome_of(&app, product, &order(product, 1)).await;
    }

    // A shadow candidate (the same logic, another version) gets the same state as the active
    // version: its state changes agree with the active one's, and are not applied twice.
    let (status, body) = app
        .put(
            &format!("/plugins/{TALLY}?mode=shadow"),
            another_version(&tally, "shadow"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..3 {
        outcome_of(&app, product, &order(product, 1)).await;
    }
    let (_, report) = app.get_json(&format!("/plugins/{TALLY}/shadow")).await;
    assert_eq!(
        (report["compared"].as_i64(), report["agreements"].as_i64()),
        (Some(3), Some(3)),
        "{report}"
    );
    assert_eq!(tallies(&app.pool).await[product]["orders"], 5);
    app.http
        .delete(app.url(&format!("/plugins/{TALLY}/shadow")))
        .send()
        .await
        .unwrap();

    // A version that traps: its records are dead letters, the state stays.
    let broken = std::fs::read(fixture("sluice_fixture_stock_broken")).unwrap();
    let (status, body) = app.put(&format!("/plugins/{TALLY}"), broken).await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..2 {
        let (outcome, kind, _) = outcome_of(&app, product, &order(product, 1)).await;
        assert_eq!(
            (outcome.as_str(), kind.as_deref()),
            ("DEAD_LETTER", Some("trap"))
        );
    }
    assert_eq!(tallies(&app.pool).await[product]["orders"], 5);

    // Rolled back, the dead letters redrive with the key's state as it is now.
    let (status, body) = app.post(&format!("/plugins/{TALLY}/rollback")).await;
    assert_eq!(status, 200, "{body}");
    let letters: Vec<(i64,)> = sqlx::query_as("SELECT id FROM dead_letters ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(letters.len(), 2);
    for (id,) in letters {
        let (_, body) = app.post(&format!("/dead-letters/{id}/redrive")).await;
        assert_eq!(body["outcome"], "APPLIED", "{body}");
    }
    let state = tallies(&app.pool).await;
    assert_eq!(state[product]["orders"], 7, "{state:?}");
    assert_eq!(state[product]["units"], 7, "{state:?}");
    let emitted =
        common::read_topic(app.broker.bootstrap(), &format!("{}.tally", app.topic), 7).await;
    assert_eq!(
        emitted.len(),
        7,
        "a record per applied order, redriven ones included"
    );
    app.stop().await;
}
