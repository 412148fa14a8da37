//! Which version of each plugin is active: name → active version, plus the previous one for
//! rollback. A swap replaces an `Arc`; a batch keeps the version it started with, so a swap
//! takes effect at the next batch boundary and never splits a batch.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};

use super::engine::{LoadError, PluginEngine};
use super::plugin::Plugin;

/// Compiled versions kept for quick swaps back and forth (per registry, not per plugin).
const COMPILED_CACHE: usize = 16;

pub struct Registry {
    engine: Arc<PluginEngine>,
    slots: RwLock<HashMap<String, Slot>>,
    /// Recently compiled versions by (name, sha256): swapping back costs no compile.
    compiled: RwLock<Vec<Arc<Plugin>>>,
}

/// A plugin's active version and the one before it.
#[derive(Clone)]
pub struct Slot {
    pub active: Arc<Plugin>,
    pub activated_at: DateTime<Utc>,
    pub previous: Option<Arc<Plugin>>,
}

impl Registry {
    pub fn new(engine: Arc<PluginEngine>) -> Self {
        Self {
            engine,
            slots: RwLock::default(),
            compiled: RwLock::default(),
        }
    }

    pub fn active(&self, name: &str) -> Option<Arc<Plugin>> {
        self.read().get(name).map(|slot| Arc::clone(&slot.active))
    }

    pub fn slot(&self, name: &str) -> Option<Slot> {
        self.read().get(name).cloned()
    }

    /// Every plugin, by name.
    pub fn slots(&self) -> Vec<(String, Slot)> {
        let mut slots: Vec<(String, Slot)> = self
            .read()
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        slots
    }

    /// Compile, link and self-test `bytes` as plugin `name`, or reuse the compiled version with
    /// the same hash. Blocking CPU work: call from a blocking thread.
    pub fn prepare(&self, name: &str, bytes: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        let version = super::engine::version_of(bytes);
        if let Some(plugin) = self.compiled_version(name, &version) {
            return Ok(plugin);
        }
        let plugin = Arc::new(self.engine.load(name, bytes)?);
        let mut compiled = self
            .compiled
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        compiled.retain(|p| !(p.name() == name && p.version() == version));
        compiled.push(Arc::clone(&plugin));
        if compiled.len() > COMPILED_CACHE {
            compiled.remove(0);
        }
        Ok(plugin)
    }

    /// A compiled version seen before, if it is still cached.
    pub fn compiled_version(&self, name: &str, version: &str) -> Option<Arc<Plugin>> {
        let compiled = self.compiled.read().unwrap_or_else(PoisonError::into_inner);
        compiled
            .iter()
            .find(|p| p.name() == name && p.version() == version)
            .cloned()
    }

    /// Make `plugin` the active version of its name. Returns `false` if it already was.
    pub fn activate(&self, plugin: Arc<Plugin>) -> bool {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let name = plugin.name().to_string();
        match slots.get_mut(&name) {
            Some(slot) if slot.active.version() == plugin.version() => false,
            Some(slot) => {
                let previous = std::mem::replace(&mut slot.active, plugin);
                slot.previous = Some(previous);
                slot.activated_at = Utc::now();
                true
            }
            None => {
                slots.insert(
                    name,
                    Slot {
                        active: plugin,
                        activated_at: Utc::now(),
                        previous: None,
                    },
                );
                true
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Slot>> {
        self.slots.read().unwrap_or_else(PoisonError::into_inner)
    }
}
