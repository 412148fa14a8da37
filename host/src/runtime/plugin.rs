//! One loaded plugin version: a pre-linked component, instantiated afresh for every record or
//! for every batch (its isolation), and the calls made in those instances.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use wasmtime::component::Component;
use wasmtime::{Store, Trap};

use super::bindings;
use super::engine::{Isolation, Linked, PluginState, Sandbox, tail};
use super::error::{HandleError, LoadError, one_line};
use super::wasi::WouldBlock;
use crate::domain::tables::{Cell, Float, TableValue};
use crate::domain::{Allowances, Mutation, ProductId, Record};

/// What a plugin version has done since it was loaded here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub handled: u64,
    pub failed: u64,
    pub rejected: u64,
}

/// A handler compiled into the host, for measuring the sandbox against: same contract, no
/// WebAssembly (`sluice bench`).
pub type NativeHandler =
    fn(&bindings::Message) -> Result<Vec<bindings::Mutation>, bindings::HandlerError>;

/// A plugin version: a compiled, linked component (or a native handler).
pub struct Plugin {
    name: Arc<str>,
    version: String,
    /// `name@short-version`, the tag on every log line the plugin writes.
    label: Arc<str>,
    loaded_at: DateTime<Utc>,
    code: Code,
    sandbox: Arc<Sandbox>,
    config: Arc<HashMap<String, String>>,
    handled: AtomicU64,
    /// Records whose call failed (invalid input, trap, deadline, refused output).
    failed: AtomicU64,
    /// Records the plugin refused on business grounds.
    rejected: AtomicU64,
    /// This version's call durations (`sluice_plugin_call_duration_seconds`).
    durations: prometheus_client::metrics::histogram::Histogram,
    isolation: Isolation,
}

enum Code {
    Wasm(Linked),
    Native(NativeHandler),
}

impl Plugin {
    /// Link `component` as `version` of plugin `name` and check it in the sandbox: one trial
    /// instance (limits that only instantiation reveals), then its `self-test` if it declares
    /// one. Blocking CPU work bounded by the call deadline: call from a blocking thread.
    pub fn load(
        sandbox: &Arc<Sandbox>,
        name: &str,
        version: String,
        component: &Component,
    ) -> Result<Self, LoadError> {
        let linked = sandbox.link(component).map_err(|e| {
            let error = one_line(&format!("{e:#}"));
            LoadError::Link(super::explain::link_problem(
                sandbox.engine(),
                component,
                &error,
            ))
        })?;
        let plugin = Self::new(sandbox, name, version, Code::Wasm(linked));
        plugin.check(plugin.linked())?;
        Ok(plugin)
    }

    /// A native handler as plugin `name`, for comparing the sandbox with native code.
    pub fn native(sandbox: &Arc<Sandbox>, name: &str, handler: NativeHandler) -> Self {
        Self::new(sandbox, name, "native".into(), Code::Native(handler))
    }

    fn new(sandbox: &Arc<Sandbox>, name: &str, version: String, code: Code) -> Self {
        let label = format!("{name}@{}", crate::metrics::short_version(&version));
        let durations = sandbox
            .call_durations()
            .get_or_create_owned(&crate::metrics::plugin_labels(name, &version));
        Self {
            name: name.into(),
            version,
            label: label.into(),
            loaded_at: Utc::now(),
            code,
            sandbox: Arc::clone(sandbox),
            config: Arc::new(sandbox.config().plugin_config.for_plugin(name)),
            isolation: sandbox.config().isolation.for_plugin(name),
            handled: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            durations,
        }
    }

    /// The component's imports and exports (none for a native handler).
    pub fn describe(&self) -> (Vec<String>, Vec<String>) {
        match self.linked() {
            Some(linked) => {
                super::explain::describe(self.sandbox.engine(), linked.instance_pre().component())
            }
            None => (Vec::new(), Vec::new()),
        }
    }

    /// The contract version the plugin targets (`sluice:handler@0.3.0`; the current one for a
    /// native handler).
    pub fn contract(&self) -> &'static str {
        self.linked()
            .map_or("sluice:handler@0.3.0", Linked::contract)
    }

    fn linked(&self) -> Option<&Linked> {
        match &self.code {
            Code::Wasm(linked) => Some(linked),
            Code::Native(_) => None,
        }
    }

    /// A trial instance, and the self-test when there is one.
    fn check(&self, linked: Option<&Linked>) -> Result<(), LoadError> {
        let Some(linked) = linked else {
            return Ok(());
        };
        let mut store = self.sandbox.store(&self.label, &self.config);
        self.sandbox.arm(&mut store);
        let result = match linked.self_test(&mut store) {
            None => linked
                .instance_pre()
                .instantiate(&mut store)
                .map(drop)
                .map_err(|e| LoadError::Limits(self.reason(&store, &e))),
            Some(Err(e)) => Err(LoadError::Limits(self.reason(&store, &e))),
            Some(Ok(Ok(Ok(())))) => Ok(()),
            Some(Ok(Ok(Err(reason)))) => Err(LoadError::SelfTest(reason)),
            Some(Ok(Err(e))) => Err(LoadError::SelfTest(self.classify(&store, &e).to_string())),
        };
        self.sandbox.disarm();
        self.sandbox.recycle(store);
        result
    }

    /// Records this version has handled, how many of its calls failed (invalid input, trap,
    /// deadline, refused output) and how many it rejected on business grounds.
    pub fn counts(&self) -> Counts {
        Counts {
            handled: self.handled.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// The configuration this plugin reads with `host.get-config`.
    pub fn config(&self) -> &HashMap<String, String> {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sha256 of the component bytes, hex.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn loaded_at(&self) -> DateTime<Utc> {
        self.loaded_at
    }

    /// Whether the plugin declares a `self-test`.
    pub fn has_self_test(&self) -> bool {
        self.linked().is_some_and(Linked::has_self_test)
    }

    /// How much of an instance this plugin's calls share.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The calls of a batch on this thread, as this plugin's isolation has them: each in a
    /// fresh instance, or in order in one instance per batch; outputs checked against what
    /// `allowed` (the route) lets the plugin do. Synchronous CPU work bounded by the sandbox's
    /// deadline: use it on a blocking thread, never in an async task.
    pub fn calls<'a>(&'a self, allowed: &'a Allowances) -> Calls<'a> {
        self.calls_in(self.isolation, allowed)
    }

    /// The same in an isolation of the caller's choosing (the benchmark compares them).
    pub fn calls_in<'a>(&'a self, isolation: Isolation, allowed: &'a Allowances) -> Calls<'a> {
        Calls::new(self, &self.config, isolation, allowed)
    }

    /// Run the plugin on one message, with its key's `state`, in a fresh instance (redrive, the
    /// plugin kit).
    pub fn handle(
        &self,
        message: &bindings::Message,
        state: Option<&[u8]>,
        allowed: &Allowances,
    ) -> Result<Vec<Mutation>, HandleError> {
        self.handle_with(message, state, allowed, &self.config)
    }

    /// The same with other configuration values (fixture tests).
    pub fn handle_with(
        &self,
        message: &bindings::Message,
        state: Option<&[u8]>,
        allowed: &Allowances,
        config: &Arc<HashMap<String, String>>,
    ) -> Result<Vec<Mutation>, HandleError> {
        Calls::new(self, config, Isolation::Record, allowed).handle(message, state)
    }

    fn count(&self, result: &Result<Vec<Mutation>, HandleError>, took: std::time::Duration) {
        self.durations.observe(took.as_secs_f64());
        self.handled.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {}
            Err(HandleError::Rejected(_)) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn call_native(
        &self,
        handler: NativeHandler,
        message: &bindings::Message,
    ) -> Result<Vec<bindings::Mutation>, HandleError> {
        handler(message).map_err(handler_error)
    }

    fn classify(
        &self,
        store: &wasmtime::Store<PluginState>,
        error: &wasmtime::Error,
    ) -> HandleError {
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return HandleError::Timeout(self.sandbox.config().timeout.as_millis());
        }
        if let Some(blocked) = error.downcast_ref::<WouldBlock>() {
            return HandleError::Blocked(blocked.to_string());
        }
        HandleError::Trap(self.reason(store, error))
    }

    /// Why a call or an instantiation failed: the cap that was hit, else the trap and what
    /// the plugin wrote to stderr.
    fn reason(&self, store: &wasmtime::Store<PluginState>, error: &wasmtime::Error) -> String {
        let state = store.data();
        if let Some(exceeded) = &state.limiter.exceeded {
            return exceeded.clone();
        }
        let stderr = state.stderr.contents();
        let stderr = String::from_utf8_lossy(&stderr);
        // Its end, where a panic's message is, on one line.
        let stderr = stderr.trim();
        let cut = tail(stderr, 1024);
        let stderr = match cut.len() < stderr.len() {
            true => format!("…{}", one_line(cut)),
            false => one_line(cut),
        };
        let reason = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => one_line(&format!("{error:#}")),
        };
        tracing::debug!(plugin = %self.label, %reason, "plugin call failed");
        if stderr.is_empty() {
            reason
        } else {
            format!("{reason}; stderr: {stderr}")
        }
    }

    /// The host's mutations for a call's output, if it is within the sandbox's and the
    /// route's bounds.
    fn validate_output(
        &self,
        output: Vec<bindings::Mutation>,
        allowed: &Allowances,
        has_key: bool,
    ) -> Result<Vec<Mutation>, HandleError> {
        let max = self.sandbox.config().max_mutations;
        if output.len() > max {
            return Err(HandleError::InvalidOutput(format!(
                "{} mutations for one message, at most {max} allowed",
                output.len()
            )));
        }
        let mutations = output
            .into_iter()
            .map(|mutation| match mutation {
                bindings::Mutation::StockAdjustment(adjustment) => stock(adjustment),
                bindings::Mutation::Emit(emitted) => Ok(Mutation::Emit(Record {
                    topic: emitted.topic,
                    key: emitted.key,
                    payload: emitted.value,
                    headers: emitted.headers.into_iter().map(Into::into).collect(),
                })),
                bindings::Mutation::SetState(value) => Ok(Mutation::SetState(value)),
                bindings::Mutation::ClearState => Ok(Mutation::ClearState),
                bindings::Mutation::Upsert(upsert) => Ok(Mutation::Upsert {
                    table: upsert.table,
                    row: cells(upsert.row),
                }),
                bindings::Mutation::Delete(delete) => Ok(Mutation::Delete {
                    table: delete.table,
                    key: cells(delete.key),
                }),
                bindings::Mutation::Add(add) => Ok(Mutation::Add {
                    table: add.table,
                    key: cells(add.key),
                    column: add.column,
                    delta: value(add.delta),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        allowed
            .check(&self.sandbox.config().output, has_key, &mutations)
            .map_err(HandleError::InvalidOutput)?;
        Ok(mutations)
    }
}

fn stock(adjustment: bindings::StockAdjustment) -> Result<Mutation, HandleError> {
    let product_id = ProductId::parse(&adjustment.product_id)
        .map_err(|e| HandleError::InvalidOutput(e.to_string()))?;
    Ok(Mutation::StockAdjustment {
        product_id,
        delta: adjustment.delta,
    })
}

fn cells(cells: Vec<bindings::Cell>) -> Vec<Cell> {
    cells
        .into_iter()
        .map(|cell| Cell::new(cell.column, value(cell.value)))
        .collect()
}

fn value(value: bindings::Value) -> TableValue {
    use bindings::Value as V;
    match value {
        V::Null => TableValue::Null,
        V::Boolean(b) => TableValue::Boolean(b),
        V::Int(i) => TableValue::Int(i),
        V::Float(f) => TableValue::Float(Float(f)),
        V::Text(s) => TableValue::Text(s),
        V::Bytes(b) => TableValue::Bytes(b),
        V::Json(s) => TableValue::Json(s),
        V::Timestamp(s) => TableValue::Timestamp(s),
    }
}

fn handler_error(error: bindings::HandlerError) -> HandleError {
    match error {
        bindings::HandlerError::InvalidMessage(reason) => HandleError::InvalidMessage(reason),
        bindings::HandlerError::Rejected(reason) => HandleError::Rejected(reason),
    }
}

/// A contract 0.2 output in the current contract's terms (0.2 has no table writes).
fn from_v0_2(
    output: Result<Vec<bindings::v0_2::Mutation>, bindings::v0_2::HandlerError>,
) -> Result<Vec<bindings::Mutation>, bindings::HandlerError> {
    use bindings::v0_2::HandlerError as Old;
    use bindings::v0_2::Mutation as M;
    let header = |h: bindings::v0_2::sluice::handler::types::Header| bindings::Header {
        key: h.key,
        value: h.value,
    };
    match output {
        Ok(mutations) => Ok(mutations
            .into_iter()
            .map(|mutation| match mutation {
                M::StockAdjustment(a) => {
                    bindings::Mutation::StockAdjustment(bindings::StockAdjustment {
                        product_id: a.product_id,
                        delta: a.delta,
                    })
                }
                M::Emit(e) => bindings::Mutation::Emit(bindings::Emitted {
                    topic: e.topic,
                    key: e.key,
                    value: e.value,
                    headers: e.headers.into_iter().map(header).collect(),
                }),
                M::SetState(value) => bindings::Mutation::SetState(value),
                M::ClearState => bindings::Mutation::ClearState,
            })
            .collect()),
        Err(Old::InvalidMessage(reason)) => Err(bindings::HandlerError::InvalidMessage(reason)),
        Err(Old::Rejected(reason)) => Err(bindings::HandlerError::Rejected(reason)),
    }
}

/// A contract 0.1 output in the current contract's terms (0.1 has stock adjustments only).
fn from_v0_1(
    output: Result<Vec<bindings::v0_1::Mutation>, bindings::v0_1::HandlerError>,
) -> Result<Vec<bindings::Mutation>, bindings::HandlerError> {
    use bindings::v0_1::HandlerError as Old;
    match output {
        Ok(mutations) => Ok(mutations
            .into_iter()
            .map(|bindings::v0_1::Mutation::StockAdjustment(a)| {
                bindings::Mutation::StockAdjustment(bindings::StockAdjustment {
                    product_id: a.product_id,
                    delta: a.delta,
                })
            })
            .collect()),
        Err(Old::InvalidMessage(reason)) => Err(bindings::HandlerError::InvalidMessage(reason)),
        Err(Old::Rejected(reason)) => Err(bindings::HandlerError::Rejected(reason)),
    }
}

/// The `handle` export of a live instance, by contract version.
enum Handle {
    V0_3(bindings::Handler),
    V0_2(HandleV0_2<'static>),
    V0_1(HandleV0_1),
}

/// Contract 0.2's `handle`, typed with the current `message` record (the same record in every
/// version, so the component model's type check accepts it): no copy of the message.
type HandleV0_2<'a> = wasmtime::component::TypedFunc<
    (&'a bindings::Message, Option<&'a [u8]>),
    (Result<Vec<bindings::v0_2::Mutation>, bindings::v0_2::HandlerError>,),
>;

/// Contract 0.1's `handle`, likewise.
type HandleV0_1 = wasmtime::component::TypedFunc<
    (&'static bindings::Message,),
    (Result<Vec<bindings::v0_1::Mutation>, bindings::v0_1::HandlerError>,),
>;

impl Handle {
    fn instantiate(linked: &Linked, store: &mut Store<PluginState>) -> wasmtime::Result<Self> {
        let export = |store: &mut Store<PluginState>,
                      pre: &wasmtime::component::InstancePre<PluginState>,
                      handle| {
            let instance = pre.instantiate(&mut *store)?;
            instance
                .get_func(&mut *store, handle)
                .ok_or_else(|| wasmtime::format_err!("the component exports no `handle`"))
        };
        match linked {
            Linked::V0_3 { handler, .. } => handler.instantiate(store).map(Self::V0_3),
            Linked::V0_2 {
                handler, handle, ..
            } => {
                let func = export(store, handler.instance_pre(), handle)?;
                Ok(Self::V0_2(func.typed(&*store)?))
            }
            Linked::V0_1 {
                handler, handle, ..
            } => {
                let func = export(store, handler.instance_pre(), handle)?;
                Ok(Self::V0_1(func.typed(&*store)?))
            }
        }
    }

    fn call(
        &self,
        store: &mut Store<PluginState>,
        message: &bindings::Message,
        state: Option<&[u8]>,
    ) -> wasmtime::Result<Result<Vec<bindings::Mutation>, bindings::HandlerError>> {
        // `TypedFunc` is covariant in its parameters (a call only borrows them).
        match self {
            Self::V0_3(handler) => handler.call_handle(store, message, state),
            Self::V0_2(func) => {
                let func: &HandleV0_2<'_> = func;
                let (output,) = func.call(store, (message, state))?;
                Ok(from_v0_2(output))
            }
            Self::V0_1(func) => {
                let func: &wasmtime::component::TypedFunc<
                    (&bindings::Message,),
                    (Result<Vec<bindings::v0_1::Mutation>, bindings::v0_1::HandlerError>,),
                > = func;
                let (output,) = func.call(store, (message,))?;
                Ok(from_v0_1(output))
            }
        }
    }
}

/// The calls of one plugin version on one thread, for one batch: each in a fresh instance
/// (`Isolation::Record`), or in order in one instance (`Isolation::Batch`) that any failed call
/// discards.
pub struct Calls<'a> {
    plugin: &'a Plugin,
    config: &'a Arc<HashMap<String, String>>,
    isolation: Isolation,
    /// What the route lets the plugin's outputs do.
    allowed: &'a Allowances,
    /// The instance the next call reuses (batch isolation).
    live: Option<(Store<PluginState>, Handle)>,
}

impl<'a> Calls<'a> {
    fn new(
        plugin: &'a Plugin,
        config: &'a Arc<HashMap<String, String>>,
        isolation: Isolation,
        allowed: &'a Allowances,
    ) -> Self {
        Self {
            plugin,
            config,
            isolation,
            allowed,
            live: None,
        }
    }

    /// Run the plugin on one message, with its key's `state` (contract 0.1 plugins get none).
    pub fn handle(
        &mut self,
        message: &bindings::Message,
        state: Option<&[u8]>,
    ) -> Result<Vec<Mutation>, HandleError> {
        let started = std::time::Instant::now();
        let reused = self.live.is_some();
        let mut result = self.call(message, state);
        // A trap in an instance that earlier records used may be theirs (memory they left
        // behind): the record gets the fresh instance it would have had on its own.
        if reused && matches!(result, Err(HandleError::Trap(_))) {
            result = self.call(message, state);
        }
        let result = result.and_then(|output| {
            self.plugin
                .validate_output(output, self.allowed, message.key.is_some())
        });
        self.plugin.count(&result, started.elapsed());
        result
    }

    fn call(
        &mut self,
        message: &bindings::Message,
        state: Option<&[u8]>,
    ) -> Result<Vec<bindings::Mutation>, HandleError> {
        let plugin = self.plugin;
        let linked = match &plugin.code {
            Code::Wasm(linked) => linked,
            Code::Native(handler) => return plugin.call_native(*handler, message),
        };
        let sandbox = &plugin.sandbox;
        let (mut store, instance) = match self.live.take() {
            Some((store, handle)) => (store, Some(handle)),
            None => (sandbox.store(&plugin.label, self.config), None),
        };
        sandbox.arm(&mut store);
        let outcome = match instance {
            Some(handle) => Ok(handle),
            None => Handle::instantiate(linked, &mut store),
        }
        .and_then(|handle| Ok((handle.call(&mut store, message, state)?, handle)));
        sandbox.disarm();
        let dropped = store.data().dropped_log_lines();
        if dropped > 0 {
            tracing::warn!(target: "plugin", plugin = %plugin.label, dropped,
                           "plugin logged too much in one call; lines dropped");
        }
        match outcome {
            Ok((output, handle)) => {
                // The call returned: its instance is sound, kept for the batch's next record
                // or given back.
                match self.isolation {
                    Isolation::Batch => self.live = Some((store, handle)),
                    Isolation::Record => sandbox.recycle(store),
                }
                output.map_err(handler_error)
            }
            Err(error) => {
                // A trapped instance is never entered again.
                let error = plugin.classify(&store, &error);
                sandbox.recycle(store);
                Err(error)
            }
        }
    }
}

impl Drop for Calls<'_> {
    fn drop(&mut self) {
        if let Some((store, _)) = self.live.take() {
            self.plugin.sandbox.recycle(store);
        }
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}
