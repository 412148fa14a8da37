//! `sluice dev`: the whole service in one process with nothing to install: an embedded
//! broker, a throwaway PostgreSQL (unless `DATABASE_URL` is given) and the bundled plugin.

mod broker;
mod postgres;

pub use broker::{EmbeddedKafka, GROUP_HEARTBEAT_INTERVAL_MS, GROUP_SESSION_TIMEOUT_MS};
pub use postgres::{EmbeddedPostgres, postgres_program};

use anyhow::Context as _;
use clap::Args;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::Application;
use crate::config::{CommonArgs, Settings};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Use this PostgreSQL instead of starting a throwaway one.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// SQL run once PostgreSQL is up, before Sluice reads the tables it declares: the team's
    /// tables for `--table` (the throwaway database starts empty each time).
    #[arg(long, env = "SLUICE_DEV_INIT_SQL", value_name = "FILE")]
    pub init_sql: Option<std::path::PathBuf>,

    /// Partitions of the embedded broker's topics.
    #[arg(long, env = "SLUICE_DEV_PARTITIONS", default_value_t = 8)]
    pub partitions: i32,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// The original catalog-service's products, for trying Sluice out (added if missing).
pub async fn seed_demo_catalog(pool: &sqlx::PgPool) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO catalog (product_id, product_name, stock, unit_price) VALUES
             ('CATALOG-0001', 'Berlin', 100, 1500),
             ('CATALOG-0002', 'Tokyo', 110, 1000),
             ('CATALOG-0003', 'Stockholm', 120, 2000)
         ON CONFLICT (product_id) DO NOTHING",
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn run(args: DevArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let kafka = EmbeddedKafka::start(1)?;
    let partitions = args.partitions;

    let (postgres, database_url) = match args.database_url {
        Some(url) => (None, url),
        None => {
            let postgres = tokio::task::spawn_blocking(EmbeddedPostgres::start)
                .await
                .context("starting PostgreSQL")??;
            let url = SecretString::from(postgres.url());
            tracing::info!(port = postgres.port(), "throwaway PostgreSQL started");
            (Some(postgres), url)
        }
    };

    if let Some(file) = &args.init_sql {
        run_init_sql(&database_url, file).await?;
    }
    let settings = Settings::from_args(
        args.common,
        database_url,
        kafka.bootstrap_servers().to_string(),
    )?;
    // The embedded broker cannot create topics on request: make every topic Sluice uses.
    let topics = settings.kafka.topics();
    for topic in &topics {
        kafka.create_topic(topic, partitions)?;
    }
    tracing::info!(
        brokers = kafka.bootstrap_servers(),
        ?topics,
        partitions,
        "embedded Kafka broker started"
    );
    let app = Application::build(settings).await?;
    seed_demo_catalog(app.pool())
        .await
        .context("adding the demo products")?;
    let addr = app.local_addr()?;
    println!(
        "\nsluice dev is running\n  \
         HTTP API       http://{addr}\n  \
         Kafka brokers  {brokers}  (kcat -b {brokers} -L)\n  \
         PostgreSQL     {pg}\n\n\
         Try:\n  \
         curl -s http://{addr}/catalogs\n  \
         curl -s -X POST http://{addr}/orders -H 'content-type: application/json' \\\n       \
         -d '{{\"userId\":\"user-1\",\"productId\":\"CATALOG-0001\",\"quantity\":10,\"unitPrice\":1500}}'\n  \
         curl -s http://{addr}/catalogs/CATALOG-0001\n\n\
         Ctrl-C stops everything{removed}.\n",
        brokers = kafka.bootstrap_servers(),
        pg = postgres
            .as_ref()
            .map_or("from DATABASE_URL".to_string(), |p| format!(
                "{}  (throwaway)",
                p.url()
            )),
        removed = if postgres.is_some() {
            " and removes the throwaway database"
        } else {
            ""
        },
    );

    let result = app.run_until_stopped(shutdown).await;
    drop(postgres);
    drop(kafka);
    result
}

/// `--init-sql`: the file's statements, in one go, on a connection of their own.
async fn run_init_sql(url: &SecretString, file: &std::path::Path) -> anyhow::Result<()> {
    use secrecy::ExposeSecret as _;
    let sql = std::fs::read_to_string(file)
        .with_context(|| format!("reading --init-sql {}", file.display()))?;
    let pool = sqlx::PgPool::connect(url.expose_secret())
        .await
        .context("connecting to PostgreSQL for --init-sql")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&pool)
        .await
        .with_context(|| format!("running --init-sql {}", file.display()))?;
    pool.close().await;
    tracing::info!(file = %file.display(), "--init-sql ran");
    Ok(())
}
