//! The one place the host generates bindings from `wit/`: the `handler` world every plugin
//! exports, and `checked-handler` (the same plus `self-test`) for plugins that vouch for
//! themselves. Both share one set of interface types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
});

/// The `checked-handler` world: `handle` and `self-test`.
pub mod checked {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "checked-handler",
        with: {
            "sluice:handler/types": super::sluice::handler::types,
            "sluice:handler/host": super::sluice::handler::host,
        },
    });
}

pub use self::sluice::handler::host::Level;
pub use self::sluice::handler::types::{Header, StockAdjustment};
