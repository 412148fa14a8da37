//! SQL, and nothing else: each function takes the pool or the caller's transaction.

pub mod catalog;
pub mod dead_letters;
pub mod ingest;
pub mod orders;
pub mod outbox;
pub mod plugins;
pub mod state;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

pub type Tx<'a> = Transaction<'a, Postgres>;

/// The size of the connection pool unless configured.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// Connect and bring the schema up to date.
pub async fn connect_and_migrate(
    url: &secrecy::SecretString,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    use anyhow::Context as _;
    let options: PgConnectOptions = url
        .expose_secret()
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        // A request waits at most this long for a connection: then 503.
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("running database migrations")?;
    Ok(pool)
}
