//! Plugins in Python and JavaScript on the same contract and sandbox as Rust: the stock plugin
//! in each language passes the same fixtures, a Python and a JavaScript shadow of the Rust
//! version agree with it over thousands of live orders, the velocity example in each keeps
//! its keys' state and emits its alert on a live route (contract 0.2), and the hostile plugins
//! in both languages cost only their own records.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::process::{Serve, ServeConfig};
use common::{Stack, TestApp, fixture, get_json, interpreted, produce, stock_of, workload};
use sluice::runtime::version_of;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const PYTHON_STOCK: &str = "plugins/python/stock";
const JS_STOCK: &str = "plugins/js/stock";
const PYTHON_VELOCITY: &str = "plugins/python/velocity";
const JS_VELOCITY: &str = "plugins/js/velocity";

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `sluice plugin ARGS` at the repository root.
fn plugin(args: &[&str]) -> (bool, String) {
    plugin_in(root(), args)
}

/// `sluice plugin test COMPONENT --fixtures FIXTURES` passes all `cases`.
fn assert_fixtures_pass(component: &Path, fixtures: &Path, cases: usize) {
    let (ok, out) = plugin(&[
        "test",
        component.to_str().unwrap(),
        "--fixtures",
        fixtures.to_str().unwrap(),
    ]);
    assert!(
        ok && out.contains(&format!("{cases} passed; 0 failed")),
        "{}:\n{out}",
        component.display()
    );
}

#[test]
fn the_stock_plugin_passes_the_same_fixtures_in_rust_python_and_javascript() {
    let fixtures = root().join("plugins/stock/fixtures");
    let cases = std::fs::read_to_string(fixtures.join("orders.jsonl"))
        .unwrap()
        .lines()
        .count();
    let mut checks = Vec::new();
    for component in [
        fixture("sluice_plugin_stock"),
        interpreted(PYTHON_STOCK),
        interpreted(JS_STOCK),
    ] {
        assert_fixtures_pass(&component, &fixtures, cases);
        let (ok, out) = plugin(&["check", component.to_str().unwrap()]);
        assert!(ok, "{}:\n{out}", component.display());
        assert!(out.contains("self-test passed"), "{out}");
        checks.push(out);
    }
    // What the interpreters import, and the host links while granting nothing.
    assert!(checks[1].contains("wasi:sockets/tcp"), "{}", checks[1]);
    assert!(checks[1].contains("wasi:filesystem/types"), "{}", checks[1]);
    assert!(
        !checks[2].contains("wasi:http"),
        "built without fetch: {}",
        checks[2]
    );

    // ComponentizeJS's default build imports wasi:http (for `fetch`): it loads too (every
    // request it would send is denied) and decides the fixtures the same.
    let stock_js = root().join(JS_STOCK);
    let with_fetch = stock_js.join("build/stock-with-fetch.wasm");
    {
        let lock = std::fs::File::create(stock_js.join("build/.lock")).unwrap();
        lock.lock().unwrap();
        let staging = stock_js.join(".sluice-build");
        let status = Command::new(root().join("plugins/js/node_modules/.bin/componentize-js"))
            .current_dir(&staging)
            .args(["bundle.js", "--wit", "wit", "-n", "checked-handler", "-o"])
            .arg(&with_fetch)
            .status()
            .unwrap();
        assert!(status.success(), "componentize-js with its defaults");
    }
    let (ok, out) = plugin(&["check", with_fetch.to_str().unwrap()]);
    assert!(ok && out.contains("wasi:http/outgoing-handler"), "{out}");
    assert_fixtures_pass(&with_fetch, &fixtures, cases);

    // The same Python source and helper built against contract 0.1, as an earlier `sluice
    // plugin build` did: it loads as a 0.1 plugin and decides the fixtures the same.
    let old = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(old.path().join("py")).unwrap();
    std::fs::create_dir_all(old.path().join("wit")).unwrap();
    for (from, to) in [
        ("plugins/python/stock/app.py", "py/app.py"),
        ("plugins/python/sluice_plugin.py", "py/sluice_plugin.py"),
        ("wit/v0.1/handler.wit", "wit/handler.wit"),
    ] {
        std::fs::copy(root().join(from), old.path().join(to)).unwrap();
    }
    let v0_1 = old.path().join("stock-0.1.wasm");
    let status = Command::new(root().join("target/plugin-venv/bin/componentize-py"))
        .current_dir(old.path())
        .args(["-d", "wit", "-w", "checked-handler", "componentize", "app"])
        .args(["-p", "py", "-o"])
        .arg(&v0_1)
        .status()
        .unwrap();
    assert!(status.success(), "componentize-py against contract 0.1");
    let (ok, out) = plugin(&["check", v0_1.to_str().unwrap()]);
    assert!(ok && out.contains("(sluice:handler@0.1.0)"), "{out}");
    assert_fixtures_pass(&v0_1, &fixtures, cases);
    let today = sluice::runtime::explain::CONTRACT;
    assert!(
        checks[1].contains(&format!("({today})")),
        "today's build is {today}: {}",
        checks[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_plugins_keep_keyed_state_and_emit_on_contract_0_2() {
    for dir in [PYTHON_VELOCITY, JS_VELOCITY] {
        // Arrange: the velocity example on a route that keeps state and may emit its alerts.
        let component = interpreted(dir);
        let app = TestApp::spawn_with(|settings| {
            let topic = settings.kafka.topic.clone();
            let alerts = format!("{topic}.alerts");
            settings.plugins.paths = vec![component.clone()];
            settings.kafka.routes = sluice::domain::Routes::single(&topic, "velocity")
                .allow(
                    std::slice::from_ref(&topic),
                    &[(topic.clone(), alerts.clone())],
                )
                .expect("routes");
            settings.sandbox.plugin_config = sluice::runtime::PluginConfig::from_pairs([
                ("velocity:max-orders".to_string(), "3".to_string()),
                ("velocity:alert-topic".to_string(), alerts),
            ]);
        })
        .await;
        let (_, listed) = app.get_json("/plugins/velocity").await;
        assert_eq!(
            listed["contract"],
            sluice::runtime::explain::CONTRACT,
            "{dir}: {listed}"
        );
        let product = "CATALOG-0001";
        let before = stock_of(&app.pool, product).await;

        // Act: five orders of one key, in one partition and in order.
        let producer = app.broker.producer();
        for i in 0..5 {
            let payload = serde_json::json!({"orderId": format!("v-{i}"), "userId": "u",
                "productId": product, "quantity": 2, "unitPrice": 1, "totalPrice": 2,
                "createdAt": "2026-12-01T00:00:00Z"});
            let id = format!("velocity-{i}");
            produce(
                &producer,
                &app.topic,
                product,
                payload.to_string().as_bytes(),
                Some(&id),
            )
            .await;
        }
        app.wait_processed(5, Duration::from_secs(60)).await;

        // Assert: three applied and counted in the key's state, the third alerting once; the
        // two over the rate rejected and not counted.
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT event_id, outcome, reason FROM processed_messages ORDER BY event_id",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let outcomes: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(
            outcomes,
            ["APPLIED", "APPLIED", "APPLIED", "REJECTED", "REJECTED"],
            "{dir}: {rows:?}"
        );
        assert!(
            rows[3]
                .2
                .as_deref()
                .unwrap_or_default()
                .contains("at most 3"),
            "{dir}: {rows:?}"
        );
        assert_eq!(stock_of(&app.pool, product).await, before - 6, "{dir}");
        let (state,): (Vec<u8>,) =
            sqlx::query_as("SELECT value FROM plugin_state WHERE plugin = 'velocity' AND key = $1")
                .bind(product.as_bytes())
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let window: serde_json::Value = serde_json::from_slice(&state).unwrap();
        assert_eq!(window["orders"], 3, "{dir}: {window}");
        let (status, view) = app
            .get_json(&format!("/plugins/velocity/state/{product}"))
            .await;
        assert_eq!(status, 200, "{dir}: {view}");

        let alerts_topic = format!("{}.alerts", app.topic);
        let alerts = common::read_topic(app.broker.bootstrap(), &alerts_topic, 1).await;
        assert_eq!(alerts.len(), 1, "{dir}");
        assert_eq!(alerts[0].key.as_deref(), Some(product.as_bytes()), "{dir}");
        let alert: serde_json::Value =
            serde_json::from_slice(alerts[0].payload.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(alert["orders"], 3, "{dir}: {alert}");
        assert_eq!(alert["lastOrderId"], "v-2", "{dir}: {alert}");
        let metrics = app.metrics().await;
        let emitted = common::metric(
            &metrics,
            "sluice_emitted_records_total",
            &[("topic", &alerts_topic)],
        );
        assert_eq!(emitted, Some(1.0), "{dir}: one alert emitted");
        app.stop().await;
    }
}

/// Install `component` as the shadow of `stock`, feed `orders` valid orders and `poison` bad
/// records, and return the shadow report once everything is compared.
async fn shadow_run(
    app: &TestApp,
    component: &Path,
    products: &HashMap<String, i64>,
    orders: usize,
    seed: u64,
) -> serde_json::Value {
    let bytes = std::fs::read(component).unwrap();
    let response = app
        .http
        .put(app.url("/plugins/stock?mode=shadow"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 200, "{}", response.text().await.unwrap());
    let before = app.processed_count().await;
    let valid = workload::orders(orders, products, seed);
    let producer = app.broker.producer();
    workload::produce(&producer, &app.topic, &valid).await;
    let poison: [&[u8]; 6] = [
        b"not json",
        b"[1,2]",
        b"",
        br#"{"orderId":"p","userId":"u","productId":"LOAD-01","quantity":0,"unitPrice":1,"totalPrice":1,"createdAt":"t"}"#,
        br#"{"orderId":"p","userId":"u","productId":"LOAD-01","quantity":"2","unitPrice":1,"totalPrice":1,"createdAt":"t"}"#,
        br#"{"orderId":"p","userId":"u","productId":"LOAD-01","quantity":1,"quantity":9,"unitPrice":1,"totalPrice":1,"createdAt":"t"}"#,
    ];
    for (i, payload) in poison.iter().enumerate() {
        produce(
            &producer,
            &app.topic,
            "p",
            payload,
            Some(&format!("poison-{seed}-{i}")),
        )
        .await;
    }
    let total = before + (orders + poison.len()) as i64;
    app.wait_processed(total, Duration::from_secs(120)).await;
    let (status, report) = app.get_json("/plugins/stock/shadow").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["shadowVersion"], version_of(&bytes).as_str());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_shadows_of_the_rust_stock_plugin_agree_on_every_record() {
    let app = TestApp::spawn().await;
    let products = workload::add_products(&app.pool, 20, 1_000_000).await;
    for (component, orders, seed) in [
        (interpreted(PYTHON_STOCK), 3_000, 1),
        (interpreted(JS_STOCK), 2_000, 2),
    ] {
        let report = shadow_run(&app, &component, &products, orders, seed).await;
        let compared = report["compared"].as_i64().unwrap();
        assert!(compared >= orders as i64 + 6, "{report}");
        assert_eq!(
            report["agreements"],
            compared,
            "{}: {report}",
            component.display()
        );
        eprintln!(
            "shadow {}: {compared} records compared, all agree",
            component.display()
        );
        let response = app
            .http
            .delete(app.url("/plugins/stock/shadow"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 204);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_python_and_javascript_plugins_cost_only_their_own_records() {
    // (plugin dir, payload, outcome, error kind, words of the reason, one of which must appear)
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static [&'static str],
    );
    let python: &[Case] = &[
        (
            "files",
            "REJECTED",
            None,
            &[
                "files: FileNotFoundError",
                "files: PermissionError",
                "files: OSError",
            ],
        ),
        (
            "write-file",
            "REJECTED",
            None,
            &[
                "write-file: FileNotFoundError",
                "write-file: PermissionError",
                "write-file: OSError",
            ],
        ),
        ("sockets", "REJECTED", None, &["sockets: "]),
        ("lookup", "REJECTED", None, &["lookup: "]),
        ("env", "REJECTED", None, &["env: 0 variables"]),
        ("clocks", "APPLIED", None, &[]),
        ("stdin", "APPLIED", None, &[]),
        (
            "sleep",
            "DEAD_LETTER",
            Some("blocked"),
            &["plugins must not block"],
        ),
        ("loop", "DEAD_LETTER", Some("timeout"), &["deadline"]),
        (
            "alloc",
            "DEAD_LETTER",
            Some("trap"),
            &["memory limit", "MemoryError"],
        ),
        (
            "recurse",
            "DEAD_LETTER",
            Some("trap"),
            &["RecursionError", "stack overflow", "memory limit"],
        ),
        ("exit", "DEAD_LETTER", Some("trap"), &["exit", "SystemExit"]),
        (
            "crash",
            "DEAD_LETTER",
            Some("trap"),
            &["hostile plugin raises on purpose"],
        ),
    ];
    let js: &[Case] = &[
        // Built without fetch, StarlingMonkey aborts the call that reaches for it.
        ("fetch", "DEAD_LETTER", Some("trap"), &["unreachable"]),
        ("env", "REJECTED", None, &["env: no process environment"]),
        ("modules", "REJECTED", None, &["modules: globals present"]),
        ("clocks", "APPLIED", None, &[]),
        ("timer", "APPLIED", None, &[]),
        ("sleep", "DEAD_LETTER", Some("timeout"), &["deadline"]),
        ("loop", "DEAD_LETTER", Some("timeout"), &["deadline"]),
        (
            "alloc",
            "DEAD_LETTER",
            Some("trap"),
            &["memory limit", "out of memory"],
        ),
        (
            "recurse",
            "DEAD_LETTER",
            Some("trap"),
            &["too much recursion", "stack overflow", "InternalError"],
        ),
        (
            "crash",
            "DEAD_LETTER",
            Some("trap"),
            &["hostile plugin throws on purpose"],
        ),
    ];
    for (dir, name, cases) in [
        (
            "host/tests/plugins/hostile-python",
            "hostile_python",
            python,
        ),
        ("host/tests/plugins/hostile-js", "hostile_js", js),
    ] {
        let component = interpreted(dir);
        let (broker, topic, db_url, pool) = Stack::start(common::PARTITIONS).await.into_parts();
        let group = format!("{name}-group");
        let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, &group)
            .env("SLUICE_PLUGINS", component.display())
            .env("SLUICE_ROUTES", format!("{topic}={name}"))
            .env("SLUICE_PLUGIN_TIMEOUT_MS", "2000");
        let mut process = Serve::spawn(&config, name);
        process.wait_healthy().await;
        let producer = broker.producer();
        for (payload, _, _, _) in cases {
            produce(&producer, &topic, "k", payload.as_bytes(), Some(payload)).await;
            let ok_id = format!("ok-after-{payload}");
            produce(&producer, &topic, "k", b"ok", Some(&ok_id)).await;
        }
        let total = 2 * cases.len() as i64;
        workload::wait_processed(&pool, &group, total, Duration::from_secs(120)).await;

        let rows: Vec<(String, String, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT event_id, outcome, error_kind, reason FROM processed_messages")
                .fetch_all(&pool)
                .await
                .unwrap();
        let by_id: HashMap<&str, (&str, Option<&str>, &str)> = rows
            .iter()
            .map(|(id, outcome, kind, reason)| {
                let reason = reason.as_deref().unwrap_or("");
                (id.as_str(), (outcome.as_str(), kind.as_deref(), reason))
            })
            .collect();
        let mut wrong = Vec::new();
        for (payload, outcome, kind, words) in cases {
            let (got, got_kind, reason) = by_id[payload];
            let fits = got == *outcome
                && (kind.is_none() || got_kind == *kind)
                && (words.is_empty() || words.iter().any(|w| reason.contains(w)))
                && !reason.contains("LEAKED");
            if !fits {
                wrong.push(format!(
                    "{payload}: {got} {got_kind:?} `{reason}`, expected {outcome} {kind:?} with one of {words:?}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{name}:\n{}", wrong.join("\n"));
        let applied = rows.iter().filter(|r| r.1 == "APPLIED").count() as i64;
        let expected_applied =
            cases.len() as i64 + cases.iter().filter(|c| c.1 == "APPLIED").count() as i64;
        assert_eq!(
            applied, expected_applied,
            "every well-behaved record applied"
        );
        assert_eq!(stock_of(&pool, "CATALOG-0001").await, 100 - applied);
        let plugin = get_json(
            &reqwest::Client::new(),
            &process.url(&format!("/plugins/{name}")),
        )
        .await;
        assert_eq!(plugin["messagesHandled"], total, "{plugin}");
        let status = process.terminate().await;
        assert!(
            status.success(),
            "the host survived: {status}\n{}",
            process.log_tail()
        );
        eprintln!("{name}: {} hostile records contained", cases.len());
    }
}

/// `sluice plugin ARGS` in `dir`, with the tools where scripts/setup --test installs them.
fn plugin_in(dir: &Path, args: &[&str]) -> (bool, String) {
    let mut path = std::ffi::OsString::from(root().join("target/plugin-venv/bin"));
    path.push(":");
    path.push(root().join("plugins/js/node_modules/.bin"));
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let output = Command::new(SLUICE)
        .arg("plugin")
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .expect("running sluice plugin");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_python_and_javascript_plugins_test_build_check_and_go_live() {
    let app = TestApp::spawn().await;
    let parent = tempfile::tempdir().unwrap();
    for (lang, name, test_file, wrong) in [
        (
            "python",
            "rules-py",
            "tests/test_app.py",
            ("(\"CATALOG-0001\", -3)", "(\"CATALOG-0001\", -4)"),
        ),
        (
            "js",
            "rules-js",
            "test/plugin.test.js",
            ("['CATALOG-0001', -3]", "['CATALOG-0001', -4]"),
        ),
    ] {
        let (ok, out) = plugin_in(parent.path(), &["new", name, "--lang", lang]);
        assert!(ok, "{out}");
        let dir = parent.path().join(name);

        // Its unit tests, build and fixtures pass on the first try...
        let (ok, out) = plugin_in(&dir, &["test", "--fixtures", "fixtures/"]);
        assert!(ok, "{lang}: {out}");
        assert!(out.contains("3 passed; 0 failed"), "{lang}: {out}");
        // ...and a failing unit test fails the command before anything is built.
        let test_path = dir.join(test_file);
        let tests = std::fs::read_to_string(&test_path).unwrap();
        assert!(tests.contains(wrong.0), "{lang}: {tests}");
        std::fs::write(&test_path, tests.replace(wrong.0, wrong.1)).unwrap();
        let (ok, out) = plugin_in(&dir, &["test", "--fixtures", "fixtures/"]);
        assert!(!ok, "{lang}: a wrong expectation must fail: {out}");
        assert!(!out.contains("running 3 fixtures"), "{lang}: {out}");
        std::fs::write(&test_path, tests).unwrap();

        // `plugin test --fixtures` built it (as `plugin build` does).
        let component = dir
            .join("build")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let (ok, out) = plugin_in(&dir, &["check", component.to_str().unwrap()]);
        assert!(ok && out.contains("self-test passed"), "{lang}: {out}");

        // Swapped in as the live stock plugin, it decides the next order.
        let bytes = std::fs::read(&component).unwrap();
        let response = app
            .http
            .put(app.url("/plugins/stock"))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            200,
            "{}",
            response.text().await.unwrap()
        );
        let (_, listed) = app.get_json("/plugins/stock").await;
        assert_eq!(listed["version"], version_of(&bytes).as_str(), "{listed}");
        let before = stock_of(&app.pool, "CATALOG-0001").await;
        let processed = app.processed_count().await;
        let response = app
            .post_order(
                serde_json::json!({"userId": "author", "productId": "CATALOG-0001",
                                           "quantity": 2, "unitPrice": 100}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 201);
        app.wait_processed(processed + 1, Duration::from_secs(30))
            .await;
        assert_eq!(
            stock_of(&app.pool, "CATALOG-0001").await,
            before - 2,
            "{lang}"
        );
    }
    app.stop().await;
}

#[test]
fn python_and_javascript_scaffolds_start_from_the_velocity_example() {
    let parent = tempfile::tempdir().unwrap();
    for lang in ["python", "js"] {
        let name = format!("velocity-{lang}");
        let (ok, out) = plugin_in(
            parent.path(),
            &["new", &name, "--lang", lang, "--example", "velocity"],
        );
        assert!(ok, "{lang}: {out}");
        // Its unit tests (the example's), build and the example's fixtures pass as scaffolded.
        let (ok, out) = plugin_in(
            &parent.path().join(&name),
            &["test", "--fixtures", "fixtures/"],
        );
        assert!(ok && out.contains("5 passed; 0 failed"), "{lang}: {out}");
    }
}
