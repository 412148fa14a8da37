//! `sluice bench`: measure the ingest flow end to end on this machine (embedded broker,
//! throwaway PostgreSQL, the bundled stock plugin), and the plugin call on its own.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::Application;
use crate::config::{IngestSettings, KafkaSettings, PluginSettings, Settings};
use crate::dev::{EmbeddedKafka, EmbeddedPostgres};
use crate::runtime::{Plugin, STOCK_PLUGIN, Sandbox, SandboxConfig, bindings, compile};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Order events to push through the ingest flow.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Partitions of the benchmark topic (the embedded broker keeps ≤ 5 MiB per partition).
    #[arg(long, default_value_t = 32)]
    pub partitions: i32,
    /// Records per database transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch_max_messages: usize,
    /// Plugin calls for the plugin-only measurement.
    #[arg(long, default_value_t = 20_000)]
    pub plugin_calls: usize,
    /// Use this PostgreSQL instead of a throwaway one (a scratch database: it gets products).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,
}

const PRODUCTS: usize = 100;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    println!(
        "sluice bench ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    plugin_calls(args.plugin_calls)?;

    let kafka = EmbeddedKafka::start(1)?;
    let topic = "bench-orders";
    for t in [topic, "bench-status", "bench-orders.DLT"] {
        kafka.create_topic(t, args.partitions)?;
    }
    let postgres = match &args.database_url {
        Some(_) => None,
        None => Some(tokio::task::spawn_blocking(EmbeddedPostgres::start).await??),
    };
    let url = match (&args.database_url, &postgres) {
        (Some(url), _) => url.clone(),
        (None, Some(pg)) => SecretString::from(pg.url()),
        (None, None) => unreachable!("a database is either given or started"),
    };
    let pool = crate::db::connect_and_migrate(&url, 4).await?;
    sqlx::query(
        "INSERT INTO catalog (product_id, product_name, stock, unit_price)
         SELECT 'BENCH-' || i, 'bench', 1000000000, 1 FROM generate_series(1, $1) AS i
         ON CONFLICT (product_id) DO UPDATE SET stock = 1000000000",
    )
    .bind(PRODUCTS as i32)
    .execute(&pool)
    .await
    .context("adding benchmark products")?;

    let produce_started = Instant::now();
    produce(kafka.bootstrap_servers(), topic, args.events).await?;
    let produce_rate = args.events as f64 / produce_started.elapsed().as_secs_f64();

    let group = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let settings = Settings {
        http_addr: "127.0.0.1:0".parse()?,
        database_url: url,
        db_max_connections: 4,
        kafka: KafkaSettings {
            brokers: kafka.bootstrap_servers().to_string(),
            group_id: group.clone(),
            topic: topic.into(),
            status_topic: "bench-status".into(),
            dead_letter_suffix: ".DLT".into(),
            orders_group_id: format!("{group}-orders"),
            routes: vec![(topic.into(), "stock".into())],
            options: Vec::new(),
            consumer_defaults: crate::dev::embedded_broker_consumer_defaults(),
        },
        ingest: IngestSettings {
            batch_max_messages: args.batch_max_messages,
            batch_max_wait: Duration::from_millis(20),
            dedupe_retention: Duration::from_secs(3600),
            dedupe_sweep_interval: crate::config::DEDUPE_SWEEP_INTERVAL,
        },
        sandbox: SandboxConfig::default(),
        plugins: PluginSettings {
            paths: Vec::new(),
            dir: None,
            compiler: crate::runtime::Compiler::this_binary(),
            compile_limits: crate::runtime::CompileLimits::default(),
            versions_kept: 10,
        },
        admin: crate::config::AdminAccess::Loopback,
        public_dead_letters: false,
        http_limits: crate::http::EdgeLimits::default(),
    };
    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let mut first_at = None;
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM processed_messages WHERE group_id = $1")
                .bind(&group)
                .fetch_one(&pool)
                .await?;
        if done > 0 && first_at.is_none() {
            first_at = Some(started.elapsed());
        }
        if done as usize >= args.events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    let steady = total - first_at.unwrap_or_default();
    shutdown.cancel();
    running.await??;
    println!(
        "ingest: {} events on {} partitions, batches of ≤ {}: {:.1} s after the first commit \
         ({:.0} events/s; {:.1} s to join the group and commit the first batch)",
        args.events,
        args.partitions,
        args.batch_max_messages,
        steady.as_secs_f64(),
        args.events as f64 / steady.as_secs_f64(),
        first_at.unwrap_or_default().as_secs_f64(),
    );
    println!("produce (setup): {produce_rate:.0} events/s");
    drop(postgres);
    Ok(())
}

/// The plugin call alone: a fresh instance per call, as ingest does it.
fn plugin_calls(calls: usize) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let compile_started = Instant::now();
    let component = compile::compile_here(sandbox.engine(), STOCK_PLUGIN)?;
    let plugin = Plugin::load(
        &sandbox,
        "stock",
        crate::runtime::version_of(STOCK_PLUGIN),
        &component,
    )?;
    let compiled_in = compile_started.elapsed();
    let message = bindings::Message {
        topic: "bench".into(),
        partition: 0,
        offset: 0,
        key: Some(b"BENCH-1".to_vec()),
        payload: event(0).into_bytes(),
        headers: Vec::new(),
        timestamp_ms: None,
    };
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        plugin.handle(&message)?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let median = samples.get(samples.len() / 2).copied().unwrap_or_default();
    let p99 = samples
        .get(samples.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    println!(
        "plugin: compile + link + self-test {:.0} ms; call with a fresh instance: median {:.1} µs, \
         p99 {:.1} µs ({calls} calls)",
        compiled_in.as_secs_f64() * 1000.0,
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    Ok(())
}

fn event(i: usize) -> String {
    let quantity = 1 + i % 10;
    format!(
        r#"{{"orderId":"bench-{i}","userId":"bench","productId":"BENCH-{}","quantity":{quantity},"unitPrice":1,"totalPrice":{quantity},"createdAt":"2026-11-25T00:00:00.000Z"}}"#,
        1 + i % PRODUCTS
    )
}

async fn produce(brokers: &str, topic: &str, events: usize) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()?;
    for chunk in (0..events).collect::<Vec<_>>().chunks(5_000) {
        let records: Vec<(String, String, String)> = chunk
            .iter()
            .map(|&i| {
                (
                    format!("BENCH-{}", 1 + i % PRODUCTS),
                    event(i),
                    format!("bench-{i}"),
                )
            })
            .collect();
        let sends = records.iter().map(|(key, payload, id)| {
            let headers = OwnedHeaders::new().insert(Header {
                key: crate::domain::EVENT_ID_HEADER,
                value: Some(id.as_bytes()),
            });
            producer.send(
                FutureRecord::to(topic)
                    .key(key)
                    .payload(payload)
                    .headers(headers),
                Duration::from_secs(30),
            )
        });
        for result in join_all(sends).await {
            result
                .map_err(|(e, _)| e)
                .context("producing a benchmark event")?;
        }
    }
    Ok(())
}
