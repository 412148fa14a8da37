//! Plugin control, the watched directory: `<name>.wasm` files dropped or replaced there are
//! installed; plugin files are read without trusting them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{PluginControl, validate_name};
use crate::db;
use crate::runtime::{Plugin, version_of};

/// How often the watched directory is scanned. Polling works on every filesystem (bind
/// mounts, network volumes) where change notifications may not.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

impl PluginControl {
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
pub(super) fn read_plugin_file(path: &Path, max: usize) -> std::io::Result<Bytes> {
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
pub(super) fn plugin_file_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let name = path.file_stem()?.to_str()?;
    validate_name(name).ok()?;
    Some(name.to_string())
}
