//! The build script of a Sluice plugin crate (its manifest says `build = ".../footprint.rs"`):
//! a small memory footprint for the component it builds.
//!
//! A plugin runs in a fresh instance per record or per batch, and the host resets the
//! instance's memory afterwards: every byte of it up to 128 KiB is reset in place (zeroed, or
//! copied back from the data image), anything above that is handed back to the kernel and
//! faults in again on its next use, which on a VM costs more than the whole call. The reset
//! is the largest part of a fresh instance's cost, so the component's memory is as small as
//! the linker can make it: a 16 KiB stack first, then the static data, rounded up to whole
//! 64 KiB pages (one page for the stock plugin), and the heap starts in the rest of the last
//! page. A call that needs more heap grows the memory and still works; it only costs more.
//! Only the component gets these (not the crate's tests, which keep the toolchain's defaults).

/// The component's shadow stack (Rust's default is 1 MiB); a deeper call traps with a stack
/// overflow, costing only its record. The order parser's nesting limit (serde_json's 128)
/// stays inside it: a payload nested 5,000 deep is a dead letter as "not JSON" (poison.rs).
const STACK_BYTES: u32 = 16 << 10;

fn main() {
    println!("cargo::rerun-if-changed={}", file!());
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo::rustc-cdylib-link-arg=-zstack-size={STACK_BYTES}");
    }
}
