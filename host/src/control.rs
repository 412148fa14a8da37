//! Plugin control plane: validated installs and rollbacks (admin API, watched directory),
//! recorded in Postgres so that every instance follows them through LISTEN/NOTIFY.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::metrics::Metrics;
use crate::runtime::{LoadError, Plugin, Registry, version_of};

/// How often the watched directory is scanned. Polling works on every filesystem (bind
/// mounts, network volumes) where change notifications may not.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// A safety net under LISTEN/NOTIFY: notifications sent while an instance was reconnecting
/// are caught up by this periodic check.
const RESYNC_INTERVAL: Duration = Duration::from_secs(5);

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

    /// Validate `bytes` as a new version of `name` (compile, link against the host, self-test)
    /// and make it the fleet's active version. A refused component changes nothing.
    pub async fn install(
        &self,
        name: &str,
        bytes: Bytes,
        source: &str,
    ) -> Result<Installed, InstallError> {
        validate_name(name)?;
        let _one_at_a_time = self.installing.lock().await;
        let plugin = self.prepare(name, bytes.clone()).await?;
        let mut tx = self.pool.begin().await?;
        db::plugins::save_version(&mut tx, name, plugin.version(), &bytes, source).await?;
        let current = db::plugins::lock_active(&mut tx, name).await?;
        let current_version = current.as_ref().map(|c| c.version.clone());
        let changed = current_version.as_deref() != Some(plugin.version());
        if changed {
            db::plugins::set_active(
                &mut tx,
                name,
                plugin.version(),
                current_version.as_deref(),
                source,
            )
            .await?;
        }
        let pruned = db::plugins::prune_versions(&mut tx, name, self.versions_kept).await?;
        tx.commit().await?;
        if pruned > 0 {
            tracing::info!(
                plugin = name,
                pruned,
                kept = self.versions_kept,
                "old plugin versions removed"
            );
        }
        self.activate(Arc::clone(&plugin));
        self.metrics
            .plugin_installed(name, if changed { "installed" } else { "unchanged" });
        tracing::info!(
            plugin = name,
            version = plugin.version(),
            source,
            changed,
            "plugin installed"
        );
        Ok(Installed {
            name: name.to_string(),
            version: plugin.version().to_string(),
            previous_version: if changed {
                current_version
            } else {
                current.and_then(|c| c.previous_version)
            },
            changed,
        })
    }

    /// Load this instance's defaults, the bundled stock plugin and the `--plugin` files, then
    /// the fleet's active versions, which win over them (the first instance seeds the fleet).
    pub async fn load_defaults(&self, paths: &[PathBuf]) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let stock = self
            .registry
            .prepare_bundled("stock", crate::runtime::STOCK_PLUGIN)
            .await
            .context("loading the bundled stock plugin")?;
        self.activate(stock);
        let mut defaults = vec![(
            "stock".to_string(),
            Bytes::from_static(crate::runtime::STOCK_PLUGIN),
        )];
        for path in paths {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            validate_name(&name).with_context(|| format!("plugin file {}", path.display()))?;
            let max = self.registry.compile_limits().max_component_bytes;
            let read = path.clone();
            let bytes = tokio::task::spawn_blocking(move || read_plugin_file(&read, max))
                .await?
                .with_context(|| format!("reading plugin {}", path.display()))?;
            let plugin = self
                .registry
                .prepare(&name, bytes.clone())
                .await
                .with_context(|| format!("loading plugin {}", path.display()))?;
            self.activate(plugin);
            defaults.push((name, bytes));
        }
        for (name, bytes) in &defaults {
            self.adopt_default(name, bytes)
                .await
                .with_context(|| format!("recording plugin {name}"))?;
        }
        self.sync_all()
            .await
            .context("loading the fleet's active plugin versions")
    }

    /// Seed the fleet with this instance's default version of `name` (bundled or `--plugin`)
    /// if the fleet has none yet; otherwise the fleet's version wins (see `sync_all`).
    pub async fn adopt_default(&self, name: &str, bytes: &[u8]) -> Result<(), InstallError> {
        let version = version_of(bytes);
        let mut tx = self.pool.begin().await?;
        let adopted = db::plugins::adopt_default(&mut tx, name, &version, bytes).await?;
        tx.commit().await?;
        if adopted {
            tracing::info!(plugin = name, %version, "this instance's default is now the fleet's version");
        }
        Ok(())
    }

    /// Make the previous version active again, fleet-wide.
    pub async fn rollback(&self, name: &str) -> Result<Installed, InstallError> {
        let installed = self
            .switch(name, "rollback", |current| {
                current
                    .previous_version
                    .clone()
                    .ok_or_else(|| InstallError::NoPrevious(name.to_string()))
            })
            .await?;
        tracing::info!(plugin = name, version = %installed.version, "plugin rolled back");
        Ok(installed)
    }

    /// Make the version `pick` chooses from the active row the fleet's active version, then
    /// follow it here. `source` is recorded with the change.
    async fn switch(
        &self,
        name: &str,
        source: &str,
        pick: impl FnOnce(&db::plugins::Active) -> Result<String, InstallError>,
    ) -> Result<Installed, InstallError> {
        let mut tx = self.pool.begin().await?;
        let current = db::plugins::lock_active(&mut tx, name)
            .await?
            .ok_or_else(|| InstallError::Unknown(name.to_string()))?;
        let version = pick(&current)?;
        db::plugins::set_active(&mut tx, name, &version, Some(&current.version), source).await?;
        tx.commit().await?;
        self.sync_all().await?;
        Ok(Installed {
            name: name.to_string(),
            version,
            previous_version: Some(current.version),
            changed: true,
        })
    }

    /// Bring the local registry in line with the fleet's active versions. A version that does
    /// not load here is logged and the running one stays.
    pub async fn sync_all(&self) -> Result<(), InstallError> {
        let fleet = db::plugins::list_active(&self.pool).await?;
        for active in &fleet {
            let running = self.registry.active(&active.name);
            if running.as_deref().map(Plugin::version) != Some(active.version.as_str()) {
                let started = Instant::now();
                if let Some(plugin) = self.fleet_version(&active.name, &active.version).await? {
                    self.activate(plugin);
                    tracing::info!(plugin = %active.name, version = %active.version,
                                   took = ?started.elapsed(), "following the fleet's active version");
                }
            }
            let shadow = self
                .registry
                .active_and_shadow(&active.name)
                .and_then(|(_, shadow)| shadow);
            let running_shadow = shadow.as_deref().map(Plugin::version);
            if running_shadow != active.shadow_version.as_deref() {
                let candidate = match &active.shadow_version {
                    Some(version) => self.fleet_version(&active.name, version).await?,
                    None => None,
                };
                tracing::info!(plugin = %active.name, shadow = ?active.shadow_version, "following the fleet's shadow run");
                self.registry.set_shadow(&active.name, candidate);
            }
        }
        // Plugins deleted elsewhere (native handlers are this instance's own).
        for (name, slot) in self.registry.slots() {
            if slot.active.version() != "native" && !fleet.iter().any(|a| a.name == name) {
                tracing::info!(plugin = %name, "plugin deleted by the fleet");
                self.registry.remove(&name);
            }
        }
        Ok(())
    }

    /// Version `version` of `name`, compiled (or from the cache); `None` if it does not load
    /// here (logged; the running version stays).
    async fn fleet_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<Arc<Plugin>>, InstallError> {
        if let Some(plugin) = self.registry.compiled_version(name, version) {
            return Ok(Some(plugin));
        }
        let Some(bytes) = db::plugins::component(&self.pool, name, version).await? else {
            return Ok(None);
        };
        match self.registry.prepare(name, Bytes::from(bytes)).await {
            Ok(plugin) => Ok(Some(plugin)),
            Err(e) => {
                tracing::error!(plugin = %name, %version, error = %e,
                                "a version of the fleet does not load here; keeping the running one");
                Ok(None)
            }
        }
    }

    /// Validate `bytes` as a candidate for `name` and run it in the shadow of the active
    /// version, fleet-wide: it sees live traffic, its output is compared, never applied.
    pub async fn install_shadow(
        &self,
        name: &str,
        bytes: Bytes,
    ) -> Result<Installed, InstallError> {
        validate_name(name)?;
        let _one_at_a_time = self.installing.lock().await;
        let candidate = self.prepare(name, bytes.clone()).await?;
        let mut tx = self.pool.begin().await?;
        let current = db::plugins::lock_active(&mut tx, name)
            .await?
            .ok_or_else(|| InstallError::Unknown(name.to_string()))?;
        db::plugins::save_version(&mut tx, name, candidate.version(), &bytes, "shadow").await?;
        db::plugins::set_shadow(&mut tx, name, Some(candidate.version())).await?;
        tx.commit().await?;
        self.registry.set_shadow(name, Some(Arc::clone(&candidate)));
        tracing::info!(
            plugin = name,
            shadow = candidate.version(),
            "shadow run started"
        );
        Ok(Installed {
            name: name.to_string(),
            version: candidate.version().to_string(),
            previous_version: Some(current.version),
            changed: true,
        })
    }

    /// Make the shadow candidate the active version, fleet-wide.
    pub async fn promote_shadow(&self, name: &str) -> Result<Installed, InstallError> {
        let installed = self
            .switch(name, "shadow", |current| {
                current
                    .shadow_version
                    .clone()
                    .ok_or_else(|| InstallError::NoShadow(name.to_string()))
            })
            .await?;
        tracing::info!(plugin = name, version = %installed.version, "shadow candidate promoted");
        Ok(installed)
    }

    /// Stop the shadow run of `name`, fleet-wide.
    pub async fn discard_shadow(&self, name: &str) -> Result<(), InstallError> {
        let mut tx = self.pool.begin().await?;
        let current = db::plugins::lock_active(&mut tx, name)
            .await?
            .ok_or_else(|| InstallError::Unknown(name.to_string()))?;
        if current.shadow_version.is_none() {
            return Err(InstallError::NoShadow(name.to_string()));
        }
        db::plugins::set_shadow(&mut tx, name, None).await?;
        tx.commit().await?;
        self.registry.set_shadow(name, None);
        tracing::info!(plugin = name, "shadow run discarded");
        Ok(())
    }

    /// Delete plugin `name` and its versions, fleet-wide. A plugin a route uses cannot go.
    pub async fn delete(
        &self,
        name: &str,
        routes: &crate::config::Routes,
    ) -> Result<(), InstallError> {
        let topics = routes.topics_of(name);
        if !topics.is_empty() {
            return Err(InstallError::Routed(name.to_string(), topics.join(", ")));
        }
        let mut tx = self.pool.begin().await?;
        let existed = db::plugins::delete(&mut tx, name).await?;
        tx.commit().await?;
        if !self.registry.remove(name) && !existed {
            return Err(InstallError::Unknown(name.to_string()));
        }
        tracing::info!(plugin = name, "plugin deleted");
        Ok(())
    }

    /// Follow fleet-wide changes until shutdown: LISTEN for installs and rollbacks made by any
    /// instance, and re-check periodically in case a notification was missed.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = crate::backoff::Backoff::new();
        while !shutdown.is_cancelled() {
            match self.listen(&shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "plugin change listener failed; will reconnect");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        Ok(())
    }

    async fn listen(&self, shutdown: &CancellationToken) -> Result<(), InstallError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(db::plugins::CHANNEL).await?;
        // Catch up with anything that changed before the LISTEN took effect.
        self.sync_all().await?;
        let mut resync = tokio::time::interval(RESYNC_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                notification = listener.recv() => {
                    let notification = notification?;
                    tracing::debug!(plugin = notification.payload(), "plugin change notified");
                    self.sync_all().await?;
                }
                _ = resync.tick() => self.sync_all().await?,
            }
        }
    }

    /// Install `<name>.wasm` files dropped into `dir` (replace a file to install a new
    /// version; write it elsewhere and rename it in, so a half-written file is never seen).
    pub async fn watch_dir(
        self: Arc<Self>,
        dir: PathBuf,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        tracing::info!(dir = %dir.display(), "watching for plugin files");
        let mut seen: HashMap<PathBuf, (SystemTime, u64)> = HashMap::new();
        let mut first_scan = true;
        loop {
            if let Err(e) = self.scan(&dir, &mut seen, first_scan).await {
                tracing::warn!(dir = %dir.display(), error = %e, "scanning the plugin directory failed");
            }
            first_scan = false;
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }

    async fn scan(
        &self,
        dir: &Path,
        seen: &mut HashMap<PathBuf, (SystemTime, u64)>,
        first_scan: bool,
    ) -> std::io::Result<()> {
        let max = self.registry.compile_limits().max_component_bytes;
        let mut entries = tokio::fs::read_dir(dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            let Some(name) = plugin_file_name(&path) else {
                continue;
            };
            // Not followed: a symlink's own metadata.
            let metadata = entry.metadata().await?;
            let stamp = (metadata.modified()?, metadata.len());
            if seen.get(&path) == Some(&stamp) {
                continue;
            }
            seen.insert(path.clone(), stamp);
            let read = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_plugin_file(&path, max)).await?
            };
            let bytes = match read {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(plugin = %name, file = %path.display(), error = %e,
                                   "plugin file refused; the running version stays");
                    continue;
                }
            };
            let version = version_of(&bytes);
            if self.registry.active(&name).as_deref().map(Plugin::version) == Some(version.as_str())
            {
                continue;
            }
            if first_scan && self.fleet_is_newer(&name, stamp.0).await {
                tracing::info!(plugin = %name, file = %path.display(),
                               "the fleet activated a newer version than this file; not installing it");
                continue;
            }
            let started = Instant::now();
            match self.install(&name, bytes, "file").await {
                Ok(installed) => tracing::info!(plugin = %name, version = %installed.version,
                    took = ?started.elapsed(), "plugin file installed"),
                Err(e) => tracing::warn!(plugin = %name, file = %path.display(), error = %e,
                    "plugin file refused; the running version stays"),
            }
        }
        Ok(())
    }

    async fn fleet_is_newer(&self, name: &str, file_modified: SystemTime) -> bool {
        let Ok(active) = db::plugins::list_active(&self.pool).await else {
            return false;
        };
        active
            .iter()
            .any(|a| a.name == name && SystemTime::from(a.activated_at) > file_modified)
    }
}

/// Read a plugin file without trusting it: a regular file only (no symlink, FIFO, device:
/// opened without following links and without blocking), at most `max` bytes.
fn read_plugin_file(path: &Path, max: usize) -> std::io::Result<Bytes> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse("a symbolic link: only regular files are read".into()),
            _ => e,
        })?;
    let metadata = file.metadata()?;
    if !metadata.file_type().is_file() {
        return Err(refuse(format!(
            "not a regular file ({:?}): only regular files are read",
            metadata.file_type()
        )));
    }
    if metadata.len() > max as u64 {
        return Err(refuse(format!(
            "{} bytes, more than the limit of {max} (SLUICE_PLUGIN_MAX_MIB)",
            metadata.len()
        )));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(max as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(refuse(format!(
            "grew past the limit of {max} bytes while being read"
        )));
    }
    Ok(Bytes::from(bytes))
}

/// `dir/stock.wasm` → `stock`, for valid plugin names.
fn plugin_file_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let name = path.file_stem()?.to_str()?;
    validate_name(name).ok()?;
    Some(name.to_string())
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
    use super::*;

    #[test]
    fn plugin_names_are_plain() {
        assert!(validate_name("stock").is_ok());
        assert!(validate_name("stock-v2_b").is_ok());
        for bad in ["", "Stock", "../etc", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            plugin_file_name(Path::new("/p/stock.wasm")),
            Some("stock".into())
        );
        assert_eq!(plugin_file_name(Path::new("/p/stock.wasm.tmp")), None);
        assert_eq!(plugin_file_name(Path::new("/p/.stock.swp")), None);
    }
}
