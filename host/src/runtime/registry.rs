//! Which version of each plugin is active: name → active version, plus the previous one for
//! rollback. A swap replaces an `Arc`; a batch keeps the version it started with, so a swap
//! takes effect at the next batch boundary and never splits a batch. Versions are compiled
//! here, one at a time, and kept for quick swaps back and forth.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::compile::{self, CompileLimits, Compiler};
use super::engine::Sandbox;
use super::error::LoadError;
use super::plugin::Plugin;

/// Compiled versions kept for quick swaps back and forth (per registry, not per plugin).
const COMPILED_CACHE: usize = 16;

pub struct Registry {
    sandbox: Arc<Sandbox>,
    compiler: Compiler,
    compile_limits: CompileLimits,
    /// One compile at a time: each may take a core and up to its memory limit.
    compiling: tokio::sync::Mutex<()>,
    slots: RwLock<HashMap<String, Slot>>,
    /// Recently compiled versions, newest last: swapping back costs no compile.
    compiled: RwLock<Vec<Arc<Plugin>>>,
}

/// A plugin's active version, the one before it, and a candidate running in its shadow.
#[derive(Clone)]
pub struct Slot {
    pub active: Arc<Plugin>,
    pub activated_at: DateTime<Utc>,
    pub previous: Option<Arc<Plugin>>,
    pub shadow: Option<Arc<Plugin>>,
}

impl Registry {
    pub fn new(sandbox: Arc<Sandbox>, compiler: Compiler, compile_limits: CompileLimits) -> Self {
        Self {
            sandbox,
            compiler,
            compile_limits,
            compiling: tokio::sync::Mutex::new(()),
            slots: RwLock::default(),
            compiled: RwLock::default(),
        }
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    pub fn compile_limits(&self) -> &CompileLimits {
        &self.compile_limits
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

    /// Compile (in the compiler child, under its limits), link and check `bytes` as plugin
    /// `name`, or reuse the compiled version with the same hash.
    pub async fn prepare(&self, name: &str, bytes: Bytes) -> Result<Arc<Plugin>, LoadError> {
        self.prepare_with(name, bytes, &self.compiler).await
    }

    /// The same for a component this build ships (compiled in this process).
    pub async fn prepare_bundled(
        &self,
        name: &str,
        bytes: &'static [u8],
    ) -> Result<Arc<Plugin>, LoadError> {
        self.prepare_with(name, Bytes::from_static(bytes), &Compiler::InProcess)
            .await
    }

    async fn prepare_with(
        &self,
        name: &str,
        bytes: Bytes,
        compiler: &Compiler,
    ) -> Result<Arc<Plugin>, LoadError> {
        let version = super::version_of(&bytes);
        if let Some(plugin) = self.compiled_version(name, &version) {
            return Ok(plugin);
        }
        let _one_at_a_time = self.compiling.lock().await;
        if let Some(plugin) = self.compiled_version(name, &version) {
            return Ok(plugin); // compiled while this one waited
        }
        let component = compile::compile(
            compiler,
            self.sandbox.engine(),
            &self.sandbox.config().limits,
            bytes,
            &self.compile_limits,
        )
        .await?;
        let sandbox = Arc::clone(&self.sandbox);
        let loaded_name = name.to_string();
        let plugin = tokio::task::spawn_blocking(move || {
            Plugin::load(&sandbox, &loaded_name, version, &component)
        })
        .await
        .map_err(|e| LoadError::Limits(format!("the load task failed: {e}")))??;
        let plugin = Arc::new(plugin);
        let mut compiled = self
            .compiled
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        compiled.retain(|p| !(p.name() == name && p.version() == plugin.version()));
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
                slot.shadow = None;
                true
            }
            None => {
                slots.insert(
                    name,
                    Slot {
                        active: plugin,
                        activated_at: Utc::now(),
                        previous: None,
                        shadow: None,
                    },
                );
                true
            }
        }
    }

    /// Run `candidate` (or nothing) beside `name`'s active version. `false` if there is no
    /// plugin `name`.
    pub fn set_shadow(&self, name: &str, candidate: Option<Arc<Plugin>>) -> bool {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        match slots.get_mut(name) {
            Some(slot) => {
                slot.shadow = candidate;
                true
            }
            None => false,
        }
    }

    /// The active version and the shadow candidate of `name`.
    pub fn active_and_shadow(&self, name: &str) -> Option<(Arc<Plugin>, Option<Arc<Plugin>>)> {
        self.read()
            .get(name)
            .map(|slot| (Arc::clone(&slot.active), slot.shadow.clone()))
    }

    /// Forget plugin `name`. Returns whether there was one.
    pub fn remove(&self, name: &str) -> bool {
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        slots.remove(name).is_some()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Slot>> {
        self.slots.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::bindings;
    use crate::runtime::engine::SandboxConfig;

    fn nothing(_: &bindings::Message) -> Result<Vec<bindings::Mutation>, bindings::HandlerError> {
        Ok(Vec::new())
    }

    fn registry(limits: CompileLimits) -> Registry {
        let sandbox = Sandbox::new(SandboxConfig::default()).expect("a sandbox");
        Registry::new(sandbox, Compiler::InProcess, limits)
    }

    #[test]
    fn activating_keeps_the_previous_version_for_rollback() {
        let registry = registry(CompileLimits::default());
        let v1 = Arc::new(Plugin::native(registry.sandbox(), "b", nothing));
        assert!(registry.activate(Arc::clone(&v1)));
        assert!(!registry.activate(Arc::clone(&v1)), "already active");
        let slot = registry.slot("b").expect("a slot");
        assert!(slot.previous.is_none());
        let other = Arc::new(Plugin::native(registry.sandbox(), "a", nothing));
        registry.activate(other);
        let names: Vec<String> = registry.slots().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"], "sorted by name");
        assert!(registry.active("c").is_none());
    }

    #[tokio::test]
    async fn a_version_is_compiled_once_and_limits_come_first() {
        let registry = registry(CompileLimits::default());
        let first = registry
            .prepare_bundled("stock", crate::runtime::STOCK_PLUGIN)
            .await
            .expect("the stock plugin loads");
        let again = registry
            .prepare("stock", Bytes::from_static(crate::runtime::STOCK_PLUGIN))
            .await
            .expect("cached");
        assert!(Arc::ptr_eq(&first, &again), "the same compiled version");
        assert!(first.has_self_test());
        let cached = registry.compiled_version("stock", first.version());
        assert!(cached.is_some());

        let small = registry_limits(64);
        let refused = small
            .prepare("stock", Bytes::from_static(crate::runtime::STOCK_PLUGIN))
            .await
            .expect_err("over the size limit");
        assert!(matches!(refused, LoadError::TooLarge(_)), "{refused}");
    }

    fn registry_limits(max_component_bytes: usize) -> Registry {
        registry(CompileLimits {
            max_component_bytes,
            ..CompileLimits::default()
        })
    }
}
