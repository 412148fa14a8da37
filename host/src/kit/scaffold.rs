//! `sluice plugin new NAME`: a plugin crate that builds and tests on the first try. Inside this
//! repository's `plugins/` it uses the SDK next to it (and the workspace picks it up); anywhere
//! else it carries a copy of the SDK and the contract in `.sluice/`, so it needs nothing else.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The SDK, the order parser and the contract, as this build has them.
const SDK_LIB: &str = include_str!("../../../plugins/sdk/src/lib.rs");
const SDK_SINCE_0_2: &str = include_str!("../../../plugins/sdk/src/since_0_2.rs");
const SDK_ONLY_0_1: &str = include_str!("../../../plugins/sdk/src/only_0_1.rs");
const SDK_SINCE_0_3: &str = include_str!("../../../plugins/sdk/src/since_0_3.rs");
const ORDER_EVENT_LIB: &str = include_str!("../../../plugins/order-event/src/lib.rs");
/// The build script that gives a plugin's component its small memory footprint.
const FOOTPRINT: &str = include_str!("../../../plugins/sdk/footprint.rs");
pub(super) const CONTRACT: &str = include_str!("../../../wit/handler.wit");
/// The toolchain this repository pins (with the wasm target), for crates outside it.
const TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");

/// The velocity example (contract 0.2: keyed state, an emitted alert), as `plugins/velocity`.
const VELOCITY_LIB: &str = include_str!("../../../plugins/velocity/src/lib.rs");
pub(super) const VELOCITY_FIXTURES: &str =
    include_str!("../../../plugins/velocity/fixtures/velocity.jsonl");

/// An example a new plugin can start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Example {
    /// Order velocity per record key, kept in keyed state, with an alert emitted.
    Velocity,
}

/// Create the crate `name` in `parent` (from `example`, or the stock logic); returns its
/// directory.
pub fn new(name: &str, parent: &Path, example: Option<Example>) -> anyhow::Result<PathBuf> {
    crate::control::validate_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    let in_repository = in_repository_plugins(parent);
    let crate_name = name.replace('_', "-");
    let lib_name = name.replace('-', "_");
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("fixtures"))?;
    let (sdk, workspace) = if in_repository {
        ("../sdk".to_string(), "")
    } else {
        vendor_sdk(&dir)?;
        write(&dir.join("rust-toolchain.toml"), TOOLCHAIN)?;
        write_runner_config(&dir)?;
        (".sluice/sdk".to_string(), WORKSPACE_OF_ITS_OWN)
    };
    let (lib, fixtures, serde) = match example {
        None => (LIB.to_string(), FIXTURES, ""),
        Some(Example::Velocity) => (VELOCITY_LIB.to_string(), VELOCITY_FIXTURES, SERDE),
    };
    write(
        &dir.join("Cargo.toml"),
        &manifest(
            &crate_name,
            Some(&format!("{sdk}/footprint.rs")),
            &format!("{serde}sluice-plugin = {{ path = \"{sdk}\" }}\n{workspace}"),
        ),
    )?;
    write(&dir.join("src/lib.rs"), &lib)?;
    write(&dir.join("fixtures/sample.jsonl"), fixtures)?;
    write(&dir.join(".gitignore"), "/target\n")?;
    let build_dir = if in_repository {
        "../../target"
    } else {
        "target"
    };
    write(
        &dir.join("README.md"),
        &README
            .replace("{name}", name)
            .replace("{lib}", &lib_name)
            .replace("{target}", build_dir),
    )?;
    Ok(dir)
}

/// Whether `parent` is the `plugins/` directory of this repository (the SDK is beside it).
fn in_repository_plugins(parent: &Path) -> bool {
    parent.join("sdk").join("Cargo.toml").is_file()
        && parent
            .parent()
            .is_some_and(|root| root.join("wit").join("handler.wit").is_file())
}

fn vendor_sdk(dir: &Path) -> anyhow::Result<()> {
    let sluice = dir.join(".sluice");
    std::fs::create_dir_all(sluice.join("sdk/src"))?;
    std::fs::create_dir_all(sluice.join("sdk/wit"))?;
    std::fs::create_dir_all(sluice.join("order-event/src"))?;
    write(&sluice.join("sdk/src/lib.rs"), SDK_LIB)?;
    write(&sluice.join("sdk/src/since_0_2.rs"), SDK_SINCE_0_2)?;
    write(&sluice.join("sdk/src/only_0_1.rs"), SDK_ONLY_0_1)?;
    write(&sluice.join("sdk/src/since_0_3.rs"), SDK_SINCE_0_3)?;
    write(&sluice.join("sdk/footprint.rs"), FOOTPRINT)?;
    write(&sluice.join("sdk/wit/handler.wit"), CONTRACT)?;
    write(
        &sluice.join("sdk/Cargo.toml"),
        &manifest(
            "sluice-plugin",
            None,
            &format!(
                "{SERDE}sluice-order-event = {{ path = \"../order-event\" }}\nwit-bindgen = \"0.63\"\n\n\
                 # The heap of a `wasm32-unknown-unknown` build (`heap` in src/lib.rs).\n\
                 [target.'cfg(all(target_arch = \"wasm32\", target_os = \"unknown\"))'.dependencies]\n\
                 dlmalloc = \"0.2.14\"\n\n\
                 # Set where this source builds against contract 0.1 or 0.2 (not here).\n\
                 [lints.rust]\nunexpected_cfgs = {{ level = \"warn\", check-cfg = ['cfg(sluice_contract_0_1)', 'cfg(sluice_contract_0_2)'] }}\n"
            ),
        ),
    )?;
    write(&sluice.join("order-event/src/lib.rs"), ORDER_EVENT_LIB)?;
    write(
        &sluice.join("order-event/Cargo.toml"),
        &manifest("sluice-order-event", None, SERDE),
    )?;
    write(
        &sluice.join("README.md"),
        "The Sluice plugin SDK and the plugin contract (`sdk/wit/handler.wit`), as the `sluice`\n\
         that created this crate had them. `sluice plugin new` writes them again.\n",
    )
}

/// `.cargo/config.toml` naming this `sluice` as the runner of wasm32-wasip2 test binaries, so
/// that a plain `cargo test --target wasm32-wasip2` runs them under wasmtime (in this
/// repository its own `.cargo/config.toml` does that).
fn write_runner_config(dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let runner = toml::Value::Array(vec![
        toml::Value::String(exe.to_string_lossy().into_owned()),
        "plugin".into(),
        "test-runner".into(),
    ]);
    std::fs::create_dir_all(dir.join(".cargo"))?;
    write(
        &dir.join(".cargo/config.toml"),
        &format!(
            "# `cargo test --target wasm32-wasip2` runs the tests under wasmtime with the `sluice`\n\
             # that created this crate; `sluice plugin test` passes its own and ignores this.\n\
             [target.wasm32-wasip2]\nrunner = {runner}\n"
        ),
    )
}

pub(super) fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

const WORKSPACE_OF_ITS_OWN: &str = "
# A workspace of its own: the crate builds wherever it is.
[workspace]

[profile.release]
opt-level = \"s\"
lto = true
codegen-units = 1
strip = true
panic = \"abort\"
# Arithmetic overflow traps (the record becomes a dead letter) instead of wrapping silently.
overflow-checks = true
";

/// A crate manifest: the package, a library, dependencies. A plugin (`footprint`: the path
/// of its build script) is a component too.
fn manifest(name: &str, footprint: Option<&str>, dependencies: &str) -> String {
    let (build, crate_type) = match footprint {
        Some(script) => (
            format!(
                "# A small memory footprint for the component (see the script).\nbuild = \"{script}\"\n"
            ),
            "crate-type = [\"cdylib\", \"rlib\"]\n",
        ),
        None => (String::new(), ""),
    };
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n{build}\n\
         [lib]\n{crate_type}doctest = false\n\n[dependencies]\n{dependencies}"
    )
}

const SERDE: &str = "serde = { version = \"1\", features = [\"derive\"] }\nserde_json = \"1\"\n";

/// The Rust plugin a scaffold starts from: `plugins/template`, a crate built and tested like
/// the others (its README's `{name}`, `{lib}` and `{target}` are filled in).
const LIB: &str = include_str!("../../../plugins/template/src/lib.rs");
pub(super) const FIXTURES: &str = include_str!("../../../plugins/template/fixtures/sample.jsonl");
const README: &str = include_str!("../../../plugins/template/README.md");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crate_outside_the_repository_carries_the_sdk() {
        let dir = tempfile::tempdir().unwrap();
        let created = new("my-rules", dir.path(), None).unwrap();
        let manifest = std::fs::read_to_string(created.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-rules\""), "{manifest}");
        assert!(manifest.contains("path = \".sluice/sdk\""), "{manifest}");
        assert!(manifest.contains("[workspace]"), "{manifest}");
        assert!(created.join(".sluice/sdk/wit/handler.wit").is_file());
        assert!(
            created.join("rust-toolchain.toml").is_file(),
            "the wasm target with it"
        );
        assert!(created.join("fixtures/sample.jsonl").is_file());
        for line in FIXTURES.lines() {
            serde_json::from_str::<super::super::fixtures::Fixture>(line).unwrap();
        }
        assert!(new("my-rules", dir.path(), None).is_err(), "no overwriting");
        assert!(new("Bad Name", dir.path(), None).is_err());
    }
}
