//! Hostile plugins, uploads and clients get a bounded, documented answer: a dead letter with
//! the reason within the deadline, a 4xx naming the problem, a refusal in the log. The
//! process stays responsive and stops within seconds.

use crate::common;

use std::time::{Duration, Instant};

use common::components::{compile_bomb, handler_with_memories, with_custom_section};
use common::process::{Serve, ServeConfig};
use common::{Stack, TestApp, eventually, fixture, produce, workload};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice::http::AdminAccess;
use sluice::http::EdgeLimits;
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const HOSTILE: &str = "sluice_fixture_hostile";

fn read(stem: &str) -> Vec<u8> {
    std::fs::read(fixture(stem)).expect("fixture built by host/build.rs")
}

/// The app with the hostile fixture routed to its topic.
async fn hostile_app() -> TestApp {
    TestApp::spawn_with(|settings| {
        settings.plugins.paths = vec![fixture(HOSTILE)];
        settings.kafka.routes = sluice::domain::Routes::single(&settings.kafka.topic, HOSTILE);
    })
    .await
}

async fn outcome(app: &TestApp, event_id: &str) -> (String, Option<String>, String) {
    let (outcome, kind, reason): (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT outcome, error_kind, reason FROM processed_messages WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_one(&app.pool)
    .await
    .expect("an outcome");
    (outcome, kind, reason.unwrap_or_default())
}

async fn put_plugin(app: &TestApp, name: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = app
        .http
        .put(app.url(&format!("/plugins/{name}")))
        .body(body)
        .send()
        .await
        .expect("PUT /plugins");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_blocks_costs_its_record_within_the_deadline_and_ingest_goes_on() {
    // Arrange
    let app = hostile_app().await;
    let producer = app.broker.producer();

    // Act: a 20 s sleep, an empty stdin read and a stderr flood, between well-behaved records,
    // all on one partition.
    let started = Instant::now();
    for (payload, id) in [
        ("ok", "ok-1"),
        ("sleep", "sleep"),
        ("ok", "ok-2"),
        ("stdin", "stdin"),
        ("stderr-flood", "stderr-flood"),
        ("ok", "ok-3"),
    ] {
        produce(&producer, &app.topic, "k", payload.as_bytes(), Some(id)).await;
    }
    app.wait_processed(6, Duration::from_secs(10)).await;
    let elapsed = started.elapsed();

    // Assert
    let (outcome_of_sleep, kind, reason) = outcome(&app, "sleep").await;
    assert_eq!(
        (outcome_of_sleep.as_str(), kind.as_deref()),
        ("DEAD_LETTER", Some("blocked")),
        "{reason}"
    );
    assert!(reason.contains("must not block"), "{reason}");
    assert_eq!(
        outcome(&app, "stdin").await.0,
        "APPLIED",
        "an empty stdin is no wait"
    );
    let (flood, kind, reason) = outcome(&app, "stderr-flood").await;
    assert_eq!(
        (flood.as_str(), kind.as_deref()),
        ("DEAD_LETTER", Some("trap"))
    );
    assert!(
        reason.contains("after a stderr flood") || reason.contains("xxxx"),
        "{reason}"
    );
    assert!(
        reason.len() < 2_000,
        "stderr is cut in the report: {} bytes",
        reason.len()
    );
    for id in ["ok-1", "ok-2", "ok-3"] {
        assert_eq!(outcome(&app, id).await.0, "APPLIED", "{id}");
    }
    assert!(
        elapsed < Duration::from_secs(5),
        "a 20 s sleep did not stall ingest: all six decided in {elapsed:?}"
    );
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    eprintln!("blocking plugin: 6 records (a 20 s sleep among them) decided in {elapsed:?}");
    app.stop().await;
}

/// Upload `body` as plugin `name`: refused with `status` and an error that says `words`.
async fn refused(app: &TestApp, name: &str, body: Vec<u8>, status: u16, words: &str) {
    let (got, answer) = put_plugin(app, name, body).await;
    assert_eq!(got, status, "{name}: {answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(words),
        "{name}: `{error}` should say `{words}`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_break_the_limits_are_refused_with_the_reason() {
    // Arrange: a short compile deadline, to keep the bomb short.
    let app = TestApp::spawn_with(|settings| {
        settings.plugins.compile_limits.timeout = Duration::from_secs(2);
    })
    .await;
    let stock = read("sluice_plugin_stock");

    // Act + Assert: each refusal names its problem and the stock plugin stays.
    let started = Instant::now();
    let sleepy = read("sluice_fixture_sleepy_self_test");
    refused(&app, "sleepy", sleepy, 422, "self-test").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a sleeping self-test is cut short"
    );
    refused(&app, "mem", handler_with_memories(2, 1), 422, "memor").await;
    // 64 MiB on top of the main memory.
    let over = handler_with_memories(1, 1024);
    refused(&app, "mem", over, 422, "memory limit of 64 MiB").await;
    let (status, body) = put_plugin(&app, "mem", handler_with_memories(1, 16)).await;
    assert_eq!(status, 200, "two small memories are fine: {body}");

    let bomb = compile_bomb(3000, 400);
    let bomb_size = bomb.len();
    let started = Instant::now();
    let (health, upload) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let asked = Instant::now();
            let response = app.http.get(app.url("/healthz")).send().await.unwrap();
            (response.status(), asked.elapsed())
        },
        put_plugin(&app, "bomb", bomb)
    );
    let (status, body) = upload;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("longer than 2 s"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(health.0, StatusCode::OK);
    assert!(
        health.1 < Duration::from_secs(1),
        "responsive while compiling: {:?}",
        health.1
    );

    // Over the size limit: refused before the body is read, so the answer closes the
    // connection (a pooling client must not send its next request into it).
    let response = app
        .http
        .put(app.url("/plugins/big"))
        .body(vec![0u8; 33 << 20])
        .send()
        .await
        .expect("PUT /plugins/big");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        response.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("limit"),
        "{answer}"
    );
    let padded = with_custom_section(&stock, "pad", 2 << 20);
    refused(&app, "padded", padded, 422, "custom sections").await;
    let core = wat::parse_str("(module)").unwrap();
    refused(&app, "core", core, 422, "wasm32-wasip2").await;

    let (_, plugin) = app.get_json("/plugins/stock").await;
    assert_eq!(
        plugin["version"],
        sluice::runtime::version_of(&stock).as_str()
    );
    eprintln!(
        "uploads: sleeping self-test, 3 memories, 65+ MiB of memories, a {bomb_size}-byte compile \
         bomb, 9 MiB, 2 MiB of custom sections and a core module refused; healthz answered in \
         {:?} during the bomb",
        health.1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_versions_are_kept() {
    // Arrange
    let app = TestApp::spawn_with(|settings| settings.plugins.policy.versions_kept = 3).await;
    let stock = read("sluice_plugin_stock");

    // Act: six distinct versions of `stock`.
    let mut versions = Vec::new();
    for i in 0..6 {
        let variant = with_custom_section(&stock, &format!("v{i}"), 16);
        versions.push(sluice::runtime::version_of(&variant));
        let (status, body) = put_plugin(&app, "stock", variant).await;
        assert_eq!(status, 200, "{body}");
    }

    // Assert: the three newest are kept (the active and previous among them); rollback works.
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT version FROM plugin_versions WHERE name = 'stock' ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(kept, versions[3..], "the three newest");
    let rollback = app
        .http
        .post(app.url("/plugins/stock/rollback"))
        .send()
        .await
        .unwrap();
    assert_eq!(rollback.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watched_directory_reads_only_regular_files_and_never_hangs() {
    // Arrange
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let app = TestApp::spawn_with(|settings| settings.plugins.dir = Some(path)).await;

    // Act: a FIFO, a symlink to a secret, an oversized file; then a valid plugin.
    nix::unistd::mkfifo(&dir.path().join("fifo.wasm"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", dir.path().join("shadow.wasm")).unwrap();
    std::fs::write(dir.path().join("huge.wasm"), vec![0u8; 33 << 20]).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let staged = dir.path().join(".fine.tmp");
    std::fs::write(&staged, read("sluice_fixture_stock_v2")).unwrap();
    std::fs::rename(&staged, dir.path().join("fine.wasm")).unwrap();

    // Assert: the valid file is installed; the others are not.
    eventually(
        Duration::from_secs(10),
        "fine.wasm to be installed",
        || async {
            let (status, _) = app.get_json("/plugins/fine").await;
            (status == 200).then_some(())
        },
    )
    .await;
    for name in ["fifo", "shadow", "huge"] {
        let (status, _) = app.get_json(&format!("/plugins/{name}")).await;
        assert_eq!(status, 404, "{name} was not installed");
    }
    let stop = Instant::now();
    app.stop().await;
    assert!(
        stop.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        stop.elapsed()
    );
}

fn edge(limits: EdgeLimits) -> impl FnOnce(&mut sluice::config::Settings) {
    move |settings| settings.http_limits = limits
}

/// Read until the server closes the connection; returns what it sent, or `None` after 5 s.
async fn until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received));
    match read.await {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_and_cannot_hold_shutdown() {
    // Arrange
    let app = TestApp::spawn_with(edge(EdgeLimits {
        max_connections: 64,
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(1),
    }))
    .await;

    // Act + Assert: partial headers, an idle connection, a stalled body.
    let started = Instant::now();
    let mut partial = TcpStream::connect(app.addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        until_closed(&mut partial).await.is_some(),
        "partial headers: closed"
    );
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    assert!(until_closed(&mut idle).await.is_some(), "idle: closed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let mut slow_body = TcpStream::connect(app.addr).await.unwrap();
    slow_body
        .write_all(
            b"POST /orders HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"userId\":",
        )
        .await
        .unwrap();
    let answer = until_closed(&mut slow_body)
        .await
        .expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A client that sent a request and reads nothing of a slow answer cannot hold shutdown:
    // one that stays connected mid-request is cut off after the grace period.
    let mut lingering = TcpStream::connect(app.addr).await.unwrap();
    lingering
        .write_all(b"POST /orders HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stop = Instant::now();
    app.stop().await;
    assert!(
        stop.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        stop.elapsed()
    );
    drop(lingering);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_the_rest_still_served() {
    // Arrange
    let app = TestApp::spawn_with(edge(EdgeLimits {
        max_connections: 4,
        header_timeout: Duration::from_secs(10),
        ..EdgeLimits::default()
    }))
    .await;

    // Act: four idle connections hold every slot.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(app.addr).await.unwrap();

    // Assert: the fifth is closed at once; freeing a slot lets a request through.
    assert_eq!(until_closed(&mut fifth).await.as_deref(), Some(""));
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    drop(held);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_and_names_with_control_or_invisible_characters_are_refused() {
    let app = TestApp::spawn().await;
    for (method, path, body, field) in [
        ("GET", "/users/%00/orders", None, "userId"),
        ("GET", "/catalogs/%00", None, "productId"),
        ("GET", "/catalogs/CATALOG-0001%E2%80%8B", None, "productId"),
        (
            "PUT",
            "/catalogs/CATALOG-0001%E2%80%8B",
            Some(json!({"productName": "Berlin", "stock": 1, "unitPrice": 1})),
            "productId",
        ),
        (
            "PUT",
            "/catalogs/CATALOG-0009",
            Some(json!({"productName": "Ber\u{0}lin", "stock": 1, "unitPrice": 1})),
            "productName",
        ),
        (
            "POST",
            "/orders",
            Some(
                json!({"userId": "user\u{0}", "productId": "CATALOG-0001", "quantity": 1, "unitPrice": 1}),
            ),
            "userId",
        ),
        (
            "POST",
            "/orders",
            Some(
                json!({"userId": "u", "productId": "CATALOG-0001\u{202E}", "quantity": 1, "unitPrice": 1}),
            ),
            "productId",
        ),
    ] {
        let mut request = app.http.request(method.parse().unwrap(), app.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 422, "{method} {path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(field),
            "{method} {path}: {body}"
        );
    }
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(products, 3, "nothing was created");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_needs_the_token_or_a_direct_loopback_client() {
    // Loopback access: a request forwarded by a proxy on this host is refused.
    let open = TestApp::spawn().await;
    let forwarded = open
        .http
        .get(open.url("/plugins"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), 401);
    let direct = open
        .http
        .get(open.url("/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    open.stop().await;

    // Token access: the scheme is case-insensitive; dead letters are admin too.
    let token = TestApp::spawn_with(|settings| {
        settings.admin = AdminAccess::Token("t0ken".to_string().into());
    })
    .await;
    for (path, auth, expected) in [
        ("/dead-letters", None, 401),
        ("/dead-letters", Some("bearer t0ken"), 200),
        ("/plugins", Some("BEARER t0ken"), 200),
        ("/plugins", Some("Bearer wrong"), 401),
        ("/catalogs", None, 200),
    ] {
        let mut request = token.http.get(token.url(path));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            expected,
            "{path} {auth:?}"
        );
    }
    token.stop().await;

    let public = TestApp::spawn_with(|settings| {
        settings.admin = AdminAccess::Token("t0ken".to_string().into());
        settings.public_dead_letters = true;
    })
    .await;
    let list = public
        .http
        .get(public.url("/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200, "opened by --public-dead-letters");
    public.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_needs_an_admin_token_unless_told_otherwise() {
    let Stack { broker, db_url, .. } = Stack::start(1).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .env("DATABASE_URL", &db_url)
        .env("SLUICE_KAFKA_BROKERS", broker.bootstrap())
        .env("SLUICE_HTTP_ADDR", "127.0.0.1:0")
        .env_remove("SLUICE_ADMIN_TOKEN")
        .env_remove("SLUICE_ADMIN_OPEN_ON_LOOPBACK")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SLUICE_ADMIN_TOKEN"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_long_plugin_call_at_once_and_records_nothing_for_it() {
    // Arrange: a 30 s deadline and a plugin that loops forever.
    let (broker, topic, db_url, pool) = Stack::start(1).await.into_parts();
    let config = ServeConfig::new(&db_url, broker.bootstrap(), &topic, "sigterm-group")
        .env("SLUICE_PLUGINS", fixture(HOSTILE).display())
        .env("SLUICE_ROUTES", format!("{topic}={HOSTILE}"))
        .env("SLUICE_PLUGIN_TIMEOUT_MS", 30_000);
    let mut process = Serve::spawn(&config, "sigterm");
    process.wait_healthy().await;
    let producer = broker.producer();
    produce(&producer, &topic, "k", b"ok", Some("before")).await;
    workload::wait_processed(&pool, "sigterm-group", 1, Duration::from_secs(10)).await;
    produce(&producer, &topic, "k", b"loop", Some("loop")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Act
    let started = Instant::now();
    let status = process.terminate().await;

    // Assert
    assert!(status.success(), "{status}\n{}", process.log_tail());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exited {:?} after SIGTERM",
        started.elapsed()
    );
    let decided: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM processed_messages ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        decided,
        ["before"],
        "the interrupted call is not an outcome"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_database_needs_its_password() {
    let postgres = tokio::task::spawn_blocking(sluice::dev::EmbeddedPostgres::start)
        .await
        .unwrap()
        .unwrap();
    let url = postgres.url();
    for (password, what) in [(None, "no password"), (Some("guess"), "a wrong password")] {
        let mut other = url::Url::parse(&url).unwrap();
        other.set_password(password).unwrap();
        let refused = sqlx::PgConnection::connect(other.as_str()).await;
        assert!(refused.is_err(), "{what}: no login");
    }
    assert!(sqlx::PgConnection::connect(&url).await.is_ok());
}
