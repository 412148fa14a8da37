//! The WASM sandbox: bytes + metadata of one message in, validated mutations out.
//! Knows nothing about Kafka, HTTP or Postgres.

pub mod bindings;
pub mod compile;
mod engine;
mod error;
pub mod explain;
mod limits;
mod plugin;
mod registry;
mod wasi;

use sha2::{Digest, Sha256};

pub use compile::{CompileLimits, Compiler};
pub(crate) use engine::earlier_host;
pub use engine::{
    Isolation, IsolationConfig, MAX_TIMEOUT, PluginConfig, PluginState, Sandbox, SandboxConfig,
};
pub use error::{HandleError, LoadError};
pub use limits::Limits;
pub use plugin::{Calls, Counts, NativeHandler, Plugin};
pub use registry::{Registry, Slot};
pub use wasi::WouldBlock;

/// The stock plugin built from `plugins/stock` and embedded at build time.
pub const STOCK_PLUGIN: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_plugin_stock.wasm"));

/// The zero-code sink built from `plugins/sink` and embedded at build time.
pub const SINK_PLUGIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sluice_plugin_sink.wasm"));

/// The plugins in the binary, by name.
pub const BUNDLED: [(&str, &[u8]); 2] = [("stock", STOCK_PLUGIN), ("sink", SINK_PLUGIN)];

/// A plugin version: the sha256 of the component bytes, hex.
pub fn version_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests;
