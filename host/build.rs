//! Builds the bundled plugins for wasm32-wasip2 so that `cargo build` alone yields a `sluice`
//! that runs out of the box: the stock plugin is embedded in the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins built with every host build: (package, crate file stem). The stock plugin is
/// embedded in the binary; the fixtures are the hostile and versioned plugins the tests load
/// (their directory is `SLUICE_FIXTURES_DIR` at compile time).
const PLUGINS: &[(&str, &str)] = &[
    ("sluice-plugin-stock", "sluice_plugin_stock"),
    ("sluice-fixture-hostile", "sluice_fixture_hostile"),
    ("sluice-fixture-wrong-world", "sluice_fixture_wrong_world"),
    ("sluice-fixture-stock-v2", "sluice_fixture_stock_v2"),
    ("sluice-fixture-stock-broken", "sluice_fixture_stock_broken"),
    (
        "sluice-fixture-failing-self-test",
        "sluice_fixture_failing_self_test",
    ),
    (
        "sluice-fixture-sleepy-self-test",
        "sluice_fixture_sleepy_self_test",
    ),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.parent().expect("host/ lives in the workspace");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));

    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-changed={}", root.join("plugins").display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("fixtures").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    // The plugin profile lives in the workspace's manifest.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );

    // A separate target dir: the outer cargo holds the lock on `target/<profile>`.
    let target_dir = root.join("target").join("plugins");
    build_plugins(root, &target_dir);
    println!("cargo:rustc-env=SLUICE_FIXTURES_DIR={}", out_dir.display());
    for (_, stem) in PLUGINS {
        let built = target_dir
            .join("wasm32-wasip2")
            .join("plugin")
            .join(format!("{stem}.wasm"));
        let dest = out_dir.join(format!("{stem}.wasm"));
        std::fs::copy(&built, &dest)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), dest.display()));
    }
}

fn build_plugins(root: &Path, target_dir: &Path) {
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
        .args(
            PLUGINS
                .iter()
                .flat_map(|(package, _)| ["--package", package]),
        )
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
        .unwrap_or_else(|e| panic!("running cargo to build the plugins: {e}"));
    assert!(
        status.success(),
        "building the plugins for wasm32-wasip2 failed ({status}); \
         is the target installed? `rustup target add wasm32-wasip2`"
    );
}
