//! `sluice bench`: measure the ingest flow, the plugin call and the order API on this machine,
//! each beside its baseline in the same run (a native handler of the same logic, the one
//! transaction per message of the original service), and report a table, JSON and a chart.
//!
//! The broker runs in a process of its own and PostgreSQL is a child process (throwaway, or
//! `--database-url`); the host runs here. Progress is read from the host's own counters, never
//! by querying the database under test.

mod broker;
mod measure;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio_util::sync::CancellationToken;

pub use broker::{BrokerArgs, broker_main};
use measure::{Cpu, Processes, percentiles};

use crate::Application;
use crate::config::Settings;
use crate::dev::EmbeddedPostgres;
use crate::runtime::{Plugin, STOCK_PLUGIN, Sandbox, SandboxConfig, bindings, compile};

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
    /// Concurrent connections of the `POST /orders` load.
    #[arg(long, default_value_t = 64)]
    pub http_connections: usize,
    /// Seconds of each HTTP scenario.
    #[arg(long, default_value_t = 10)]
    pub http_seconds: u64,
    /// Orders per second offered for the order → stock latency.
    #[arg(long, default_value_t = 1000)]
    pub latency_rate: u64,
    /// A run of seconds instead of minutes (CI): small sizes, same scenarios.
    #[arg(long)]
    pub smoke: bool,
    /// Run only these scenarios: calls, ingest-wasm, ingest-native, per-message, swaps, http
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

    let topics = [TOPIC, HTTP_TOPIC]
        .iter()
        .flat_map(|t| [t.to_string(), format!("{t}.status"), format!("{t}.DLT")])
        .collect::<Vec<_>>();
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
        ("ingest-wasm", "catch-up ingest, wasm plugin", Load::Wasm),
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
    ];
    for (scenario, what, load) in ingest {
        if wanted(scenario) {
            figures.push(bench.ingest(scenario, what, load).await?);
        }
    }
    if wanted("http") {
        let (post, latency) = bench.http().await?;
        figures.extend([post, latency]);
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
            "wasm / one transaction per message",
            "ingest-wasm",
            "per-message",
        ),
        ("with swaps / without", "swaps", "ingest-wasm"),
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

/// What an ingest scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Wasm,
    Native,
    PerMessage,
    Swaps,
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
        if self.args.brokers.is_some() {
            settings.kafka.consumer_defaults.clear();
        }
        Ok(settings)
    }

    /// The plugin call alone, in a fresh instance as ingest does it, and the native handler.
    fn plugin_calls(&self) -> anyhow::Result<Vec<Figure>> {
        let sandbox = Sandbox::new(SandboxConfig::default())?;
        let component = compile::compile_here(sandbox.engine(), STOCK_PLUGIN)?;
        let wasm = Plugin::load(
            &sandbox,
            "stock",
            crate::runtime::version_of(STOCK_PLUGIN),
            &component,
        )?;
        let native = Plugin::native(&sandbox, "native", native_stock);
        let message = bindings::Message {
            topic: TOPIC.into(),
            partition: 0,
            offset: 0,
            key: Some(b"P-0001".to_vec()),
            payload: broker::event(1, self.args.products).into_bytes(),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        let mut figures = Vec::new();
        for (scenario, what, plugin) in [
            (
                "call-wasm",
                "plugin call: fresh instance + call + validate",
                &wasm,
            ),
            ("call-native", "the same logic as native code", &native),
        ] {
            let start = self.processes.cpu();
            let mut samples = Vec::with_capacity(self.args.plugin_calls);
            let started = Instant::now();
            for _ in 0..self.args.plugin_calls {
                let call = Instant::now();
                plugin
                    .handle(&message)
                    .map_err(|e| anyhow::anyhow!("the benchmark call failed: {e}"))?;
                samples.push(call.elapsed());
            }
            let seconds = started.elapsed().as_secs_f64();
            let (p50, p99) = percentiles(&mut samples);
            figures.push(Figure {
                scenario,
                what: what.into(),
                rate: Some(self.args.plugin_calls as f64 / seconds),
                p50_ms: Some(p50.as_secs_f64() * 1e3),
                p99_ms: Some(p99.as_secs_f64() * 1e3),
                count: self.args.plugin_calls as u64,
                seconds,
                cpu: self.processes.cpu().since(start),
                peak_rss_mib: None,
            });
        }
        Ok(figures)
    }

    /// Every scenario starts from empty bookkeeping tables, as a fresh deployment would.
    async fn clear(&self) -> anyhow::Result<()> {
        sqlx::query(
            "TRUNCATE processed_messages, dead_letters, outbox, orders,
                      consumer_positions",
        )
        .execute(&self.pool)
        .await
        .context("emptying the benchmark tables")?;
        sqlx::query("VACUUM ANALYZE").execute(&self.pool).await?;
        Ok(())
    }

    /// Catch up with the backlog in a fresh consumer group; the rate is counted from the first
    /// commit to the last record.
    async fn ingest(
        &self,
        scenario: &'static str,
        what: &str,
        load: Load,
    ) -> anyhow::Result<Figure> {
        self.clear().await?;
        let target = match load {
            Load::PerMessage => self.args.per_message_events.min(self.args.events),
            Load::Swaps => self.args.events / 2,
            Load::Wasm | Load::Native => self.args.events,
        } as u64;
        let mut settings = self.settings(TOPIC)?;
        match load {
            Load::Native => {
                settings.plugins.native = vec![("stock-native".into(), native_stock)];
                settings.kafka.routes = crate::config::Routes::single(TOPIC, "stock-native");
            }
            Load::PerMessage => settings.ingest.batch_max_messages = 1,
            Load::Wasm | Load::Swaps => {}
        }
        let app = Application::build(settings).await?;
        let health = app.ingest_health();
        let control = app.plugin_control();
        let shutdown = CancellationToken::new();
        measure::reset_peak_rss();
        let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let progress = report::progress(scenario, target);
        let swapper = (load == Load::Swaps).then(|| {
            let token = shutdown.clone();
            tokio::spawn(async move {
                let padded = Arc::new(with_custom_section(STOCK_PLUGIN, "bench-swap"));
                let mut swaps = 0u32;
                loop {
                    tokio::select! {
                        () = token.cancelled() => return swaps,
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                    let bytes = if swaps.is_multiple_of(2) {
                        bytes::Bytes::from(padded.to_vec())
                    } else {
                        bytes::Bytes::from_static(STOCK_PLUGIN)
                    };
                    match control.install("stock", bytes, "bench").await {
                        Ok(_) => swaps += 1,
                        Err(e) => tracing::warn!(error = %e, "benchmark swap failed"),
                    }
                }
            })
        });
        let mut first: Option<(Instant, Cpu, u64)> = None;
        loop {
            let decided = health.decided();
            progress.set_position(decided.min(target));
            if decided > 0 && first.is_none() {
                first = Some((Instant::now(), self.processes.cpu(), decided));
            }
            if decided >= target {
                break;
            }
            if running.is_finished() {
                anyhow::bail!("{scenario}: the app stopped after {decided} of {target} records");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (started, cpu_start, decided_at_start) =
            first.unwrap_or((Instant::now(), Cpu::default(), 0));
        let seconds = started.elapsed().as_secs_f64();
        let cpu = self.processes.cpu().since(cpu_start);
        let peak = measure::peak_rss_mib();
        progress.finish_and_clear();
        shutdown.cancel();
        running.await??;
        let swaps = match swapper {
            Some(task) => Some(task.await?),
            None => None,
        };
        let counted = target - decided_at_start;
        let what = match swaps {
            Some(n) => format!("{what} ({n} swaps)"),
            None => what.to_string(),
        };
        Ok(Figure {
            scenario,
            what,
            rate: Some(counted as f64 / seconds.max(1e-9)),
            p50_ms: None,
            p99_ms: None,
            count: counted,
            seconds,
            cpu,
            peak_rss_mib: peak,
        })
    }

    /// `POST /orders` under load, then order → stock latency at a fixed offered rate.
    async fn http(&self) -> anyhow::Result<(Figure, Figure)> {
        self.clear().await?;
        let settings = self.settings(HTTP_TOPIC)?;
        let group = settings.kafka.group_id.clone();
        let app = Application::build(settings).await?;
        let base = format!("http://{}", app.local_addr()?);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(self.args.http_connections)
            .build()?;
        let body = |i: u64| {
            serde_json::json!({"userId": format!("bench-{}", i % 100), "productId":
                broker::product(i as usize, self.args.products), "quantity": 1, "unitPrice": 1})
        };

        // Closed loop: every connection posts as fast as it is answered.
        measure::reset_peak_rss();
        let start_cpu = self.processes.cpu();
        let started = Instant::now();
        let until = started + Duration::from_secs(self.args.http_seconds);
        let progress = report::progress("http-post", self.args.http_seconds);
        let workers: Vec<_> = (0..self.args.http_connections as u64)
            .map(|w| {
                let (client, url) = (client.clone(), format!("{base}/orders"));
                let body = body(w);
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut failed = 0u64;
                    while Instant::now() < until {
                        let sent = Instant::now();
                        match client.post(&url).json(&body).send().await {
                            Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                                latencies.push(sent.elapsed())
                            }
                            _ => failed += 1,
                        }
                    }
                    (latencies, failed)
                })
            })
            .collect();
        let ticker = {
            let progress = progress.clone();
            tokio::spawn(async move {
                while Instant::now() < until {
                    progress.set_position(started.elapsed().as_secs());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let mut latencies = Vec::new();
        let mut failed = 0;
        for worker in workers {
            let (l, f) = worker.await?;
            latencies.extend(l);
            failed += f;
        }
        ticker.await?;
        progress.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let cpu = self.processes.cpu().since(start_cpu);
        let count = latencies.len() as u64;
        let (p50, p99) = percentiles(&mut latencies);
        let post = Figure {
            scenario: "http-post",
            what: format!(
                "POST /orders, {} connections{}",
                self.args.http_connections,
                if failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                }
            ),
            rate: Some(count as f64 / seconds),
            p50_ms: Some(p50.as_secs_f64() * 1e3),
            p99_ms: Some(p99.as_secs_f64() * 1e3),
            count,
            seconds,
            cpu,
            peak_rss_mib: measure::peak_rss_mib(),
        };

        // Let ingest catch up with the load, then offer a steady rate and time each order
        // from its creation to the commit that applied it.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let from = chrono::Utc::now();
        let start_cpu = self.processes.cpu();
        let started = Instant::now();
        let total = self.args.latency_rate * self.args.http_seconds;
        let mut tick =
            tokio::time::interval(Duration::from_secs_f64(1.0 / self.args.latency_rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let progress = report::progress("latency", total);
        let mut posts = Vec::with_capacity(total as usize);
        for i in 0..total {
            tick.tick().await;
            let (client, url, body) = (client.clone(), format!("{base}/orders"), body(i));
            posts.push(tokio::spawn(async move {
                client.post(&url).json(&body).send().await
            }));
            progress.set_position(i);
        }
        for post in posts {
            post.await??;
        }
        progress.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let cpu = self.processes.cpu().since(start_cpu);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rows: Vec<(f64,)> = sqlx::query_as(
            "SELECT extract(epoch FROM p.processed_at - o.created_at)::float8
             FROM orders o JOIN processed_messages p
               ON p.event_id = o.order_id::text AND p.group_id = $1
             WHERE o.created_at >= $2",
        )
        .bind(&group)
        .bind(from)
        .fetch_all(&self.pool)
        .await?;
        let mut delays: Vec<Duration> = rows
            .into_iter()
            .map(|(s,)| Duration::from_secs_f64(s.max(0.0)))
            .collect();
        let decided = delays.len() as u64;
        let (p50, p99) = percentiles(&mut delays);
        let latency = Figure {
            scenario: "latency",
            what: format!(
                "order → stock applied, {} orders/s offered ({decided} of {total} decided)",
                self.args.latency_rate
            ),
            rate: Some(total as f64 / seconds),
            p50_ms: Some(p50.as_secs_f64() * 1e3),
            p99_ms: Some(p99.as_secs_f64() * 1e3),
            count: decided,
            seconds,
            cpu,
            peak_rss_mib: None,
        };
        shutdown.cancel();
        running.await??;
        Ok((post, latency))
    }
}

/// `component` with a custom section appended: another version (another hash) of the same
/// plugin, for swapping back and forth.
fn with_custom_section(component: &[u8], name: &str) -> Vec<u8> {
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // fits one LEB128 byte: names are short
    out.extend_from_slice(&section);
    out
}
