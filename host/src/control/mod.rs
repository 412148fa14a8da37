//! Plugin control plane: validated installs, rollbacks and shadow runs (admin API, watched
//! directory), recorded in Postgres so that every instance follows them through
//! LISTEN/NOTIFY.
//!
//! - `install`: install, roll back, shadow, promote, delete (the changes, fleet-wide);
//! - `follow`: this instance following the fleet's active versions;
//! - `watch`: the watched plugin directory.

mod follow;
mod install;
mod watch;

use std::sync::Arc;

use bytes::Bytes;
use sqlx::PgPool;

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

pub struct PluginControl {
    pool: PgPool,
    registry: Arc<Registry>,
    /// Versions kept per plugin besides the active and the previous one.
    versions_kept: u32,
    /// One install at a time, on this instance.
    installing: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

impl PluginControl {
    pub fn new(
        pool: PgPool,
        registry: Arc<Registry>,
        versions_kept: u32,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            registry,
            versions_kept,
            installing: tokio::sync::Mutex::new(()),
            metrics,
        }
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

pub fn validate_name(name: &str) -> Result<(), InstallError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(InstallError::BadName(name.to_string()))
    }
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
