//! Plugin control, the changes: install a version (validated first), roll back, run a
//! candidate in the shadow of the active version and promote or discard it, delete — each
//! recorded in Postgres for the whole fleet.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::{InstallError, Installed, PluginControl, validate_name};
use crate::db;
use crate::domain::Routes;
use crate::runtime::version_of;

impl PluginControl {
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
        self.refresh_tables().await?;
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
        let pruned = db::plugins::prune_versions(&mut tx, name, self.policy.versions_kept).await?;
        tx.commit().await?;
        if pruned > 0 {
            tracing::info!(
                plugin = name,
                pruned,
                kept = self.policy.versions_kept,
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

    /// Load this instance's defaults, the bundled plugins (`stock`; `sink` where one of the
    /// `routed` plugin names is it) and the `--plugin` files, then the fleet's active versions,
    /// which win over them (the first instance seeds the fleet).
    pub async fn load_defaults(&self, paths: &[PathBuf], routed: &[&str]) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let mut defaults = Vec::new();
        // The stock plugin always; the sink where a route names it.
        for (name, bytes) in crate::runtime::BUNDLED {
            let name: &str = name;
            if name != "stock" && !routed.contains(&name) {
                continue;
            }
            let plugin = self
                .registry
                .prepare_bundled(name, bytes)
                .await
                .with_context(|| format!("loading the bundled {name} plugin"))?;
            self.activate(plugin);
            defaults.push((name.to_string(), Bytes::from_static(bytes)));
        }
        for path in paths {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            validate_name(&name).with_context(|| format!("plugin file {}", path.display()))?;
            let max = self.registry.compile_limits().max_component_bytes;
            let read = path.clone();
            let bytes =
                tokio::task::spawn_blocking(move || super::watch::read_plugin_file(&read, max))
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
        self.refresh_tables().await?;
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

    /// Make the shadow candidate the active version, fleet-wide: once it was compared on
    /// enough records and agreed on all of them, or at once with `force`.
    pub async fn promote_shadow(&self, name: &str, force: bool) -> Result<Installed, InstallError> {
        // The candidate judged is the one promoted: the fleet's, checked again under the lock.
        let fleet = db::plugins::list_active(&self.pool).await?;
        let candidate = fleet
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.shadow_version.clone())
            .ok_or_else(|| InstallError::NoShadow(name.to_string()))?;
        if !force {
            self.shadow_proven(name, &candidate).await?;
        }
        let installed = self
            .switch(name, "shadow", |current| match &current.shadow_version {
                Some(shadow) if *shadow == candidate => Ok(candidate.clone()),
                Some(_) => Err(InstallError::Unproven(
                    "the shadow candidate changed meanwhile; look at it again".into(),
                )),
                None => Err(InstallError::NoShadow(name.to_string())),
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
    pub async fn delete(&self, name: &str, routes: &Routes) -> Result<(), InstallError> {
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
}
