//! Hostile plugins cost only their own message: an endless loop, a memory bomb, a stack
//! overflow, a panic, an abort, absurd output. The host keeps running and the other messages
//! keep flowing.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::process::{Serve, ServeConfig};
use common::{Stack, fixture, get_json, produce, stock_of, workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugin_calls_cost_only_their_own_message() {
    // Arrange: the hostile fixture handles the topic.
    let (broker, topic, db_url, pool) = Stack::start(common::PARTITIONS).await.into_parts();
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, "hostile-group")
        .env(
            "SLUICE_PLUGINS",
            fixture("sluice_fixture_hostile").display(),
        )
        .env("SLUICE_ROUTES", format!("{topic}=sluice_fixture_hostile"))
        // The memory bomb writes 64 MiB before it meets its cap: on a loaded two-core machine
        // that took more than the default 100 ms, and the deadline fired first. Each cap is
        // checked here by name, so the deadline leaves the memory cap room to be the one hit.
        .env("SLUICE_PLUGIN_TIMEOUT_MS", "1000")
        .env("RUST_LOG", "info,plugin=debug");
    let mut process = Serve::spawn(&config, "hostile");
    process.wait_healthy().await;
    // scripts/test runs this test in each isolation setting: the plugin runs in the one asked.
    let isolation = std::env::var("SLUICE_PLUGIN_ISOLATION").unwrap_or_else(|_| "batch".into());
    let plugins = get_json(&reqwest::Client::new(), &process.url("/plugins")).await;
    assert_eq!(plugins[0]["isolation"], isolation.as_str(), "{plugins}");
    let producer = broker.producer();

    // Act: every misbehaviour, each between two well-behaved messages, all on one partition.
    // Rust on wasm keeps big frames on a shadow stack in linear memory: deep recursion runs
    // off its bottom ("out of bounds memory access") before the wasm stack overflows.
    let hostile: [(&str, &str, &[&str]); 7] = [
        ("loop", "timeout", &["deadline"]),
        ("alloc", "trap", &["memory limit of 64 MiB exceeded"]),
        (
            "recurse",
            "trap",
            &["stack overflow", "out of bounds memory access"],
        ),
        ("panic", "trap", &["hostile plugin panics on purpose"]),
        ("trap", "trap", &["unreachable"]),
        ("huge-output", "invalid-output", &["100000 mutations"]),
        ("bad-output", "invalid-output", &["productId"]),
    ];
    let started = Instant::now();
    produce(&producer, &topic, "k", b"ok", Some("ok-first")).await;
    for (payload, _, _) in &hostile {
        produce(&producer, &topic, "k", payload.as_bytes(), Some(payload)).await;
        produce(
            &producer,
            &topic,
            "k",
            b"ok",
            Some(&format!("ok-after-{payload}")),
        )
        .await;
    }
    produce(&producer, &topic, "k", b"log-flood", Some("log-flood")).await;
    let total = 2 + 2 * hostile.len() as i64;
    workload::wait_processed(&pool, "hostile-group", total, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();

    // Assert: each hostile call is a dead letter with the reason; everything else applied.
    let rows: Vec<(String, String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT event_id, outcome, error_kind, reason FROM processed_messages")
            .fetch_all(&pool)
            .await
            .unwrap();
    let by_id: HashMap<&str, (&str, Option<&str>, &str)> = rows
        .iter()
        .map(|(id, outcome, kind, reason)| {
            (
                id.as_str(),
                (
                    outcome.as_str(),
                    kind.as_deref(),
                    reason.as_deref().unwrap_or(""),
                ),
            )
        })
        .collect();
    for (payload, kind, words) in &hostile {
        let (outcome, got_kind, reason) = by_id[payload];
        assert_eq!(
            (outcome, got_kind),
            ("DEAD_LETTER", Some(*kind)),
            "{payload}: {reason}"
        );
        assert!(
            words.iter().any(|w| reason.contains(w)),
            "{payload}: `{reason}` should mention one of {words:?}"
        );
    }
    let applied = rows.iter().filter(|r| r.1 == "APPLIED").count();
    assert_eq!(
        applied,
        hostile.len() + 2,
        "every well-behaved message applied"
    );
    let stock = stock_of(&pool, "CATALOG-0001").await;
    assert_eq!(stock, 100 - applied as i64);

    let client = reqwest::Client::new();
    let plugin: serde_json::Value =
        get_json(&client, &process.url("/plugins/sluice_fixture_hostile")).await;
    assert_eq!(plugin["messagesHandled"], total);
    assert_eq!(plugin["errors"], hostile.len() as i64);

    let status = process.terminate().await;
    assert!(
        status.success(),
        "the host survived: {status}\n{}",
        process.log_tail()
    );
    let log = std::fs::read_to_string(&process.log).unwrap();
    let short_version = &plugin["version"].as_str().unwrap()[..12];
    assert!(
        log.lines().any(|l| l.contains("flood line 99")
            && l.contains(&format!("sluice_fixture_hostile@{short_version}"))),
        "plugin log lines reach the host's log tagged with plugin name and version"
    );
    assert!(
        !log.contains("flood line 100"),
        "lines over the per-call cap are dropped"
    );
    assert!(log.contains("dropped=9900"), "and counted");
    eprintln!(
        "sandbox: {} hostile calls contained ({}), {applied} well-behaved messages applied, \
         {total} messages in {:.2} s",
        hostile.len(),
        hostile.iter().map(|h| h.0).collect::<Vec<_>>().join(", "),
        elapsed.as_secs_f64()
    );
}
