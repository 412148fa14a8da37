//! Hot swap: validated installs, rollback, admin auth, fleet-wide convergence, and swapping
//! v1 <-> v2 twenty times under load with every record handled once, by the version recorded.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::process::{Serve, ServeConfig};
use common::{
    Broker, Stack, create_topics_with, eventually, fixture, fresh_database, get_json, metric,
    wait_for_order, workload,
};
use reqwest::Client;
use serde_json::{Value, json};

fn read(stem: &str) -> Vec<u8> {
    std::fs::read(fixture(stem)).expect("fixture built by host/build.rs")
}

async fn active_version(client: &Client, process: &Serve, token: Option<&str>) -> String {
    let mut request = client.get(process.url("/plugins/stock"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let plugin: Value = request.send().await.unwrap().json().await.unwrap();
    plugin["version"].as_str().unwrap_or_default().to_string()
}

async fn put(client: &Client, process: &Serve, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut request = client.put(process.url("/plugins/stock")).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_are_validated_authorized_rolled_back_and_followed_by_the_fleet() {
    // Arrange: two instances with an admin token.
    common::init_logging();
    let broker = Broker::start();
    let topic = format!("orders-{}", uuid::Uuid::new_v4().simple());
    create_topics_with(&broker, &topic, 4).await;
    let db_url = fresh_database().await;
    let token = "s3cret-token";
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, "swap-group")
        .env("SLUICE_ADMIN_TOKEN", token);
    let a = Serve::spawn(&config, "fleet-a");
    let b = Serve::spawn(&config, "fleet-b");
    a.wait_healthy().await;
    b.wait_healthy().await;
    let client = Client::new();
    let v1 = active_version(&client, &a, Some(token)).await;
    let v2 = sluice::runtime::version_of(&read("sluice_fixture_stock_v2"));

    // Admin auth: no token or a wrong one is refused and changes nothing. (The body is tiny:
    // the server answers 401 without reading it, and a large upload still in flight would
    // see the connection close.)
    let (status, _) = put(&client, &a, None, b"\0asm".to_vec()).await;
    assert_eq!(status, 401);
    let (status, _) = put(&client, &a, Some("guess"), b"\0asm".to_vec()).await;
    assert_eq!(status, 401);
    let listing = client.get(a.url("/plugins")).send().await.unwrap();
    assert_eq!(listing.status().as_u16(), 401);
    let upsert = client
        .put(a.url("/catalogs/CATALOG-0001"))
        .json(&json!({"productName": "x", "stock": 1, "unitPrice": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        upsert.status().as_u16(),
        401,
        "catalog upserts are admin too"
    );

    // Validation: each bad upload is refused with the reason; v1 stays.
    for (what, body, words) in [
        (
            "not wasm",
            b"definitely not wasm".to_vec(),
            "not a valid WebAssembly component",
        ),
        ("wrong world", read("sluice_fixture_wrong_world"), "handle"),
        (
            "failing self-test",
            read("sluice_fixture_failing_self_test"),
            "self-test failed: expected 1 mutation",
        ),
    ] {
        let (status, body) = put(&client, &a, Some(token), body).await;
        assert_eq!(status, 422, "{what}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains(words),
            "{what}: `{error}` should mention `{words}`"
        );
    }
    let (status, _) = put(&client, &a, Some(token), Vec::new()).await;
    assert_eq!(status, 400, "empty body");
    assert_eq!(active_version(&client, &a, Some(token)).await, v1);
    assert_eq!(active_version(&client, &b, Some(token)).await, v1);

    // Install v2 on A: B follows.
    let started = Instant::now();
    let (status, installed) = put(&client, &a, Some(token), read("sluice_fixture_stock_v2")).await;
    assert_eq!(status, 200, "{installed}");
    assert_eq!(installed["version"], v2.as_str());
    assert_eq!(installed["previousVersion"], v1.as_str());
    assert_eq!(installed["changed"], true);
    eventually(Duration::from_secs(5), "B to run v2", || async {
        (active_version(&client, &b, Some(token)).await == v2).then_some(())
    })
    .await;
    let converged_in = started.elapsed();

    // The metrics of each instance say what happened on it.
    let exposition = |app: &Serve| {
        let url = app.url("/metrics");
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let on_a = exposition(&a).await;
    for reason in ["compile", "link", "self-test"] {
        let labels = [("plugin", "stock"), ("reason", reason)];
        assert_eq!(
            metric(&on_a, "sluice_plugin_refusals_total", &labels),
            Some(1.0),
            "{reason}"
        );
    }
    let refused = [("plugin", "stock"), ("result", "refused")];
    assert_eq!(
        metric(&on_a, "sluice_plugin_installs_total", &refused),
        Some(3.0)
    );
    let installed = [("plugin", "stock"), ("result", "installed")];
    assert_eq!(
        metric(&on_a, "sluice_plugin_installs_total", &installed),
        Some(1.0)
    );
    // B loaded v1 at start and followed A to v2.
    let swaps = [("plugin", "stock")];
    assert_eq!(
        metric(&exposition(&b).await, "sluice_plugin_swaps_total", &swaps),
        Some(2.0)
    );

    // Provenance: an order is handled by v2 (twice the quantity) and says so.
    let order: Value = client
        .post(b.url("/orders"))
        .json(
            &json!({"userId": "u", "productId": "CATALOG-0002", "quantity": 3, "unitPrice": 1000}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = b.url(&format!("/orders/{}", order["orderId"].as_str().unwrap()));
    let decided = wait_for_order(&client, &path, "APPLIED").await;
    assert_eq!(decided["handledBy"]["version"], v2.as_str());
    let product: Value = get_json(&client, &a.url("/catalogs/CATALOG-0002")).await;
    assert_eq!(product["stock"], 110 - 6, "v2 takes twice the quantity");

    // Rollback on B: A follows back to v1.
    let rollback = client
        .post(b.url("/plugins/stock/rollback"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(rollback.status().as_u16(), 200);
    let rolled: Value = rollback.json().await.unwrap();
    assert_eq!(
        (
            rolled["version"].as_str(),
            rolled["previousVersion"].as_str()
        ),
        (Some(v1.as_str()), Some(v2.as_str()))
    );
    eventually(Duration::from_secs(5), "A to run v1 again", || async {
        (active_version(&client, &a, Some(token)).await == v1).then_some(())
    })
    .await;
    let unknown = client
        .post(a.url("/plugins/nope/rollback"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);

    // An instance that starts later runs the fleet's active version, not its bundled default.
    let (status, _) = put(&client, &a, Some(token), read("sluice_fixture_stock_v2")).await;
    assert_eq!(status, 200);
    let c = Serve::spawn(&config, "fleet-c");
    c.wait_healthy().await;
    assert_eq!(active_version(&client, &c, Some(token)).await, v2);

    for mut process in [a, b, c] {
        let status = process.terminate().await;
        assert!(status.success(), "{status}\n{}", process.log_tail());
    }
    eprintln!(
        "fleet: B ran v2 {:.0} ms after the PUT on A returned",
        converged_in.as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_load_lose_and_double_nothing() {
    let (broker, topic, db_url, pool) = Stack::start(8).await.into_parts();
    swaps_under_load(broker, topic, db_url, pool).await;
}

/// The same on a standalone broker (another librdkafka's mock cluster, in a process of its
/// own), with `sluice serve` started before its topic exists: the load's first record creates
/// it, as a deployment's first producer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_load_on_a_standalone_broker_started_before_the_topic() {
    common::init_logging();
    let broker = Broker::start_standalone();
    let topic = format!("orders-{}", uuid::Uuid::new_v4().simple());
    let db_url = fresh_database().await;
    let pool = sluice::db::connect_and_migrate(&secrecy::SecretString::from(db_url.clone()), 3)
        .await
        .unwrap();
    swaps_under_load(broker, topic, db_url, pool).await;
}

/// Twenty swaps v1 <-> v2 under a steady load on `topic` of `broker` (which may not exist yet:
/// the load creates it then): every record decided once, by a version whose logic matches
/// what was applied.
async fn swaps_under_load(broker: Broker, topic: String, db_url: String, pool: sqlx::PgPool) {
    // Arrange: a process watching a plugin directory, and plenty of stock.
    let initial = workload::add_products(&pool, 10, 10_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, "load-group")
        .env("SLUICE_PLUGIN_DIR", dir.path().display());
    let mut process = Serve::spawn(&config, "swap-load");
    process.wait_healthy().await;
    let client = Client::new();
    let (v1_bytes, v2_bytes) = (read("sluice_plugin_stock"), read("sluice_fixture_stock_v2"));
    let (v1, v2) = (
        sluice::runtime::version_of(&v1_bytes),
        sluice::runtime::version_of(&v2_bytes),
    );
    assert_eq!(active_version(&client, &process, None).await, v1);

    // Act: produce at a steady rate; after a baseline, swap twenty times, alternating the
    // admin API and a file dropped into the watched directory.
    let rate = 6_000; // events per second
    let seconds = 10;
    let orders = workload::orders(rate * seconds, &initial, 42);
    let producer = broker.producer();
    let producing = {
        let (orders, topic) = (orders.clone(), topic.clone());
        tokio::spawn(async move {
            let tick = Duration::from_millis(50);
            let mut next = Instant::now();
            for chunk in orders.chunks(rate / 20) {
                workload::produce(&producer, &topic, chunk).await;
                next += tick;
                tokio::time::sleep_until(next.into()).await;
            }
        })
    };
    let load_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let swaps_started = Instant::now();
    let mut file_drop_latencies = Vec::new();
    for swap in 0..20 {
        let (bytes, version) = if swap % 2 == 0 {
            (&v2_bytes, &v2)
        } else {
            (&v1_bytes, &v1)
        };
        if swap % 4 < 2 {
            let (status, body) = put(&client, &process, None, bytes.clone()).await;
            assert_eq!(status, 200, "{body}");
        } else {
            let staged = dir.path().join(".stock.wasm.tmp");
            std::fs::write(&staged, bytes).unwrap();
            let dropped = Instant::now();
            std::fs::rename(&staged, dir.path().join("stock.wasm")).unwrap();
            eventually(
                Duration::from_secs(10),
                "the dropped file to become active",
                || async {
                    (active_version(&client, &process, None).await == *version).then_some(())
                },
            )
            .await;
            file_drop_latencies.push(dropped.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let swaps_ended = Instant::now();
    producing.await.unwrap();
    let produced_in = load_started.elapsed();
    workload::wait_processed(
        &pool,
        "load-group",
        orders.len() as i64,
        Duration::from_secs(120),
    )
    .await;

    // Assert: every record decided once, by a version whose logic matches what was applied.
    let rows: Vec<(String, String, String, Option<Value>)> = sqlx::query_as(
        "SELECT event_id, outcome, plugin_version, mutations FROM processed_messages WHERE group_id = 'load-group'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), orders.len(), "each record decided exactly once");
    let quantity: HashMap<String, (&str, i64)> = orders
        .iter()
        .map(|o| (o.id.to_string(), (o.product.as_str(), o.quantity)))
        .collect();
    let mut expected = initial.clone();
    let mut by_version: HashMap<&str, usize> = HashMap::new();
    for (event_id, outcome, version, mutations) in &rows {
        assert_eq!(outcome, "APPLIED", "{event_id}");
        let (product, q) = quantity[event_id];
        let factor = if *version == v1 {
            1
        } else if *version == v2 {
            2
        } else {
            panic!("unknown version {version}")
        };
        *by_version
            .entry(if factor == 1 { "v1" } else { "v2" })
            .or_default() += 1;
        let delta = mutations
            .as_ref()
            .and_then(|m| m[0]["delta"].as_i64())
            .unwrap();
        assert_eq!(delta, -factor * q, "{event_id} handled by {version}");
        *expected.get_mut(product).unwrap() += delta;
    }
    let actual: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT product_id, stock FROM catalog")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for (product, stock) in &expected {
        assert_eq!(
            actual[product], *stock,
            "stock of {product} = initial + what each recorded version produced"
        );
    }
    assert!(
        by_version["v1"] > 0 && by_version["v2"] > 0,
        "{by_version:?}"
    );

    // Figures: throughput before and during the swaps, from when records were decided.
    let window = |from: Instant, to: Instant| {
        let (from, to) = (
            chrono::Utc::now() - (Instant::now() - from),
            chrono::Utc::now() - (Instant::now() - to),
        );
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM processed_messages WHERE processed_at >= $1 AND processed_at < $2",
            )
            .bind(from).bind(to).fetch_one(&pool).await.unwrap();
            n as f64 / (to - from).as_seconds_f64()
        }
    };
    let baseline = window(load_started + Duration::from_millis(500), swaps_started).await;
    let during = window(swaps_started, swaps_ended).await;
    file_drop_latencies.sort();
    let median = file_drop_latencies[file_drop_latencies.len() / 2];
    let status = process.terminate().await;
    assert!(status.success(), "{status}\n{}", process.log_tail());
    eprintln!(
        "swap under load: {} events produced in {:.1} s ({rate}/s offered); 20 swaps ({} by API, {} by file) \
         in {:.1} s; decided by v1 {}, v2 {}; throughput {:.0}/s before swaps, {:.0}/s during; \
         file drop -> active: median {:.0} ms, max {:.0} ms",
        orders.len(),
        produced_in.as_secs_f64(),
        10,
        file_drop_latencies.len(),
        (swaps_ended - swaps_started).as_secs_f64(),
        by_version["v1"],
        by_version["v2"],
        baseline,
        during,
        median.as_secs_f64() * 1000.0,
        file_drop_latencies.last().unwrap().as_secs_f64() * 1000.0
    );
}
