//! One loaded plugin version: a pre-linked component instantiated afresh for every message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use wasmtime::Trap;

use super::bindings::{self, HandlerPre};
use super::engine::{LoadError, PluginEngine, PluginState, truncate};
use crate::domain::{Mutation, ProductId};

/// How a plugin call failed. Every case costs only the message that caused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The plugin said the message is unusable.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The plugin refused the message on business grounds.
    #[error("rejected by plugin: {0}")]
    Rejected(String),
    /// The call trapped: a panic, a memory or stack overflow, a bug in the plugin.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The call ran past its deadline and was interrupted.
    #[error("plugin exceeded its {0} ms deadline")]
    Timeout(u128),
    /// The plugin returned something the host will not apply.
    #[error("plugin output refused: {0}")]
    InvalidOutput(String),
}

impl HandleError {
    /// A stable, machine-readable name for the failure, stored with the message's outcome.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidMessage(_) => "invalid-message",
            Self::Rejected(_) => "rejected",
            Self::Trap(_) => "trap",
            Self::Timeout(_) => "timeout",
            Self::InvalidOutput(_) => "invalid-output",
        }
    }
}

/// A compiled, linked plugin version.
pub struct Plugin {
    name: Arc<str>,
    version: String,
    /// `name@short-version`, the tag on every log line the plugin writes.
    label: Arc<str>,
    loaded_at: DateTime<Utc>,
    pre: HandlerPre<PluginState>,
    engine: Arc<PluginEngine>,
    handled: AtomicU64,
    failed: AtomicU64,
}

impl Plugin {
    pub(super) fn new(
        name: &str,
        version: String,
        pre: HandlerPre<PluginState>,
        engine: Arc<PluginEngine>,
    ) -> Self {
        let label = format!("{name}@{}", &version[..12.min(version.len())]);
        Self {
            name: name.into(),
            version,
            label: label.into(),
            loaded_at: Utc::now(),
            pre,
            engine,
            handled: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Call the plugin's `self-test` export, if it has one. `Ok(false)`: it declares none.
    pub(super) fn self_test(&self) -> Result<bool, LoadError> {
        let mut store = self.engine.store(&self.label);
        let instance = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| LoadError::SelfTest(format!("instantiating: {e:#}")))?;
        let Some(func) = instance.get_func(&mut store, "self-test") else {
            return Ok(false);
        };
        let typed = func
            .typed::<(), (Result<(), String>,)>(&store)
            .map_err(|e| {
                LoadError::Link(format!("export `self-test` has the wrong type: {e:#}"))
            })?;
        match typed.call(&mut store, ()) {
            Ok((Ok(()),)) => Ok(true),
            Ok((Err(reason),)) => Err(LoadError::SelfTest(reason)),
            Err(trap) => Err(LoadError::SelfTest(
                self.classify_trap(&store, &trap, Instant::now())
                    .to_string(),
            )),
        }
    }

    /// Records this version has handled, and how many of them failed (error, trap, refusal).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.handled.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
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

    /// Run the plugin on one message in a fresh instance. Synchronous CPU work bounded by the
    /// sandbox's deadline: call it from a blocking thread, never from an async task.
    pub fn handle(&self, message: &bindings::Message) -> Result<Vec<Mutation>, HandleError> {
        let result = self.call(message);
        self.handled.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn call(&self, message: &bindings::Message) -> Result<Vec<Mutation>, HandleError> {
        let started = Instant::now();
        let mut store = self.engine.store(&self.label);
        let outcome = self
            .pre
            .instantiate(&mut store)
            .and_then(|handler| handler.call_handle(&mut store, message));
        let dropped = store.data().dropped_log_lines();
        if dropped > 0 {
            tracing::warn!(target: "plugin", plugin = %self.label, dropped,
                           "plugin logged too much in one call; lines dropped");
        }
        let output = match outcome {
            Ok(Ok(mutations)) => mutations,
            Ok(Err(bindings::HandlerError::InvalidMessage(reason))) => {
                return Err(HandleError::InvalidMessage(reason));
            }
            Ok(Err(bindings::HandlerError::Rejected(reason))) => {
                return Err(HandleError::Rejected(reason));
            }
            Err(error) => return Err(self.classify_trap(&store, &error, started)),
        };
        // The store, and with it the instance, is dropped here: never reused after a call.
        self.validate_output(output)
    }

    fn classify_trap(
        &self,
        store: &wasmtime::Store<PluginState>,
        error: &wasmtime::Error,
        started: Instant,
    ) -> HandleError {
        let state = store.data();
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return HandleError::Timeout(self.engine.config().timeout.as_millis());
        }
        if let Some(exceeded) = &state.limiter.exceeded {
            return HandleError::Trap(exceeded.clone());
        }
        let stderr = state.stderr.contents();
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = truncate(stderr.trim(), 1024);
        let reason = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        tracing::debug!(plugin = %self.label, elapsed = ?started.elapsed(), %reason, "plugin call failed");
        if stderr.is_empty() {
            HandleError::Trap(reason)
        } else {
            HandleError::Trap(format!("{reason}; stderr: {stderr}"))
        }
    }

    fn validate_output(
        &self,
        output: Vec<bindings::Mutation>,
    ) -> Result<Vec<Mutation>, HandleError> {
        let max = self.engine.config().max_mutations;
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
