//! The SDK's source (`../src/lib.rs`) compiled against contract 0.2: plugins that depend on this
//! crate export `sluice:handler@0.2.0`, as plugins built before 0.3 did.

fn main() {
    println!("cargo::rustc-cfg=sluice_contract_0_2");
}
