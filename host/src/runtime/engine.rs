//! The sandbox every plugin runs in: one wasmtime engine with a pooling allocator (memory
//! images copied on write, slots reused), a linker offering only the `host`
//! interface and a WASI that grants nothing, an epoch ticker that enforces per-call deadlines,
//! and the stores calls run in. It builds stores and pre-linked components; `plugin` uses them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Enabled, Engine, EngineWeak, InstanceAllocationStrategy};
use wasmtime::{PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{Handler, HandlerPre, Level, checked, sluice::handler::host, v0_1, v0_2};
use super::limits::{Limiter, Limits};
use super::wasi::{self, Capture};

/// How often the epoch advances; deadlines are measured in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How much of a plugin's stderr (its panic message, typically) is kept for error reports.
const STDERR_CAPTURE_BYTES: usize = 4096;

/// The longest log line a plugin may write; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

/// Log lines one call may write; the rest are counted and dropped, so that a chatty plugin
/// cannot flood the host's log or spend its deadline there.
const MAX_LOG_LINES_PER_CALL: u32 = 100;

/// Plugin instances alive at once (calls in flight): the pool's slots. Ingest runs one call
/// per plugin worker thread; installs and redrives add a few.
const POOL_INSTANCES: u32 = 64;

/// Bytes at the start of a slot's memory (and tables) reset in place by a copy; the rest is
/// handed back to the kernel (`madvise`) and faults in again when the next instance touches
/// it, which in a VM costs more than a whole call. A reset covers only the memory the instance
/// had: a plugin built with the SDK's footprint (`plugins/sdk/footprint.rs`: stack, data and
/// the start of the heap in one WebAssembly page) resets 64 KiB; 128 KiB leaves room for a
/// call that grows a page, and for plugins built with the SDK's earlier two-page footprint, at
/// no `madvise`. The kernel's page-map scan (which would pick the written pages) is off: on
/// the development machine's kernel it reported the first bytes of the budget whether written
/// or not, and cost ≈ 5 µs per reset (README "Performance").
const KEEP_RESIDENT: usize = 128 << 10;

/// The longest deadline a call may be given.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// What every plugin call is allowed.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub limits: Limits,
    /// Wall-clock budget for one call, instantiation included (at most [`MAX_TIMEOUT`]).
    pub timeout: Duration,
    /// The most mutations one message may produce.
    pub max_mutations: usize,
    /// Limits on one message's emitted records and state.
    pub output: crate::domain::OutputLimits,
    /// Values plugins read with `host.get-config`.
    pub plugin_config: PluginConfig,
    /// How much of an instance the calls of each plugin share.
    pub isolation: IsolationConfig,
}

/// Which calls share an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// A fresh instance for every record: nothing of one call is visible to the next.
    Record,
    /// A fresh instance per batch and plugin thread: the batch's records handled on that
    /// thread are called in order in it, so a plugin may see what its earlier calls of the
    /// same batch left in its memory; after a trap, a deadline or a limit the instance is
    /// discarded and the next record gets a fresh one. Nothing survives a batch.
    #[default]
    Batch,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Batch => "batch",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "record" => Some(Self::Record),
            "batch" => Some(Self::Batch),
            _ => None,
        }
    }
}

/// The isolation of every plugin, and of some by name (which win).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IsolationConfig {
    pub default: Isolation,
    pub by_plugin: HashMap<String, Isolation>,
}

impl IsolationConfig {
    /// From `record|batch` (every plugin) and `plugin=record|batch` (one plugin) settings.
    pub fn parse<'a>(settings: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut config = Self::default();
        for setting in settings {
            let setting = setting.trim();
            let (plugin, mode) = match setting.split_once('=') {
                Some((plugin, mode)) => (Some(plugin.trim()), mode.trim()),
                None => (None, setting),
            };
            let isolation = Isolation::parse(mode).ok_or_else(|| {
                format!(
                    "isolation is `record` or `batch` (or `PLUGIN=record|batch`), got `{setting}`"
                )
            })?;
            match plugin {
                Some("") => return Err(format!("empty plugin name in `{setting}`")),
                Some(plugin) => {
                    config.by_plugin.insert(plugin.to_string(), isolation);
                }
                None => config.default = isolation,
            }
        }
        Ok(config)
    }

    /// The isolation of plugin `name`.
    pub fn for_plugin(&self, name: &str) -> Isolation {
        self.by_plugin.get(name).copied().unwrap_or(self.default)
    }
}

/// Configuration values for plugins: some for every plugin, some for one (which win).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginConfig {
    pub all: HashMap<String, String>,
    pub by_plugin: HashMap<String, HashMap<String, String>>,
}

impl PluginConfig {
    /// From `key=value` (every plugin) and `plugin:key=value` (one plugin) pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut config = Self::default();
        for (key, value) in pairs {
            match key.split_once(':') {
                Some((plugin, key)) if !plugin.is_empty() && !key.is_empty() => {
                    config
                        .by_plugin
                        .entry(plugin.to_string())
                        .or_default()
                        .insert(key.to_string(), value);
                }
                _ => {
                    config.all.insert(key, value);
                }
            }
        }
        config
    }

    /// What plugin `name` reads.
    pub fn for_plugin(&self, name: &str) -> HashMap<String, String> {
        let mut values = self.all.clone();
        if let Some(own) = self.by_plugin.get(name) {
            values.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        values
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            timeout: Duration::from_millis(100),
            max_mutations: 1_000,
            output: crate::domain::OutputLimits::default(),
            plugin_config: PluginConfig::default(),
            isolation: IsolationConfig::default(),
        }
    }
}

/// The wasmtime configuration; the compiler child uses the same one (without the pool), so
/// that what it compiles loads here.
pub(super) fn wasm_config(limits: &Limits, pooled: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);

    if pooled {
        let mut pool = PoolingAllocationConfig::new();
        let instances = limits.instances as u32;
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * instances)
            .total_memories(POOL_INSTANCES * limits.memories as u32)
            .total_tables(POOL_INSTANCES * limits.tables as u32)
            .total_stacks(0)
            .max_core_instances_per_component(instances)
            .max_memories_per_component(limits.memories as u32)
            .max_memories_per_module(limits.memories as u32)
            .max_tables_per_component(limits.tables as u32)
            .max_memory_size(limits.memory_bytes)
            .table_elements(limits.table_elements)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(Enabled::No);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Compiles and links plugins and hands out sandboxed stores for their calls.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<PluginState>,
    config: SandboxConfig,
    calls: InFlight,
    /// How long each plugin version's calls take (served at `/metrics`).
    call_durations: crate::metrics::HistogramFamily<2>,
}

/// A component linked against the host, by the contract version it exports: every plugin has
/// `handle`; `checked` is there when it also exports `self-test`. A plugin of an earlier
/// contract is called through its `handle` export with the current message type (the same
/// record in every version), and its output is read in its own types.
pub enum Linked {
    V0_3 {
        handler: HandlerPre<PluginState>,
        checked: Option<checked::CheckedHandlerPre<PluginState>>,
    },
    V0_2 {
        handler: v0_2::HandlerPre<PluginState>,
        /// Where `handle` is among the component's exports.
        handle: wasmtime::component::ComponentExportIndex,
        checked: Option<v0_2::checked::CheckedHandlerPre<PluginState>>,
    },
    V0_1 {
        handler: v0_1::HandlerPre<PluginState>,
        handle: wasmtime::component::ComponentExportIndex,
        checked: Option<v0_1::checked::CheckedHandlerPre<PluginState>>,
    },
}

impl Linked {
    /// The contract version the component targets.
    pub fn contract(&self) -> &'static str {
        match self {
            Self::V0_3 { .. } => "sluice:handler@0.3.0",
            Self::V0_2 { .. } => "sluice:handler@0.2.0",
            Self::V0_1 { .. } => "sluice:handler@0.1.0",
        }
    }

    pub fn instance_pre(&self) -> &wasmtime::component::InstancePre<PluginState> {
        match self {
            Self::V0_3 { handler, .. } => handler.instance_pre(),
            Self::V0_2 { handler, .. } => handler.instance_pre(),
            Self::V0_1 { handler, .. } => handler.instance_pre(),
        }
    }

    /// Instantiate the component and run its self-test, when it declares one: the
    /// instantiation's outcome, then the call's (a trap), then the test's own verdict.
    #[allow(clippy::type_complexity)] // the three outcomes are the point
    pub fn self_test(
        &self,
        store: &mut Store<PluginState>,
    ) -> Option<wasmtime::Result<wasmtime::Result<Result<(), String>>>> {
        match self {
            Self::V0_3 {
                checked: Some(checked),
                ..
            } => Some(
                checked
                    .instantiate(&mut *store)
                    .map(|instance| instance.call_self_test(store)),
            ),
            Self::V0_2 {
                checked: Some(checked),
                ..
            } => Some(
                checked
                    .instantiate(&mut *store)
                    .map(|instance| instance.call_self_test(store)),
            ),
            Self::V0_1 {
                checked: Some(checked),
                ..
            } => Some(
                checked
                    .instantiate(&mut *store)
                    .map(|instance| instance.call_self_test(store)),
            ),
            _ => None,
        }
    }

    pub fn has_self_test(&self) -> bool {
        match self {
            Self::V0_3 { checked, .. } => checked.is_some(),
            Self::V0_2 { checked, .. } => checked.is_some(),
            Self::V0_1 { checked, .. } => checked.is_some(),
        }
    }
}

impl Sandbox {
    pub fn new(mut config: SandboxConfig) -> anyhow::Result<Arc<Self>> {
        config.timeout = config.timeout.min(MAX_TIMEOUT);
        let engine = Engine::new(&wasm_config(&config.limits, true))
            .map_err(anyhow::Error::from)
            .context("creating the wasm engine")?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:http")?;
        Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the host interface")?;
        v0_2::Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the host interface of contract 0.2")?;
        v0_1::Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the host interface of contract 0.1")?;
        spawn_epoch_ticker(engine.weak()).context("starting the epoch ticker")?;
        Ok(Arc::new(Self {
            engine,
            linker,
            config,
            calls: InFlight::default(),
            call_durations: crate::metrics::seconds_family(),
        }))
    }

    /// Plugin call durations by plugin and version.
    pub fn call_durations(&self) -> &crate::metrics::HistogramFamily<2> {
        &self.call_durations
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Link a compiled component: it must import nothing the host does not offer and export
    /// `handle` with the type of contract 0.3, 0.2 or 0.1.
    pub fn link(&self, component: &Component) -> anyhow::Result<Linked> {
        let pre = self.linker.instantiate_pre(component)?;
        let current = match HandlerPre::new(pre.clone()) {
            Ok(handler) => {
                let checked = checked::CheckedHandlerPre::new(pre).ok();
                return Ok(Linked::V0_3 { handler, checked });
            }
            Err(e) => e,
        };
        let handle = || {
            component
                .get_export_index(None, "handle")
                .context("the component exports no `handle`")
        };
        if let Ok(handler) = v0_2::HandlerPre::new(pre.clone()) {
            let checked = v0_2::checked::CheckedHandlerPre::new(pre).ok();
            return Ok(Linked::V0_2 {
                handler,
                handle: handle()?,
                checked,
            });
        }
        let Ok(handler) = v0_1::HandlerPre::new(pre.clone()) else {
            return Err(current.into());
        };
        let checked = v0_1::checked::CheckedHandlerPre::new(pre).ok();
        Ok(Linked::V0_1 {
            handler,
            handle: handle()?,
            checked,
        })
    }

    /// A fresh store for the calls of `plugin` (one, or a batch's), with limits set. The
    /// state behind it is reused from this thread's last store (building a WASI context costs
    /// more than a whole call), cleared first: nothing of one store is visible to the next.
    pub(super) fn store(
        &self,
        plugin: &Arc<str>,
        config: &Arc<HashMap<String, String>>,
    ) -> Store<PluginState> {
        let mut state = SPARE_STATE
            .with_borrow_mut(Option::take)
            .unwrap_or_else(PluginState::new);
        state.reset(self.config.limits, plugin, config);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        store
    }

    /// Before a call (and the instantiation that comes with a first one): its own deadline,
    /// counted from now, and its own log and stderr budget.
    pub(super) fn arm(&self, store: &mut Store<PluginState>) {
        let ticks = self.config.timeout.as_millis() / EPOCH_TICK.as_millis() + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.data_mut().begin_call();
        self.calls.start();
    }

    /// After a call.
    pub(super) fn disarm(&self) {
        self.calls.end();
    }

    /// Done with a store: its instance goes back to the pool, the state to this thread.
    pub(super) fn recycle(&self, store: Store<PluginState>) {
        let state = store.into_data();
        SPARE_STATE.with_borrow_mut(|spare| *spare = Some(state));
    }

    /// End every call in flight now, as if its deadline had passed (shutdown: a plugin must
    /// not hold the process). Later calls get their full deadline again.
    pub fn interrupt_all(&self) {
        for _ in 0..=MAX_TIMEOUT.as_millis() / EPOCH_TICK.as_millis() + 1 {
            self.engine.increment_epoch();
        }
    }

    /// How long the longest call in flight has been running past its deadline, if one has.
    pub fn overdue(&self) -> Option<Duration> {
        self.calls
            .longest()
            .and_then(|running| running.checked_sub(self.config.timeout))
            .filter(|over| *over > EPOCH_TICK * 2)
    }
}

thread_local! {
    /// The state of this thread's last plugin call, reused by the next one.
    static SPARE_STATE: RefCell<Option<PluginState>> = const { RefCell::new(None) };
}

/// When each thread's current call started, for `/readyz`: two atomic stores per call.
struct InFlight {
    origin: Instant,
    /// Nanoseconds since `origin` + 1 at which the slot's call started; 0: no call.
    started: [AtomicU64; IN_FLIGHT_SLOTS],
}

const IN_FLIGHT_SLOTS: usize = 64;

impl Default for InFlight {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            started: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

thread_local! {
    static SLOT: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % IN_FLIGHT_SLOTS
    };
}

impl InFlight {
    fn start(&self) {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        SLOT.with(|slot| self.started[*slot].store(now + 1, Ordering::Relaxed));
    }

    fn end(&self) {
        SLOT.with(|slot| self.started[*slot].store(0, Ordering::Relaxed));
    }

    fn longest(&self) -> Option<Duration> {
        let earliest = self
            .started
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|s| *s != 0)
            .min()?;
        Some(
            self.origin
                .elapsed()
                .saturating_sub(Duration::from_nanos(earliest - 1)),
        )
    }
}

/// The state of one plugin call.
pub struct PluginState {
    wasi: WasiCtx,
    http: wasmtime_wasi_http::WasiHttpCtx,
    http_hooks: wasi::DenyHttp,
    table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) stderr: Capture,
    plugin: Arc<str>,
    config: Arc<HashMap<String, String>>,
    /// Lines logged in this call, kept or not.
    pub(super) log_lines: u32,
}

impl PluginState {
    fn new() -> Self {
        let stderr = Capture::new(STDERR_CAPTURE_BYTES);
        Self {
            wasi: wasi::context(stderr.clone()),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_hooks: wasi::DenyHttp,
            table: ResourceTable::new(),
            limiter: Limiter::new(Limits::default()),
            stderr,
            plugin: Arc::from(""),
            config: Arc::default(),
            log_lines: 0,
        }
    }

    fn reset(&mut self, limits: Limits, plugin: &Arc<str>, config: &Arc<HashMap<String, String>>) {
        // Resources a trapped call left behind go with the old table.
        self.table = ResourceTable::new();
        self.limiter.reset(limits);
        self.stderr.clear();
        self.plugin = Arc::clone(plugin);
        self.config = Arc::clone(config);
        self.log_lines = 0;
    }

    /// A call starts: its own log budget, stderr and record of a cap hit (the memory the
    /// instance holds stays counted).
    fn begin_call(&mut self) {
        self.log_lines = 0;
        self.stderr.clear();
        self.limiter.exceeded = None;
    }

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

impl wasmtime_wasi_http::WasiHttpView for PluginState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            hooks: &mut self.http_hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl super::bindings::sluice::handler::types::Host for PluginState {}

/// The host interface of an earlier contract on `$state`, as its current one (the same
/// functions; only the level enum is a type of its own in each version). Also used by the test
/// runner (`kit::runner`).
macro_rules! earlier_host {
    ($version:ident, $state:ty) => {
        impl $crate::runtime::bindings::$version::sluice::handler::types::Host for $state {}

        impl $crate::runtime::bindings::$version::sluice::handler::host::Host for $state {
            fn log(
                &mut self,
                level: $crate::runtime::bindings::$version::sluice::handler::host::Level,
                message: String,
            ) {
                use $crate::runtime::bindings::Level;
                use $crate::runtime::bindings::$version::sluice::handler::host::Level as Old;
                let level = match level {
                    Old::Trace => Level::Trace,
                    Old::Debug => Level::Debug,
                    Old::Info => Level::Info,
                    Old::Warn => Level::Warn,
                    Old::Error => Level::Error,
                };
                $crate::runtime::bindings::sluice::handler::host::Host::log(self, level, message);
            }

            fn get_config(&mut self, key: String) -> Option<String> {
                $crate::runtime::bindings::sluice::handler::host::Host::get_config(self, key)
            }
        }
    };
}
pub(crate) use earlier_host;

earlier_host!(v0_2, PluginState);
earlier_host!(v0_1, PluginState);

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

/// The last `max` bytes of `text` (on a character boundary): where a panic's message is, after
/// whatever a plugin wrote before it.
pub(crate) fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
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
