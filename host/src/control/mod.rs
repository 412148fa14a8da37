//! Plugin control plane: validated installs, rollbacks and shadow runs (admin API, watched
//! directory), recorded in Postgres so that every instance follows them through
//! LISTEN/NOTIFY.
//!
//! - `install`: install, roll back, shadow, promote, delete (the changes, fleet-wide);
//! - `follow`: this instance following the fleet's active versions;
//! - `guard`: watching each new version's first records, rolling a bad one back;
//! - `watch`: the watched plugin directory.

mod follow;
mod guard;
mod install;
mod watch;

pub use guard::{GuardPolicy, Verdict};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use sqlx::PgPool;

use crate::db;
use crate::db::tables::Catalog;
use crate::domain::PluginName;
use crate::domain::tables::TableOps;
use crate::metrics::Metrics;
use crate::runtime::{LoadError, Plugin, Registry};

/// Versions of each plugin kept in the database besides the active and previous ones, unless
/// configured.
pub const DEFAULT_VERSIONS_KEPT: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The component was refused; the running version stays active.
    #[error(transparent)]
    Invalid(#[from] LoadError),
    #[error("plugin names are 1 to 64 characters of a-z, 0-9, `-` and `_`, got `{0}`")]
    BadName(String),
    #[error("no plugin named {0}")]
    Unknown(String),
    #[error("plugin {0} has no previous version to roll back to")]
    NoPrevious(String),
    #[error("plugin {0} has no shadow run")]
    NoShadow(String),
    #[error("plugin {0} handles topics {1}: remove its routes first")]
    Routed(String, String),
    /// A shadow candidate not yet shown to agree with the active version.
    #[error("not promoted: {0}")]
    Unproven(String),
    /// A declared table cannot be written as declared (read again at every install).
    #[error("{0}")]
    Tables(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What an install or rollback did.
#[derive(Debug, Clone)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub previous_version: Option<String>,
    /// `false` if that version was already active.
    pub changed: bool,
}

/// How plugin changes are held to account.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Versions kept per plugin besides the active and the previous one.
    pub versions_kept: u32,
    /// When a newly activated version is rolled back on its own.
    pub guard: GuardPolicy,
    /// Records a shadow candidate must have been compared on before it may be promoted.
    pub shadow_min_compared: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            versions_kept: DEFAULT_VERSIONS_KEPT,
            guard: GuardPolicy::default(),
            shadow_min_compared: 100,
        }
    }
}

/// What the guard says of a plugin, as the fleet last recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardStatus {
    pub enabled: bool,
    /// `watching`, `passed`, `rolled-back`; `None`: nothing to watch.
    pub state: Option<String>,
    /// The version it is about.
    pub version: Option<String>,
    pub reason: Option<String>,
    pub changed_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub struct PluginControl {
    pool: PgPool,
    registry: Arc<Registry>,
    policy: Policy,
    /// One install at a time, on this instance.
    installing: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    /// The guard's status per plugin, as last read from the fleet (`sync_all`).
    guards: Mutex<HashMap<String, GuardStatus>>,
    /// The declared tables' shapes, read again at every install.
    tables: Arc<Catalog>,
    /// Every declared table, with the writes some route makes to it.
    declared: BTreeMap<String, TableOps>,
}

impl PluginControl {
    pub fn new(
        pool: PgPool,
        registry: Arc<Registry>,
        policy: Policy,
        metrics: Arc<Metrics>,
        (tables, declared): (Arc<Catalog>, BTreeMap<String, TableOps>),
    ) -> Self {
        Self {
            pool,
            registry,
            policy,
            installing: tokio::sync::Mutex::new(()),
            metrics,
            guards: Mutex::new(HashMap::new()),
            tables,
            declared,
        }
    }

    /// Read the declared tables' shapes from the catalog again: a table changed since (a
    /// column added, a type changed) is written as it is now; one that can no longer be
    /// written refuses the install, and the shapes read before stay.
    pub async fn refresh_tables(&self) -> Result<(), InstallError> {
        if self.declared.is_empty() {
            return Ok(());
        }
        self.tables
            .load(&self.pool, &self.declared)
            .await
            .map_err(|e| InstallError::Tables(format!("{e:#}")))
    }

    /// The declared tables' shapes.
    pub fn tables(&self) -> &Arc<Catalog> {
        &self.tables
    }

    /// What the guard says of plugin `name`.
    pub fn guard_status(&self, name: &str) -> GuardStatus {
        let guards = self.guards.lock().unwrap_or_else(PoisonError::into_inner);
        guards.get(name).cloned().unwrap_or_default()
    }

    /// Turn the guard of plugin `name` on or off, fleet-wide.
    pub async fn set_guard(&self, name: &str, enabled: bool) -> Result<(), InstallError> {
        let mut tx = self.pool.begin().await?;
        if db::plugins::lock_active(&mut tx, name).await?.is_none() {
            return Err(InstallError::Unknown(name.to_string()));
        }
        db::plugins::set_guard(&mut tx, name, enabled).await?;
        tx.commit().await?;
        tracing::info!(plugin = name, enabled, "plugin guard set");
        self.sync_all().await
    }

    /// Make `plugin` this instance's active version of its name.
    fn activate(&self, plugin: Arc<Plugin>) {
        let name = plugin.name().to_string();
        if self.registry.activate(plugin) {
            self.metrics.plugin_swapped(&name);
        }
    }

    /// Compile, link and check an uploaded component; a refusal is counted.
    async fn prepare(&self, name: &str, bytes: Bytes) -> Result<Arc<Plugin>, InstallError> {
        self.registry.prepare(name, bytes).await.map_err(|e| {
            self.metrics.plugin_refused(name, e.kind());
            InstallError::Invalid(e)
        })
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

/// `name` if it is a plugin's name (`PluginName`'s rule), else the refusal.
pub fn validate_name(name: &str) -> Result<PluginName, InstallError> {
    PluginName::parse(name).map_err(|_| InstallError::BadName(name.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn plugin_names_are_plain() {
        assert!(validate_name("stock").is_ok());
        assert!(validate_name("stock-v2_b").is_ok());
        for bad in ["", "Stock", "../etc", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            watch::plugin_file_name(Path::new("/p/stock.wasm")),
            Some("stock".into())
        );
        assert_eq!(
            watch::plugin_file_name(Path::new("/p/stock.wasm.tmp")),
            None
        );
        assert_eq!(watch::plugin_file_name(Path::new("/p/.stock.swp")), None);
    }
}
