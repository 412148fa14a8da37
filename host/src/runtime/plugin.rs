//! One loaded plugin version: a pre-linked component, instantiated afresh for every record or
//! for every batch (its isolation), and the calls made in those instances.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use wasmtime::component::Component;
use wasmtime::{Store, Trap};

use super::bindings;
use super::engine::{Isolation, Linked, PluginState, Sandbox, truncate};
use super::error::{HandleError, LoadError, one_line};
use super::wasi::WouldBlock;
use crate::domain::{Mutation, ProductId};

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
            Some(linked) => super::explain::describe(
                self.sandbox.engine(),
                linked.handler.instance_pre().component(),
            ),
            None => (Vec::new(), Vec::new()),
        }
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
        let result = match &linked.checked {
            None => linked
                .handler
                .instance_pre()
                .instantiate(&mut store)
                .map(drop)
                .map_err(|e| LoadError::Limits(self.reason(&store, &e))),
            Some(checked) => match checked.instantiate(&mut store) {
                Err(e) => Err(LoadError::Limits(self.reason(&store, &e))),
                Ok(instance) => match instance.call_self_test(&mut store) {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(reason)) => Err(LoadError::SelfTest(reason)),
                    Err(e) => Err(LoadError::SelfTest(self.classify(&store, &e).to_string())),
                },
            },
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
        self.linked().is_some_and(|linked| linked.checked.is_some())
    }

    /// How much of an instance this plugin's calls share.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The calls of a batch on this thread, as this plugin's isolation has them: each in a
    /// fresh instance, or in order in one instance per batch. Synchronous CPU work bounded by
    /// the sandbox's deadline: use it on a blocking thread, never in an async task.
    pub fn calls(&self) -> Calls<'_> {
        self.calls_in(self.isolation)
    }

    /// The same in an isolation of the caller's choosing (the benchmark compares them).
    pub fn calls_in(&self, isolation: Isolation) -> Calls<'_> {
        Calls::new(self, &self.config, isolation)
    }

    /// Run the plugin on one message in a fresh instance (redrive, the plugin kit).
    pub fn handle(&self, message: &bindings::Message) -> Result<Vec<Mutation>, HandleError> {
        self.handle_with(message, &self.config)
    }

    /// The same with other configuration values (fixture tests).
    pub fn handle_with(
        &self,
        message: &bindings::Message,
        config: &Arc<HashMap<String, String>>,
    ) -> Result<Vec<Mutation>, HandleError> {
        Calls::new(self, config, Isolation::Record).handle(message)
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
    ) -> Result<Vec<Mutation>, HandleError> {
        let output = handler(message).map_err(|e| match e {
            bindings::HandlerError::InvalidMessage(reason) => HandleError::InvalidMessage(reason),
            bindings::HandlerError::Rejected(reason) => HandleError::Rejected(reason),
        })?;
        self.validate_output(output)
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
        let stderr = truncate(stderr.trim(), 1024);
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

    fn validate_output(
        &self,
        output: Vec<bindings::Mutation>,
    ) -> Result<Vec<Mutation>, HandleError> {
        let max = self.sandbox.config().max_mutations;
        if output.len() > max {
            return Err(HandleError::InvalidOutput(format!(
                "{} mutations for one message, at most {max} allowed",
                output.len()
            )));
        }
        output
            .into_iter()
            .map(|mutation| match mutation {
                bindings::Mutation::StockAdjustment(adjustment) => {
                    let product_id = ProductId::parse(&adjustment.product_id)
                        .map_err(|e| HandleError::InvalidOutput(e.to_string()))?;
                    Ok(Mutation::StockAdjustment {
                        product_id,
                        delta: adjustment.delta,
                    })
                }
            })
            .collect()
    }
}

/// The calls of one plugin version on one thread, for one batch: each in a fresh instance
/// (`Isolation::Record`), or in order in one instance (`Isolation::Batch`) that any failed call
/// discards.
pub struct Calls<'a> {
    plugin: &'a Plugin,
    config: &'a Arc<HashMap<String, String>>,
    isolation: Isolation,
    /// The instance the next call reuses (batch isolation).
    live: Option<(Store<PluginState>, bindings::Handler)>,
}

impl<'a> Calls<'a> {
    fn new(
        plugin: &'a Plugin,
        config: &'a Arc<HashMap<String, String>>,
        isolation: Isolation,
    ) -> Self {
        Self {
            plugin,
            config,
            isolation,
            live: None,
        }
    }

    /// Run the plugin on one message.
    pub fn handle(&mut self, message: &bindings::Message) -> Result<Vec<Mutation>, HandleError> {
        let started = std::time::Instant::now();
        let reused = self.live.is_some();
        let mut result = self.call(message);
        // A trap in an instance that earlier records used may be theirs (memory they left
        // behind): the record gets the fresh instance it would have had on its own.
        if reused && matches!(result, Err(HandleError::Trap(_))) {
            result = self.call(message);
        }
        self.plugin.count(&result, started.elapsed());
        result
    }

    fn call(&mut self, message: &bindings::Message) -> Result<Vec<Mutation>, HandleError> {
        let plugin = self.plugin;
        let linked = match &plugin.code {
            Code::Wasm(linked) => linked,
            Code::Native(handler) => return plugin.call_native(*handler, message),
        };
        let sandbox = &plugin.sandbox;
        let (mut store, instance) = match self.live.take() {
            Some((store, handler)) => (store, Some(handler)),
            None => (sandbox.store(&plugin.label, self.config), None),
        };
        sandbox.arm(&mut store);
        let outcome = match instance {
            Some(handler) => Ok(handler),
            None => linked.handler.instantiate(&mut store),
        }
        .and_then(|handler| Ok((handler.call_handle(&mut store, message)?, handler)));
        sandbox.disarm();
        let dropped = store.data().dropped_log_lines();
        if dropped > 0 {
            tracing::warn!(target: "plugin", plugin = %plugin.label, dropped,
                           "plugin logged too much in one call; lines dropped");
        }
        let result = match outcome {
            Ok((output, handler)) => {
                // The call returned: its instance is sound, kept for the batch's next record
                // or given back.
                match self.isolation {
                    Isolation::Batch => self.live = Some((store, handler)),
                    Isolation::Record => sandbox.recycle(store),
                }
                output.map_err(|e| match e {
                    bindings::HandlerError::InvalidMessage(reason) => {
                        HandleError::InvalidMessage(reason)
                    }
                    bindings::HandlerError::Rejected(reason) => HandleError::Rejected(reason),
                })
            }
            Err(error) => {
                // A trapped instance is never entered again.
                let error = plugin.classify(&store, &error);
                sandbox.recycle(store);
                Err(error)
            }
        };
        plugin.validate_output(result?)
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
