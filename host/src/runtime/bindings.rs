//! The one place the host generates bindings from `wit/`: the `handler` world plugins export.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
});

pub use self::sluice::handler::host::Level;
pub use self::sluice::handler::types::{Header, StockAdjustment};
