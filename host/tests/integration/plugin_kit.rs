//! The plugin author's path: scaffold → unit tests on wasm → check → fixtures (a production
//! failure replayed as one) → a shadow run on live traffic → promote; and a disagreeing
//! candidate that is reported and discarded.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{TestApp, fixture, stock_of};
use serde_json::{Value, json};
use sluice::runtime::version_of;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn read(stem: &str) -> Vec<u8> {
    std::fs::read(fixture(stem)).expect("fixture built by host/build.rs")
}

/// Where crates scaffolded by the tests build: kept between runs (dependencies compile once).
fn scaffold_target() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kit-scaffold")
}

/// `sluice plugin ARGS` in `dir`: whether it succeeded, and its stdout and stderr as text.
fn plugin(dir: &Path, args: &[&str]) -> (Output, String) {
    let output = Command::new(SLUICE)
        .arg("plugin")
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("CARGO_TARGET_DIR", scaffold_target())
        .output()
        .expect("running sluice plugin");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// `sluice plugin replay` of `app`'s dead letters into `dir/dead.jsonl`.
fn replay_dead_letters(dir: &Path, app: &TestApp) -> (Output, String) {
    let args = [
        "replay",
        "--all-dead-letters",
        "--database-url",
        &app.db_url,
    ];
    plugin(dir, &[&args[..], &["--out", "dead.jsonl"]].concat())
}

async fn order(app: &TestApp, quantity: i64) {
    let response = app
        .post_order(json!({"userId": "author", "productId": "CATALOG-0001",
                           "quantity": quantity, "unitPrice": 100}))
        .await;
    assert_eq!(response.status().as_u16(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disagreeing_shadow_is_reported_without_touching_stock_then_discarded_or_promoted() {
    // Arrange: stock v1 active, v2 (takes twice the quantity) as its shadow.
    let app = TestApp::spawn().await;
    let v2 = read("sluice_fixture_stock_v2");
    let (status, body) = app.put("/plugins/stock?mode=shadow", v2.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "shadow");
    let before = stock_of(&app.pool, "CATALOG-0001").await;

    // Act: two orders on live traffic.
    order(&app, 2).await;
    order(&app, 3).await;
    app.wait_processed(2, Duration::from_secs(20)).await;

    // Assert: only the active version's output was applied; both were compared.
    assert_eq!(stock_of(&app.pool, "CATALOG-0001").await, before - 5);
    let (status, report) = app.get_json("/plugins/stock/shadow").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["shadowVersion"], version_of(&v2).as_str());
    assert_eq!(report["compared"], 2, "{report}");
    assert_eq!(report["agreements"], 0, "{report}");
    let first = &report["differences"][0];
    assert_eq!(first["topic"], app.topic.as_str(), "{report}");
    let deltas = |side: &str| first[side]["mutations"][0]["delta"].as_i64();
    assert_eq!(
        deltas("shadow"),
        deltas("active").map(|d| 2 * d),
        "{report}"
    );
    let (_, listed) = app.get_json("/plugins/stock").await;
    assert_eq!(listed["shadowVersion"], version_of(&v2).as_str());

    // Discard: the report is gone, v1 stays.
    let response = app
        .http
        .delete(app.url("/plugins/stock/shadow"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(app.get_json("/plugins/stock/shadow").await.0, 404);
    assert_eq!(app.post("/plugins/stock/shadow/promote").await.0, 409);

    // Promote: refused while the candidate differs (or was compared on too few records),
    // unless forced; then v2 becomes active and its output is applied from then on.
    app.put("/plugins/stock?mode=shadow", v2.clone()).await;
    let (status, refused) = app.post("/plugins/stock/shadow/promote").await;
    assert_eq!(status, 409, "{refused}");
    let reason = refused["error"].as_str().unwrap_or_default();
    assert!(reason.contains("compared on 2 records"), "{refused}");
    let (status, promoted) = app.post("/plugins/stock/shadow/promote?force=true").await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["version"], version_of(&v2).as_str());
    order(&app, 1).await;
    app.wait_processed(3, Duration::from_secs(20)).await;
    assert_eq!(stock_of(&app.pool, "CATALOG-0001").await, before - 5 - 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_failure_becomes_a_failing_fixture_in_one_command() {
    // Arrange: a poison record, dead-lettered by the running app.
    let app = TestApp::spawn().await;
    let producer = app.broker.producer();
    common::produce(
        &producer,
        &app.topic,
        "k",
        b"{\"orderId\": 1}",
        Some("bad-1"),
    )
    .await;
    app.wait_processed(1, Duration::from_secs(20)).await;
    let work = tempfile::tempdir().unwrap();
    let stock = fixture("sluice_plugin_stock");

    // Act: replay the dead letters, then the topic, as fixtures.
    let (output, text) = replay_dead_letters(work.path(), &app);
    assert!(output.status.success(), "{text}");
    let replayed = std::fs::read_to_string(work.path().join("dead.jsonl")).unwrap();
    let recorded: Value = serde_json::from_str(replayed.trim()).unwrap();
    assert_eq!(
        recorded["recorded"]["errorKind"], "invalid-message",
        "{replayed}"
    );
    assert_eq!(recorded["headers"][0]["value"], "bad-1", "{replayed}");
    let mut from_topic = 0;
    for partition in 0..common::PARTITIONS {
        let (output, text) = plugin(
            work.path(),
            &[
                "replay",
                "--topic",
                &app.topic,
                "--partition",
                &partition.to_string(),
                "--kafka-brokers",
                app.broker.bootstrap(),
            ],
        );
        assert!(output.status.success(), "{text}");
        from_topic += String::from_utf8_lossy(&output.stdout).lines().count();
    }

    // Assert: the replayed dead letter fails against the plugin that dead-lettered it, with
    // the difference spelled out; the fixtures of the example plugin pass.
    assert_eq!(from_topic, 1, "one record on the topic");
    let (output, text) = plugin(
        work.path(),
        &["test", stock.to_str().unwrap(), "--fixtures", "dead.jsonl"],
    );
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("FAILED dead letter") && text.contains("\"error\":\"invalid-message\""),
        "{text}"
    );
    assert!(text.contains("0 passed; 1 failed"), "{text}");
    app.stop().await;
}

#[test]
fn check_explains_what_does_not_fit() {
    let here = Path::new(".");
    let (output, text) = plugin(
        here,
        &["check", fixture("sluice_plugin_stock").to_str().unwrap()],
    );
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("fits this host (sluice:handler@0.1.0)"),
        "{text}"
    );
    assert!(text.contains("self-test passed"), "{text}");

    let (output, text) = plugin(
        here,
        &[
            "check",
            fixture("sluice_fixture_wrong_world").to_str().unwrap(),
        ],
    );
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("handle"), "names the export: {text}");

    let work = tempfile::tempdir().unwrap();
    let core = work.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let (output, text) = plugin(here, &["check", core.to_str().unwrap()]);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("wasm32-wasip2"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
}

/// The walk of the README's "Writing a plugin", outside this repository: the crate needs
/// nothing but `sluice` and cargo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_plugin_tests_builds_and_goes_live_through_a_shadow_run() {
    // Arrange: a new crate outside the repository.
    let work = tempfile::tempdir().unwrap();
    let kit = |dir: &Path, args: &[&str]| {
        let (output, text) = plugin(dir, args);
        (output.status.success(), text)
    };
    let run = |dir: &Path, args: &[&str]| {
        let (ok, text) = kit(dir, args);
        assert!(ok, "sluice plugin {args:?}:\n{text}");
        text
    };
    run(work.path(), &["new", "my-limits"]);
    let crate_dir = work.path().join("my-limits");

    // Act: unit tests on wasm and the sample fixtures, then the build, a check and a shadow run.
    let tested = run(&crate_dir, &["test", "--fixtures", "fixtures/"]);
    // Plain cargo runs the same tests: the crate's .cargo/config.toml names the runner.
    let cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["test", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", scaffold_target())
        .output()
        .expect("running cargo");
    let cargo_text = format!(
        "{}{}",
        String::from_utf8_lossy(&cargo.stdout),
        String::from_utf8_lossy(&cargo.stderr)
    );
    let built = run(&crate_dir, &["build"]);
    let wasm = built
        .lines()
        .rev()
        .find_map(|line| line.split(" (").next().filter(|p| p.ends_with(".wasm")))
        .expect("the component's path")
        .to_string();
    let checked = run(&crate_dir, &["check", &wasm]);

    // Assert
    assert!(tested.contains("test result: ok. 5 passed"), "{tested}");
    assert!(cargo.status.success(), "{cargo_text}");
    assert!(
        cargo_text.contains("test result: ok. 5 passed"),
        "{cargo_text}"
    );
    assert!(
        tested.contains("fixtures: ok. 3 passed; 0 failed"),
        "{tested}"
    );
    assert!(checked.contains("self-test passed"), "{checked}");

    // A production failure, replayed as a fixture for the new plugin: it reproduces.
    let app = TestApp::spawn().await;
    let producer = app.broker.producer();
    common::produce(&producer, &app.topic, "k", b"not an order", Some("bad-1")).await;
    app.wait_processed(1, Duration::from_secs(20)).await;
    let (output, text) = replay_dead_letters(&crate_dir, &app);
    assert!(output.status.success(), "{text}");
    let (ok, replayed) = kit(&crate_dir, &["test", &wasm, "--fixtures", "dead.jsonl"]);
    assert!(!ok && replayed.contains("FAILED dead letter"), "{replayed}");
    assert!(replayed.contains("not JSON"), "{replayed}");

    // A shadow run on live traffic agrees with the stock plugin; promoted, it is listed.
    let component = std::fs::read(&wasm).unwrap();
    let (status, body) = app
        .put("/plugins/stock?mode=shadow", component.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    order(&app, 4).await;
    app.wait_processed(2, Duration::from_secs(20)).await;
    let (_, report) = app.get_json("/plugins/stock/shadow").await;
    assert_eq!(
        (report["compared"].as_i64(), report["agreements"].as_i64()),
        (Some(1), Some(1)),
        "the scaffold's logic agrees with the stock plugin: {report}"
    );
    // One record compared is short of the bar (`--shadow-min-compared`): promoted by force.
    let (status, _) = app.post("/plugins/stock/shadow/promote").await;
    assert_eq!(
        status, 409,
        "too few records compared to promote without force"
    );
    let (status, promoted) = app.post("/plugins/stock/shadow/promote?force=true").await;
    assert_eq!(status, 200, "{promoted}");
    let version = version_of(&component);
    assert_eq!(promoted["version"], version.as_str());
    let (_, listed) = app.get_json("/plugins").await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "stock" && p["version"] == version.as_str()),
        "{listed}"
    );
    app.stop().await;
}
