//! Builds the bundled plugins for wasm32-wasip2 so that `cargo build` alone yields a `sluice`
//! that runs out of the box: the stock plugin and the sink are embedded in the binary.
//!
//! The embedded plugins are built a second time, for wasm32-unknown-unknown, and made
//! components here. It needs nothing from WASI, and without WASI imports a component is one core
//! instance: the wasip2 build imports std's WASI interfaces, and lowering those takes two more
//! core modules (a shim and its fixup), which is most of what a fresh instance per record costs
//! (README "Performance"). The wasip2 build stays: it is what `sluice plugin build` makes, and
//! the tests that run the stock plugin's unit tests and fixtures use it too.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins built with every host build: (package, crate file stem). The stock plugin and the
/// sink are embedded in the binary; the examples and the fixtures (hostile and versioned
/// plugins of contract 0.1; `tally`, of 0.2) are what the tests load (their directory is
/// `SLUICE_FIXTURES_DIR` at compile time).
const PLUGINS: &[(&str, &str)] = &[
    ("sluice-plugin-stock", "sluice_plugin_stock"),
    ("sluice-plugin-sink", "sluice_plugin_sink"),
    ("sluice-plugin-velocity", "sluice_plugin_velocity"),
    ("sluice-plugin-read-model", "sluice_plugin_read_model"),
    ("sluice-fixture-hostile", "sluice_fixture_hostile"),
    ("sluice-fixture-wrong-world", "sluice_fixture_wrong_world"),
    ("sluice-fixture-stock-v2", "sluice_fixture_stock_v2"),
    ("sluice-fixture-tally", "sluice_fixture_tally"),
    (
        "sluice-fixture-hostile-tables",
        "sluice_fixture_hostile_tables",
    ),
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

/// The plugins embedded in the binary, built for wasm32-unknown-unknown.
const EMBEDDED: [(&str, &str); 2] = [
    ("sluice-plugin-stock", "sluice_plugin_stock"),
    ("sluice-plugin-sink", "sluice_plugin_sink"),
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
    let packages: Vec<&str> = PLUGINS.iter().map(|(package, _)| *package).collect();
    build_plugins(root, &target_dir, "wasm32-wasip2", &packages);
    build_plugins(
        root,
        &target_dir,
        "wasm32-unknown-unknown",
        &EMBEDDED.map(|(p, _)| p),
    );
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
    // The embedded ones replace their wasip2 builds in OUT_DIR (the tests load those files
    // by the same names).
    for (_, stem) in EMBEDDED {
        let core = target_dir
            .join("wasm32-unknown-unknown")
            .join("plugin")
            .join(format!("{stem}.wasm"));
        let bytes =
            std::fs::read(&core).unwrap_or_else(|e| panic!("reading {}: {e}", core.display()));
        let component = wit_component::ComponentEncoder::default()
            .module(&bytes)
            .and_then(|encoder| encoder.validate(true).encode())
            .unwrap_or_else(|e| panic!("making {} a component: {e:#}", core.display()));
        std::fs::write(out_dir.join(format!("{stem}.wasm")), component)
            .unwrap_or_else(|e| panic!("writing the embedded plugin {stem}: {e}"));
    }
}

fn build_plugins(root: &Path, target_dir: &Path, target: &str, packages: &[&str]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--target",
            target,
            "--profile",
            "plugin",
        ])
        .args(packages.iter().flat_map(|package| ["--package", package]))
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
        "building the plugins for {target} failed ({status}); \
         is the target installed? `rustup target add {target}`"
    );
}
