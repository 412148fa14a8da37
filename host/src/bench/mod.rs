//! `sluice bench`: measure the ingest flow, the plugin call and the order API on this machine,
//! each beside its baseline in the same run (a native handler of the same logic, the one
//! transaction per message of the original service), and report a table, JSON and a chart.
//!
//! The broker runs in a process of its own and PostgreSQL is a child process (throwaway, or
//! `--database-url`); the host runs here. Progress is read from the host's own counters, never
//! by querying the database under test.

mod broker;
mod calls;
mod http;
mod ingest;
mod measure;
mod report;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};

pub use broker::{BrokerArgs, broker_main};
use ingest::Load;
use measure::{Cpu, Processes, Statement};

use crate::config::Settings;
use crate::dev::EmbeddedPostgres;
use crate::runtime::{Isolation, bindings};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Order events in the backlog ingest catches up with.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Partitions of the benchmark topics (the embedded broker keeps ≤ 5 MiB per partition).
    #[arg(long, default_value_t = 64)]
    pub partitions: i32,
    /// Products the events spread over.
    #[arg(long, default_value_t = 1000)]
    pub products: usize,
    /// Events decided one transaction per message (the original service's style).
    #[arg(long, default_value_t = 20_000)]
    pub per_message_events: usize,
    /// Plugin calls timed on their own.
    #[arg(long, default_value_t = 20_000)]
    pub plugin_calls: usize,
    /// The component the call scenarios time [default: the bundled stock plugin].
    #[arg(long, value_name = "FILE")]
    pub component: Option<PathBuf>,
    /// The Python stock plugin the `call-python` scenarios time.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "plugins/python/stock/build/stock.wasm"
    )]
    pub python_component: PathBuf,
    /// The JavaScript stock plugin the `call-js` scenarios time.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "plugins/js/stock/build/stock.wasm"
    )]
    pub js_component: PathBuf,
    /// Calls per instance in batch isolation's call scenario.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Concurrent connections of the `POST /orders` load.
    #[arg(long, default_value_t = 64)]
    pub http_connections: usize,
    /// Seconds of each HTTP scenario (`POST /orders` and pgbench each get this much in all).
    #[arg(long, default_value_t = 15)]
    pub http_seconds: u64,
    /// Turns `POST /orders` and pgbench take, one after the other, within their seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_rounds: u64,
    /// Orders per second offered for the order → stock latency.
    #[arg(long, default_value_t = 1000)]
    pub latency_rate: u64,
    /// A run of seconds instead of minutes (CI): small sizes, same scenarios.
    #[arg(long)]
    pub smoke: bool,
    /// Run only these scenarios: calls, ingest-wasm, ingest-wasm-record, ingest-native,
    /// per-message, swaps, ingest-emit-state, ingest-tables, http
    /// (ratios need both of their scenarios).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// An external Kafka instead of the embedded broker (the events are produced first).
    #[arg(long)]
    pub brokers: Option<String>,
    /// An external PostgreSQL instead of a throwaway one (a scratch database: it gets
    /// benchmark products and rows).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
    /// Where the JSON results and the chart go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

/// One measured scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub what: String,
    /// Events (or requests) per second.
    pub rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub count: u64,
    pub seconds: f64,
    pub cpu: Cpu,
    pub peak_rss_mib: Option<f64>,
    /// What PostgreSQL ran for it, most time first (ingest scenarios).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statements: Vec<Statement>,
}

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub struct Results {
    pub build: &'static str,
    pub machine: String,
    pub events: usize,
    pub partitions: i32,
    pub products: usize,
    pub figures: Vec<Figure>,
    pub ratios: Vec<(String, f64)>,
}

const TOPIC: &str = "bench-orders";
const HTTP_TOPIC: &str = "bench-http";

pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.smoke {
        args.events = args.events.min(20_000);
        args.per_message_events = args.per_message_events.min(300);
        args.plugin_calls = args.plugin_calls.min(2_000);
        args.http_seconds = args.http_seconds.min(2);
        args.http_rounds = args.http_rounds.min(2);
        args.partitions = args.partitions.min(8);
        args.products = args.products.min(100);
    }
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "sluice bench ({build} build): {} events, {} partitions, {} products",
        args.events, args.partitions, args.products
    );

    let (postgres, url) = match &args.database_url {
        Some(url) => (None, url.clone()),
        None => {
            let pg = tokio::task::spawn_blocking(EmbeddedPostgres::start).await??;
            let url = SecretString::from(pg.url());
            (Some(pg), url)
        }
    };
    let pool = crate::db::connect_and_migrate(&url, 4).await?;
    seed_products(&pool, args.products).await?;

    // Each scenario's topics, named as its settings name them.
    let mut topics = Vec::new();
    for topic in [TOPIC, HTTP_TOPIC] {
        topics.extend(
            Settings::local(url.expose_secret(), "", topic)?
                .kafka
                .topics(),
        );
    }
    topics.push(ingest::ALERTS_TOPIC.to_string());
    let (brokers, broker_process) = match &args.brokers {
        Some(brokers) => {
            println!("producing {} events to {brokers} ...", args.events);
            let (b, n, p) = (brokers.clone(), args.events, args.products);
            tokio::task::spawn_blocking(move || broker::fill(&b, TOPIC, n, p)).await??;
            (brokers.clone(), None)
        }
        None => {
            let (brokers, child) = start_broker(&args, &topics).await?;
            (brokers, Some(child))
        }
    };
    let processes = Processes {
        postmaster: postgres.as_ref().and_then(EmbeddedPostgres::server_pid),
        broker: broker_process.as_ref().and_then(tokio::process::Child::id),
    };
    let bench = Bench {
        args: &args,
        url,
        brokers,
        processes,
        pool,
    };

    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut figures = Vec::new();
    if wanted("calls") {
        figures.extend(bench.plugin_calls()?);
    }
    let ingest = [
        (
            "ingest-wasm",
            "catch-up ingest, wasm plugin, batch isolation (the default)",
            Load::Wasm(Isolation::Batch),
        ),
        (
            "ingest-wasm-record",
            "catch-up ingest, wasm plugin, record isolation",
            Load::Wasm(Isolation::Record),
        ),
        (
            "ingest-native",
            "catch-up ingest, native handler",
            Load::Native,
        ),
        (
            "per-message",
            "one transaction per message (the original's style)",
            Load::PerMessage,
        ),
        ("swaps", "catch-up ingest, hot swap every 2 s", Load::Swaps),
        (
            "ingest-emit-state",
            "catch-up ingest, velocity example (contract 0.2): stock, state and one emitted record per order",
            Load::EmitAndState,
        ),
        (
            "ingest-tables",
            "catch-up ingest, read-model example (contract 0.3): stock, one upsert and one add per order",
            Load::Tables,
        ),
    ];
    for (scenario, what, load) in ingest {
        if wanted(scenario) {
            figures.push(bench.ingest(scenario, what, load).await?);
        }
    }
    if wanted("http") {
        figures.extend(bench.http().await?);
    }
    let rate = |scenario: &str| {
        figures
            .iter()
            .find(|f| f.scenario == scenario)
            .and_then(|f| f.rate)
    };
    let ratios = [
        ("wasm / native handler", "ingest-wasm", "ingest-native"),
        (
            "record isolation / batch isolation",
            "ingest-wasm-record",
            "ingest-wasm",
        ),
        (
            "wasm / one transaction per message",
            "ingest-wasm",
            "per-message",
        ),
        ("with swaps / without", "swaps", "ingest-wasm"),
        (
            "emit + state / stock only",
            "ingest-emit-state",
            "ingest-wasm",
        ),
        ("tables / stock only", "ingest-tables", "ingest-wasm"),
        ("POST /orders / pgbench", "http-post", "pgbench"),
    ]
    .into_iter()
    .filter_map(|(what, a, b)| Some((what.to_string(), rate(a)? / rate(b)?)))
    .collect();
    let results = Results {
        build,
        machine: report::machine(),
        events: args.events,
        partitions: args.partitions,
        products: args.products,
        figures,
        ratios,
    };
    report::print(&results);
    report::write(&results, &args.out)?;
    drop(broker_process);
    drop(postgres);
    Ok(())
}

async fn seed_products(pool: &sqlx::PgPool, products: usize) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO catalog (product_id, product_name, stock, unit_price)
         SELECT 'P-' || lpad(i::text, 4, '0'), 'bench', 1000000000000, 1
         FROM generate_series(0, $1 - 1) AS i
         ON CONFLICT (product_id) DO UPDATE SET stock = 1000000000000",
    )
    .bind(products as i32)
    .execute(pool)
    .await
    .context("adding benchmark products")?;
    Ok(())
}

/// Start `sluice bench-broker` and wait for its topics to be filled.
async fn start_broker(
    args: &BenchArgs,
    topics: &[String],
) -> anyhow::Result<(String, tokio::process::Child)> {
    println!(
        "starting the broker and producing {} events ...",
        args.events
    );
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("bench-broker")
        .args(["--partitions", &args.partitions.to_string()])
        .args(["--topics", &topics.join(",")])
        .args(["--fill", TOPIC])
        .args(["--events", &args.events.to_string()])
        .args(["--products", &args.products.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the benchmark broker")?;
    let stdout = child.stdout.take().context("the broker's output")?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(brokers) = line.strip_prefix("READY ") {
            return Ok((brokers.to_string(), child));
        }
    }
    anyhow::bail!("the benchmark broker stopped before it was ready")
}

struct Bench<'a> {
    args: &'a BenchArgs,
    url: SecretString,
    brokers: String,
    processes: Processes,
    pool: sqlx::PgPool,
}

/// The stock plugin's logic, compiled into the host: the baseline for the sandbox.
fn native_stock(
    message: &bindings::Message,
) -> Result<Vec<bindings::Mutation>, bindings::HandlerError> {
    let order = sluice_order_event::parse_order(&message.payload)
        .map_err(bindings::HandlerError::InvalidMessage)?;
    Ok(vec![bindings::Mutation::StockAdjustment(
        bindings::StockAdjustment {
            product_id: order.product_id,
            delta: -order.quantity,
        },
    )])
}

impl Bench<'_> {
    fn settings(&self, topic: &str) -> anyhow::Result<Settings> {
        let mut settings = Settings::local(self.url.expose_secret(), &self.brokers, topic)?;
        settings.kafka.group_id = format!("bench-{}", uuid::Uuid::new_v4().simple());
        settings.kafka.orders_group_id = format!("{}-orders", settings.kafka.group_id);
        Ok(settings)
    }

    /// Every scenario starts from empty bookkeeping tables, as a fresh deployment would.
    async fn clear(&self) -> anyhow::Result<()> {
        sqlx::query(
            "TRUNCATE processed_records, processed_batches, processed_events, dead_letters,
                      outbox, orders, consumer_positions, plugin_state",
        )
        .execute(&self.pool)
        .await
        .context("emptying the benchmark tables")?;
        sqlx::query("VACUUM ANALYZE").execute(&self.pool).await?;
        // The earlier scenarios' WAL checkpointed now rather than during this one (whose first
        // write to each page after a checkpoint would log the whole page). Needs superuser or
        // pg_checkpoint on an external database; without it the scenario runs anyway.
        if let Err(e) = sqlx::query("CHECKPOINT").execute(&self.pool).await {
            eprintln!(
                "bench: CHECKPOINT refused ({e}); figures may include earlier scenarios' checkpoint"
            );
        }
        Ok(())
    }
}
