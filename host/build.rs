//! Builds the bundled plugins for wasm32-wasip2 so that `cargo build` alone yields a `sluice`
//! that runs out of the box: the stock plugin is embedded in the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins in `plugins/` built into every host build: (package, crate file stem).
const BUNDLED: &[(&str, &str)] = &[("sluice-plugin-stock", "sluice_plugin_stock")];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.parent().expect("host/ lives in the workspace");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));

    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-changed={}", root.join("plugins").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    // A separate target dir: the outer cargo holds the lock on `target/<profile>`.
    let target_dir = root.join("target").join("plugins");
    for (package, stem) in BUNDLED {
        build_plugin(root, &target_dir, package);
        let built = target_dir
            .join("wasm32-wasip2")
            .join("plugin")
            .join(format!("{stem}.wasm"));
        let dest = out_dir.join(format!("{stem}.wasm"));
        std::fs::copy(&built, &dest)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), dest.display()));
    }
}

fn build_plugin(root: &Path, target_dir: &Path, package: &str) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "plugin",
        ])
        .args(["--package", package])
        .arg("--target-dir")
        .arg(target_dir);
    // Flags meant for the host build must not leak into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build plugin {package}: {e}"));
    assert!(
        status.success(),
        "building plugin {package} for wasm32-wasip2 failed ({status}); \
         is the target installed? `rustup target add wasm32-wasip2`"
    );
}
