//! Plugin control, following: this instance runs the fleet's active version (and shadow
//! candidate) of every plugin, told by LISTEN/NOTIFY and re-checked periodically.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::{InstallError, PluginControl};
use crate::runtime::Plugin;
use crate::{backoff, db};

/// A safety net under LISTEN/NOTIFY: notifications sent while an instance was reconnecting
/// are caught up by this periodic check.
const RESYNC_INTERVAL: Duration = Duration::from_secs(5);

impl PluginControl {
    /// Bring the local registry in line with the fleet's active versions. A version that does
    /// not load here is logged and the running one stays.
    pub async fn sync_all(&self) -> Result<(), InstallError> {
        let fleet = db::plugins::list_active(&self.pool).await?;
        {
            let mut guards = self.guards.lock().unwrap_or_else(PoisonError::into_inner);
            *guards = fleet
                .iter()
                .map(|a| {
                    let status = super::GuardStatus {
                        enabled: a.guard,
                        state: a.guard_state.clone(),
                        version: a.guard_version.clone(),
                        reason: a.guard_reason.clone(),
                        changed_at: a.guard_changed_at,
                    };
                    (a.name.clone(), status)
                })
                .collect();
        }
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

    /// Follow fleet-wide changes until shutdown: LISTEN for installs and rollbacks made by any
    /// instance, and re-check periodically in case a notification was missed.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let listen = || self.listen(&shutdown);
        backoff::retry("the plugin change listener", &shutdown, listen, |_| {}).await;
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
}
