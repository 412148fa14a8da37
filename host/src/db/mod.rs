//! SQL, and nothing else: each function takes the pool or the caller's transaction.

pub mod catalog;
pub mod dead_letters;
pub mod ingest;
pub mod orders;
pub mod outbox;
pub mod plugins;
pub mod state;
pub mod tables;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool, Postgres, Transaction};

/// Sluice's own schema: the migrations in `host/migrations`, run at every start.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub type Tx<'a> = Transaction<'a, Postgres>;

/// The size of the connection pool unless configured.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// Why the database could not be connected to or brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// It does not answer, is starting or shutting down, or has no connection to spare:
    /// waiting may fix it.
    #[error("PostgreSQL is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A bad URL, refused credentials, no such database, a failed migration: waiting will not
    /// fix it.
    #[error(transparent)]
    Refused(anyhow::Error),
}

impl ConnectError {
    fn classify(e: sqlx::Error, what: &'static str) -> Self {
        if is_unavailable(&e) {
            Self::Unavailable(e)
        } else {
            Self::Refused(anyhow::Error::new(e).context(what))
        }
    }
}

/// Whether `e` says the server is away rather than that it refused: no connection, a server
/// starting up or shutting down (SQLSTATE class 57), out of connections (53), a connection
/// exception (08).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("57") || c.starts_with("53") || c.starts_with("08")),
        _ => false,
    }
}

/// Connect and bring the schema up to date.
pub async fn connect_and_migrate(
    url: &secrecy::SecretString,
    max_connections: u32,
) -> Result<PgPool, ConnectError> {
    use anyhow::Context as _;
    let options: PgConnectOptions = url
        .expose_secret()
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")
        .map_err(ConnectError::Refused)?;
    // One connection first, for its error: a pool that cannot connect says only that it
    // timed out.
    let probe = PgConnection::connect_with(&options)
        .await
        .map_err(|e| ConnectError::classify(e, "connecting to PostgreSQL"))?;
    let _ = probe.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        // A request waits at most this long for a connection: then 503.
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_with(options)
        .await
        .map_err(|e| ConnectError::classify(e, "connecting to PostgreSQL"))?;
    MIGRATOR.run(&pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(e) => {
            ConnectError::classify(e, "running database migrations")
        }
        other => {
            ConnectError::Refused(anyhow::Error::new(other).context("running database migrations"))
        }
    })?;
    Ok(pool)
}
