//! The sandbox every plugin runs in: one wasmtime engine, a linker offering only the `host`
//! interface and an empty WASI, an epoch ticker that enforces per-call deadlines.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, EngineWeak};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{
    Handler, HandlerPre, Level,
    sluice::handler::{host, types},
};
use super::limits::{Limiter, Limits};
use super::plugin::Plugin;

/// How often the epoch advances; deadlines are measured in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How much of a plugin's stderr (its panic message, typically) is kept for error reports.
const STDERR_CAPTURE_BYTES: usize = 4096;

/// The longest log line a plugin may write; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

/// Log lines one call may write; the rest are counted and dropped, so that a chatty plugin
/// cannot flood the host's log or spend its deadline there.
const MAX_LOG_LINES_PER_CALL: u32 = 100;

/// What every plugin call is allowed.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub limits: Limits,
    /// Wall-clock budget for one call, instantiation included.
    pub timeout: Duration,
    /// The most mutations one message may produce.
    pub max_mutations: usize,
    /// Values plugins read with `host.get-config`.
    pub plugin_config: HashMap<String, String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            timeout: Duration::from_millis(100),
            max_mutations: 1_000,
            plugin_config: HashMap::new(),
        }
    }
}

/// Compiles plugins and hands out sandboxed stores for them.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginState>,
    config: SandboxConfig,
    plugin_config: Arc<HashMap<String, String>>,
}

impl PluginEngine {
    pub fn new(config: SandboxConfig) -> anyhow::Result<Arc<Self>> {
        let mut wasm = wasmtime::Config::new();
        wasm.epoch_interruption(true);
        let engine = Engine::new(&wasm)
            .map_err(anyhow::Error::from)
            .context("creating the wasm engine")?;

        let mut linker = Linker::new(&engine);
        // Rust's std imports wasi:io and wasi:cli even when a plugin uses neither; the WasiCtx
        // behind them grants nothing (no dirs, env, network or inherited stdio).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the host interface")?;

        spawn_epoch_ticker(engine.weak()).context("starting the epoch ticker")?;
        let plugin_config = Arc::new(config.plugin_config.clone());
        Ok(Arc::new(Self {
            engine,
            linker,
            config,
            plugin_config,
        }))
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Compile a component and check it against the host: it must export the `handler` world,
    /// import nothing the host does not offer, and pass its `self-test` if it declares one.
    pub fn load(self: &Arc<Self>, name: &str, bytes: &[u8]) -> Result<Plugin, LoadError> {
        let version = version_of(bytes);
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = HandlerPre::new(instance_pre).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let plugin = Plugin::new(name, version, pre, Arc::clone(self));
        plugin.self_test()?;
        Ok(plugin)
    }

    /// A fresh store for one call, with limits set and the deadline armed.
    pub(super) fn store(&self, plugin: &Arc<str>) -> wasmtime::Store<PluginState> {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let state = PluginState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(self.config.limits),
            stderr,
            plugin: Arc::clone(plugin),
            config: Arc::clone(&self.plugin_config),
            log_lines: 0,
        };
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let ticks = self.config.timeout.as_millis() / EPOCH_TICK.as_millis() + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        store
    }
}

/// A plugin version: the sha256 of the component bytes, hex.
pub fn version_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Why a component cannot become a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    #[error("component does not fit the sluice:handler world: {0}")]
    Link(String),
    #[error("the plugin's self-test failed: {0}")]
    SelfTest(String),
}

/// The state of one plugin call.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) stderr: MemoryOutputPipe,
    plugin: Arc<str>,
    config: Arc<HashMap<String, String>>,
    /// Lines logged in this call, kept or not.
    pub(super) log_lines: u32,
}

impl PluginState {
    /// Log lines of this call that were dropped over the per-call cap.
    pub(super) fn dropped_log_lines(&self) -> u32 {
        self.log_lines.saturating_sub(MAX_LOG_LINES_PER_CALL)
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines > MAX_LOG_LINES_PER_CALL {
            return;
        }
        let message = truncate(&message, MAX_LOG_LINE);
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
    }

    fn get_config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

/// Cut `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Advance the engine's epoch until the engine is gone: without it no deadline fires.
fn spawn_epoch_ticker(engine: EngineWeak) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sluice-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
}
