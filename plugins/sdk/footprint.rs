//! The build script of a Sluice plugin crate (its manifest says `build = ".../footprint.rs"`):
//! a small memory footprint for the component it builds.
//!
//! A plugin runs in a fresh instance per record or per batch, and the host resets the
//! instance's memory afterwards: the bytes it keeps resident (128 KiB) are reset in place,
//! everything above them is handed back to the kernel and faults in again on its next use,
//! which on a VM costs more than the whole call. So the component starts with exactly that
//! much memory, its 32 KiB stack first, then its data, then the heap, and a call that
//! allocates less than the heap's rest never grows the memory. A call that needs more grows
//! it and still works; it only costs more. Only the component gets these (not the crate's
//! tests, which keep the toolchain's defaults).

/// The component's shadow stack (Rust's default is 1 MiB); a deeper call traps with a stack
/// overflow, costing only its record.
const STACK_BYTES: u32 = 32 << 10;
/// Two WebAssembly pages: what the host keeps resident per instance.
const INITIAL_MEMORY_BYTES: u32 = 128 << 10;

fn main() {
    println!("cargo::rerun-if-changed={}", file!());
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo::rustc-cdylib-link-arg=-zstack-size={STACK_BYTES}");
        println!("cargo::rustc-cdylib-link-arg=--initial-memory={INITIAL_MEMORY_BYTES}");
    }
}
