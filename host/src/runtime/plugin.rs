//! One loaded plugin version: a pre-linked component instantiated afresh for every message.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use wasmtime::Trap;
use wasmtime::component::Component;

use super::bindings;
use super::engine::{Linked, PluginState, Sandbox, truncate};
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

    /// Run the plugin on one message in a fresh instance. Synchronous CPU work bounded by the
    /// sandbox's deadline: call it from a blocking thread, never from an async task.
    pub fn handle(&self, message: &bindings::Message) -> Result<Vec<Mutation>, HandleError> {
        self.handle_with(message, &self.config)
    }

    /// The same with other configuration values (fixture tests).
    pub fn handle_with(
        &self,
        message: &bindings::Message,
        config: &Arc<HashMap<String, String>>,
    ) -> Result<Vec<Mutation>, HandleError> {
        let started = std::time::Instant::now();
        let result = self.call(message, config);
        self.durations.observe(started.elapsed().as_secs_f64());
        self.handled.fetch_add(1, Ordering::Relaxed);
        match &result {
            Ok(_) => {}
            Err(HandleError::Rejected(_)) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn call(
        &self,
        message: &bindings::Message,
        config: &Arc<HashMap<String, String>>,
    ) -> Result<Vec<Mutation>, HandleError> {
        let linked = match &self.code {
            Code::Wasm(linked) => linked,
            Code::Native(handler) => {
                let output = handler(message).map_err(|e| match e {
                    bindings::HandlerError::InvalidMessage(reason) => {
                        HandleError::InvalidMessage(reason)
                    }
                    bindings::HandlerError::Rejected(reason) => HandleError::Rejected(reason),
                })?;
                return self.validate_output(output);
            }
        };
        let mut store = self.sandbox.store(&self.label, config);
        let outcome = linked
            .handler
            .instantiate(&mut store)
            .and_then(|handler| handler.call_handle(&mut store, message));
        let dropped = store.data().dropped_log_lines();
        if dropped > 0 {
            tracing::warn!(target: "plugin", plugin = %self.label, dropped,
                           "plugin logged too much in one call; lines dropped");
        }
        let result = match outcome {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(bindings::HandlerError::InvalidMessage(reason))) => {
                Err(HandleError::InvalidMessage(reason))
            }
            Ok(Err(bindings::HandlerError::Rejected(reason))) => Err(HandleError::Rejected(reason)),
            Err(error) => Err(self.classify(&store, &error)),
        };
        // The instance goes back to the pool here: never reused after a call.
        self.sandbox.recycle(store);
        self.validate_output(result?)
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

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}
