//! The WASM sandbox: bytes + metadata of one message in, validated mutations out.
//! Knows nothing about Kafka, HTTP or Postgres.

pub mod bindings;
mod engine;
mod limits;
mod plugin;
mod registry;

pub use engine::{LoadError, PluginEngine, PluginState, SandboxConfig, version_of};
pub use limits::Limits;
pub use plugin::{HandleError, Plugin};
pub use registry::{Registry, Slot};

/// The stock plugin built from `plugins/stock` and embedded at build time.
pub const STOCK_PLUGIN: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_plugin_stock.wasm"));
