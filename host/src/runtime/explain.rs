//! Why a component does not fit the host, in plain words: which import the host does not
//! offer (or in which version), which export is missing or has the wrong type.

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// The contract's package and version, as plugins built now import it.
pub const CONTRACT: &str = "sluice:handler@0.3.0";

/// The contract versions this host loads.
pub const CONTRACTS: &[&str] = &["0.3.0", "0.2.0", "0.1.0"];

/// The export every plugin has, in the contract's words.
pub const HANDLE_SIGNATURE: &str = "handle: func(message: message, state: option<list<u8>>) -> \
                                    result<list<mutation>, handler-error>";

/// Interfaces the host offers (any 0.2.x version for WASI).
const OFFERED: &[&str] = &[
    "sluice:handler/types",
    "sluice:handler/host",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
];

/// What is wrong with `component`, as one readable line; `error` is the linker's own report.
pub fn link_problem(engine: &Engine, component: &Component, error: &str) -> String {
    let ty = component.component_type();
    let mut problems = Vec::new();
    for (name, _) in ty.imports(engine) {
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        if interface.starts_with("sluice:handler/")
            && !version.is_empty()
            && !CONTRACTS.contains(&version)
        {
            problems.push(format!(
                "it was built for sluice:handler@{version}; this host offers {CONTRACT}, \
                 0.2.0 and 0.1.0 (rebuild against this host's wit/handler.wit)"
            ));
            continue;
        }
        if !OFFERED.contains(&interface) {
            let why = if interface.starts_with("wasi:http") {
                ": plugins serve no HTTP requests"
            } else {
                ""
            };
            problems.push(format!(
                "it imports `{name}`, which Sluice does not offer{why}"
            ));
        }
    }
    let exports: Vec<(String, bool)> = ty
        .exports(engine)
        .map(|(name, item)| {
            (
                name.to_string(),
                matches!(item.ty, ComponentItem::ComponentFunc(_)),
            )
        })
        .collect();
    match exports.iter().find(|(name, _)| name == "handle") {
        None if exports
            .iter()
            .any(|(name, _)| name.starts_with("wasi:cli/run")) =>
        {
            problems.push(
                "it is a command (a program with `main`), not a plugin: build a library crate \
             (`crate-type = [\"cdylib\"]`) that exports the handler (sluice_plugin::export!)"
                    .into(),
            )
        }
        None => problems.push(format!(
            "it does not export `handle`: a plugin exports `{HANDLE_SIGNATURE}` \
             (world `handler` of {CONTRACT})"
        )),
        Some((_, false)) => problems.push("its `handle` export is not a function".into()),
        Some(_) if problems.is_empty() => problems.push(format!(
            "its `handle` export has the wrong type: expected `{HANDLE_SIGNATURE}` \
             ({CONTRACT}), or 0.1's `handle: func(message: message) -> ...`; the linker says: \
             {error}"
        )),
        Some(_) => {}
    }
    if problems.is_empty() {
        error.to_string()
    } else {
        problems.join("; ")
    }
}

/// The imports and exports of `component`, for `sluice plugin check`.
pub fn describe(engine: &Engine, component: &Component) -> (Vec<String>, Vec<String>) {
    let ty = component.component_type();
    let imports = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    (imports, exports)
}
