//! Test harness: real PostgreSQL (a fresh database per test) and a real Kafka-protocol broker
//! (librdkafka's mock cluster on loopback TCP, or `SLUICE_TEST_KAFKA_BROKERS`), with the app
//! driven from outside over HTTP and Kafka.
#![allow(dead_code)] // not every scenario uses every part of the harness

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use secrecy::SecretString;
use sluice::config::Settings;
use sluice::dev::{EmbeddedKafka, EmbeddedPostgres};
use sluice::runtime::SandboxConfig;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

pub mod components;
pub mod kills;
pub mod process;
pub mod workload;

pub const PARTITIONS: i32 = 4;

/// A plugin component built by host/build.rs (`sluice_plugin_stock`, `sluice_fixture_hostile`,
/// `sluice_fixture_stock_v2`, `sluice_fixture_wrong_world`, `sluice_fixture_failing_self_test`).
pub fn fixture(stem: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("SLUICE_FIXTURES_DIR")).join(format!("{stem}.wasm"))
}

/// The component of a Python or JavaScript plugin (`dir` relative to the repository root),
/// built with `sluice plugin build` when it is missing or older than a source file. Tests
/// building the same plugin take turns (a lock file beside it). Fails by name when the tools
/// are missing: `scripts/setup --test` installs them.
pub fn interpreted(dir: &str) -> std::path::PathBuf {
    use std::time::SystemTime;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root
        .join(dir)
        .canonicalize()
        .expect("the plugin directory exists");
    let stem = dir.file_name().unwrap().to_string_lossy().replace('-', "_");
    let out = dir.join("build").join(format!("{stem}.wasm"));
    std::fs::create_dir_all(dir.join("build")).unwrap();
    let lock = std::fs::File::create(dir.join("build/.lock")).unwrap();
    lock.lock().unwrap();
    let modified = |p: &std::path::Path| p.metadata().and_then(|m| m.modified()).ok();
    let newest_source = ["app.py", "plugin.js"]
        .iter()
        .map(|f| dir.join(f))
        .chain([
            root.join("plugins/python/sluice_plugin.py"),
            root.join("plugins/js/sluice.js"),
        ])
        .filter_map(|p| modified(&p))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if modified(&out).is_none_or(|built| built < newest_source) {
        // Where scripts/setup --test installs the tools.
        let mut path = std::ffi::OsString::from(root.join("target/plugin-venv/bin"));
        path.push(":");
        path.push(root.join("plugins/js/node_modules/.bin"));
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["plugin", "build"])
            .arg(&dir)
            .env("PATH", path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "sluice plugin build {} failed (scripts/setup --test installs the tools):\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    out
}

/// Logs go through the test harness's capture (shown for failing tests); `RUST_LOG` filters.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,librdkafka=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The PostgreSQL server of this test binary: `DATABASE_URL`, or one throwaway cluster
/// started on first use and stopped when the process exits.
fn admin_url() -> &'static str {
    static SERVER: OnceLock<(String, Option<EmbeddedPostgres>)> = OnceLock::new();
    let (url, _) = SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let server = EmbeddedPostgres::start().expect("starting a throwaway PostgreSQL");
            (server.url(), Some(server))
        }
    });
    url
}

/// A new database on the test server, migrated, with the demo catalog (CATALOG-0001..3);
/// returns its URL.
pub async fn fresh_database() -> String {
    let url = empty_database().await;
    let pool = sluice::db::connect_and_migrate(&SecretString::from(url.clone()), 1)
        .await
        .expect("migrating the test database");
    sluice::dev::seed_demo_catalog(&pool)
        .await
        .expect("adding the demo catalog");
    pool.close().await;
    url
}

/// A new, empty database on the test server; returns its URL.
pub async fn empty_database() -> String {
    let admin = admin_url();
    let name = format!("sluice_test_{}", Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(admin)
        .await
        .expect("connecting to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("creating the test database");
    conn.close().await.ok();
    let mut url = url::Url::parse(admin).expect("admin URL parses");
    url.set_path(&name);
    url.to_string()
}

/// The broker a test talks to.
pub struct Broker {
    embedded: Option<EmbeddedKafka>,
    /// A standalone broker's process (its stdin: it stops when this closes it).
    standalone: Option<std::process::Child>,
    bootstrap: String,
}

impl Broker {
    /// An embedded mock cluster of its own, or the external `SLUICE_TEST_KAFKA_BROKERS`.
    pub fn start() -> Self {
        match std::env::var("SLUICE_TEST_KAFKA_BROKERS") {
            Ok(bootstrap) => Self {
                embedded: None,
                standalone: None,
                bootstrap,
            },
            Err(_) => Self::start_embedded(),
        }
    }

    /// An embedded mock cluster, whatever the environment says.
    pub fn start_embedded() -> Self {
        let kafka = EmbeddedKafka::start(1).expect("starting the embedded broker");
        // A killed member gives up its partitions quickly.
        kafka.set_group_timeouts(3000, 300);
        Self {
            bootstrap: kafka.bootstrap_servers().to_string(),
            embedded: Some(kafka),
            standalone: None,
        }
    }

    /// A standalone broker in a process of its own (`host/tests/brokers/mock_cluster.py`:
    /// librdkafka 2.16's mock cluster, three brokers, hosted by Python's confluent-kafka, which
    /// `scripts/setup --test` installs): another broker version than the host's client, with a
    /// Kafka broker's defaults (topics created by their first produce, 4 partitions; a new
    /// group's first rebalance delayed 3 s; the consumer group protocol's 45 s session timeout).
    pub fn start_standalone() -> Self {
        use std::io::BufRead as _;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = root.join("target/e2e-venv/bin/python3");
        assert!(
            python.exists(),
            "{} is missing: scripts/setup --test installs it",
            python.display()
        );
        let mut child = std::process::Command::new(python)
            .arg(root.join("host/tests/brokers/mock_cluster.py"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("starting the standalone broker");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut line)
            .expect("reading the standalone broker's address");
        assert!(
            !line.trim().is_empty(),
            "the standalone broker printed no address"
        );
        Self {
            embedded: None,
            standalone: Some(child),
            bootstrap: line.trim().to_string(),
        }
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn embedded(&self) -> Option<&EmbeddedKafka> {
        self.embedded.as_ref()
    }

    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        if let Some(kafka) = &self.embedded {
            return kafka
                .create_topic(topic, partitions)
                .expect("creating topic");
        }
        if self.standalone.is_some() {
            // The mock cluster has no CreateTopics: a producer's metadata request creates the
            // topic, with the broker's default partition count.
            let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &self.bootstrap)
                .create()
                .expect("a producer");
            let topic = topic.to_string();
            tokio::task::spawn_blocking(move || {
                use rdkafka::producer::Producer as _;
                producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(10))
                    .expect("the standalone broker creates the topic")
            })
            .await
            .expect("creating a topic");
            return;
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client");
        let topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .expect("create_topics");
        for result in results {
            result.expect("topic created");
        }
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "0")
            .create()
            .expect("test producer")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.standalone.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What most failure tests start from: a broker with the order topics, and a fresh, migrated
/// database the test can read.
pub struct Stack {
    pub broker: Broker,
    pub topic: String,
    pub db_url: String,
    pub pool: PgPool,
}

impl Stack {
    pub async fn start(partitions: i32) -> Self {
        Self::start_on(Broker::start(), partitions).await
    }

    /// The same on an embedded broker even when `SLUICE_TEST_KAFKA_BROKERS` is set: for tests
    /// that inject broker faults, which only the embedded broker can do.
    pub async fn start_embedded(partitions: i32) -> Self {
        Self::start_on(Broker::start_embedded(), partitions).await
    }

    /// (broker, topic, database URL, pool).
    pub fn into_parts(self) -> (Broker, String, String, PgPool) {
        (self.broker, self.topic, self.db_url, self.pool)
    }

    async fn start_on(broker: Broker, partitions: i32) -> Self {
        init_logging();
        let topic = format!("orders-{}", Uuid::new_v4().simple());
        create_topics_with(&broker, &topic, partitions).await;
        let db_url = fresh_database().await;
        let pool = sluice::db::connect_and_migrate(&SecretString::from(db_url.clone()), 3)
            .await
            .expect("migrating the test database");
        Self {
            broker,
            topic,
            db_url,
            pool,
        }
    }
}

/// A loopback address nothing listens on: a broker that cannot be reached.
pub fn closed_port_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().expect("bound address");
    drop(listener);
    address.to_string()
}

/// GET `url` as JSON.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON body")
}

/// The order topic and its status and dead-letter topics.
pub async fn create_topics(broker: &Broker, topic: &str) {
    create_topics_with(broker, topic, PARTITIONS).await;
}

pub async fn create_topics_with(broker: &Broker, topic: &str, partitions: i32) {
    broker.create_topic(topic, partitions).await;
    broker
        .create_topic(&format!("{topic}.status"), partitions)
        .await;
    broker
        .create_topic(&format!("{topic}.DLT"), partitions)
        .await;
}

/// Produce one raw record, waiting for the broker's ack.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    event_id: Option<&str>,
) {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(id) = event_id {
        record = record.headers(OwnedHeaders::new().insert(Header {
            key: sluice::domain::EVENT_ID_HEADER,
            value: Some(id.as_bytes()),
        }));
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("producing a test record");
}

/// The app's settings for a test: the command line's defaults (`Settings::local`) with the
/// test's database, broker, topic and group, small batches, and the sluice binary as compiler.
pub fn settings(db_url: &str, broker: &Broker, topic: &str, group: &str) -> Settings {
    let mut settings =
        Settings::local(db_url, broker.bootstrap(), topic).expect("the default settings");
    settings.db_max_connections = 5;
    settings.kafka.group_id = group.to_string();
    settings.kafka.orders_group_id = format!("{group}-orders");
    settings.ingest.batch_max_messages = 500;
    settings.ingest.batch_max_wait = Duration::from_millis(10);
    settings.ingest.dedupe_retention = Duration::from_secs(3600);
    settings.ingest.plugin_threads = 2;
    // The environment's isolation setting stays: scripts/test runs the guarantee and hostile
    // tests again with SLUICE_PLUGIN_ISOLATION=record.
    settings.sandbox = SandboxConfig {
        isolation: settings.sandbox.isolation.clone(),
        ..SandboxConfig::default()
    };
    settings.admin = sluice::http::AdminAccess::Loopback;
    settings.public_dead_letters = false;
    // The app runs inside the test binary: compile in a `sluice` child process.
    settings.plugins.compiler =
        sluice::runtime::Compiler::Child(env!("CARGO_BIN_EXE_sluice").into());
    settings
}

/// The app running in-process on a port of its own, with its own database, topic and group.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub db_url: String,
    pub broker: Arc<Broker>,
    pub topic: String,
    pub group: String,
    relay_wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    /// A test that fails (panics) drops its app without `stop()`: this stops the app then,
    /// so the failure is reported instead of the test runtime waiting on ingest forever.
    _stop_on_drop: DropGuard,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        init_logging();
        let broker = Arc::new(Broker::start());
        let topic = format!("orders-{}", Uuid::new_v4().simple());
        let group = format!("group-{}", Uuid::new_v4().simple());
        create_topics(&broker, &topic).await;
        let db_url = fresh_database().await;
        let mut settings = settings(&db_url, &broker, &topic, &group);
        configure(&mut settings);
        // Topics the configuration adds (routes, the topics a route may emit to).
        let made = [
            topic.clone(),
            format!("{topic}.status"),
            format!("{topic}.DLT"),
        ];
        for extra in settings.kafka.topics() {
            if !made.contains(&extra) {
                broker.create_topic(&extra, PARTITIONS).await;
            }
        }

        let app = sluice::Application::build(settings)
            .await
            .expect("building the app");
        let addr = app.local_addr().expect("bound address");
        let pool = app.pool().clone();
        let relay_wake = app.relay_wake();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            addr,
            http: reqwest::Client::new(),
            pool,
            db_url,
            broker,
            topic,
            group,
            relay_wake,
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Nudge the outbox relay, as an order commit does (it also polls every second).
    pub fn relay_wake(&self) {
        self.relay_wake.notify_one();
    }

    pub async fn post_order(&self, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/orders"))
            .json(&body)
            .send()
            .await
            .expect("POST /orders")
    }

    /// PUT `body` to `path`: the status and the JSON answer (`null` if none).
    pub async fn put(&self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let response = self
            .http
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// POST to `path` with no body: the status and the JSON answer (`null` if none).
    pub async fn post(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.http.post(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// The `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// Stock of every product, via the HTTP API.
    pub async fn stock(&self) -> HashMap<String, i64> {
        let (status, body) = self.get_json("/catalogs").await;
        assert_eq!(status, 200);
        body.as_array()
            .expect("array of products")
            .iter()
            .map(|p| {
                (
                    p["productId"].as_str().expect("productId").to_string(),
                    p["stock"].as_i64().expect("stock"),
                )
            })
            .collect()
    }

    /// Messages the ingest flow has decided.
    pub async fn processed_count(&self) -> i64 {
        processed(&self.pool).await
    }

    /// Wait until `processed_count` reaches `n`, or fail after `timeout`.
    pub async fn wait_processed(&self, n: i64, timeout: Duration) {
        let started = Instant::now();
        loop {
            let count = self.processed_count().await;
            if count >= n {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "only {count} of {n} messages processed after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        (&mut self.task)
            .await
            .expect("app task joins")
            .expect("app stops cleanly");
    }
}

/// Records of `topic` decided (any outcome), in the database at `pool`.
pub async fn processed_on(pool: &PgPool, topic: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM processed_messages WHERE topic = $1")
        .bind(topic)
        .fetch_one(pool)
        .await
        .expect("counting processed messages")
}

/// Records decided (any outcome), in the database at `pool`.
pub async fn processed(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM processed_messages")
        .fetch_one(pool)
        .await
        .expect("counting processed messages")
}

/// A product's stock, read from the database.
pub async fn stock_of(pool: &PgPool, product: &str) -> i64 {
    sqlx::query_scalar("SELECT stock FROM catalog WHERE product_id = $1")
        .bind(product)
        .fetch_one(pool)
        .await
        .expect("reading a product's stock")
}

/// Wait until the order at `url` (`.../orders/{id}`) has `status`; returns it.
pub async fn wait_for_order(
    client: &reqwest::Client,
    url: &str,
    status: &str,
) -> serde_json::Value {
    eventually(
        Duration::from_secs(30),
        &format!("the order to be {status}"),
        || async {
            let order: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
            (order["status"] == status).then_some(order)
        },
    )
    .await
}

/// Up to `n` records of `topic` (every partition, from the beginning), within 15 s.
pub async fn read_topic(bootstrap: &str, topic: &str, n: usize) -> Vec<sluice::domain::Consumed> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "4000000")
        .create()
        .expect("a test consumer");
    consumer.subscribe(&[topic]).expect("subscribing");
    tokio::task::spawn_blocking(move || {
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while records.len() < n && Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                records.push(sluice::kafka::consumed(&message));
            }
        }
        records
    })
    .await
    .expect("reading the topic")
}

/// In a `/metrics` exposition, the value of the sample `name{labels…}` whose labels include every pair of `labels`.
pub fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_part, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| label_part.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

/// Poll `check` until it returns `Some`, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
