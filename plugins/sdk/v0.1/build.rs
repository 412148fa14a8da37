//! The SDK's source (`../src/lib.rs`) compiled against contract 0.1: plugins that depend on this
//! crate export `sluice:handler@0.1.0`, as plugins built before 0.2 did.

fn main() {
    println!("cargo::rustc-cfg=sluice_contract_0_1");
}
