//! `sluice plugin …`: the plugin author's kit — scaffold a crate, build it, check a component
//! against this host, run recorded messages through it in the real sandbox, and turn
//! production messages into those recordings.

pub mod fixtures;
mod interpreted;
mod replay;
pub mod runner;
pub mod scaffold;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use crate::config::SandboxArgs;
use crate::runtime::{Compiler, Plugin, Registry, Sandbox};

pub use interpreted::Lang;
pub use replay::ReplayArgs;

#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a plugin (helper module or SDK, passing tests, a sample fixture) that builds and
    /// tests on the first try: a Rust crate (inside this repository's `plugins/` or anywhere
    /// else), or a Python or JavaScript plugin.
    New {
        /// The plugin's name: lowercase letters, digits, `-` and `_`.
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The language it is written in.
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
        /// Start from an example instead of the stock logic (any language): `velocity`, order
        /// velocity per record key in keyed state, with an alert record emitted (contract 0.2).
        #[arg(long, value_enum)]
        example: Option<scaffold::Example>,
    },
    /// Build the plugin in DIR into a component and print its path: a crate for wasm32-wasip2
    /// (release), a Python plugin with componentize-py, a JavaScript one with ComponentizeJS.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Check a component against this host: contract version, imports, exports, size and
    /// memory limits, and its self-test.
    Check {
        file: PathBuf,
        /// The limits and configuration it will run with (as `sluice serve` takes them).
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Without FILE: the plugin's unit tests (a crate's on wasm32-wasip2 under wasmtime, this
    /// binary the runner; pytest; node --test), then, when --fixtures is given, its build and
    /// its fixtures. With FILE: run recorded messages (a
    /// `.jsonl` fixture file, or a directory of them) through that component in the real
    /// sandbox, with the real limits; a diff per mismatch.
    Test {
        file: Option<PathBuf>,
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// The plugin's directory (without FILE).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The limits and configuration it will run with (as `sluice serve` takes them); a
        /// fixture's own `config` wins.
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Write real messages as fixtures: dead letters (by id, or all unresolved ones) or a range
    /// of a topic partition.
    Replay(ReplayArgs),
    /// The cargo runner for plugin unit tests on wasm32-wasip2 (`.cargo/config.toml`).
    #[command(hide = true)]
    TestRunner {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Run a `sluice plugin` command. `test-runner` runs before any async runtime starts (see
/// `main`); the rest may use one.
pub async fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::New {
            name,
            dir,
            lang,
            example,
        } => {
            let created = match lang {
                Lang::Rust => scaffold::new(&name, &dir, example)?,
                lang => interpreted::new(lang, &name, &dir, example)?,
            };
            println!("created {}", created.display());
            println!("next: {}", next_steps(lang, &created));
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build { dir } => {
            let wasm = build(&dir)?;
            let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
            println!("{} ({} KiB)", wasm.display(), size.div_ceil(1024));
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Check { file, sandbox } => check(&file, &sandbox).await,
        PluginCommand::Test {
            file,
            fixtures,
            dir,
            sandbox,
        } => {
            let file = match file {
                Some(file) => file,
                None => {
                    let passed = match Lang::of(&dir)? {
                        Lang::Rust => unit_tests(&dir)?,
                        lang => interpreted::unit_tests(lang, &dir)?,
                    };
                    if !passed {
                        return Ok(ExitCode::FAILURE);
                    }
                    if fixtures.is_none() {
                        return Ok(ExitCode::SUCCESS);
                    }
                    build(&dir)?
                }
            };
            let fixtures = fixtures.context("give the fixtures to run: --fixtures FILE_OR_DIR")?;
            let cases = fixtures::load(&fixtures)?;
            if cases.is_empty() {
                bail!("no fixtures in {}", fixtures.display());
            }
            println!(
                "\nrunning {} fixtures through {}",
                cases.len(),
                file.display()
            );
            let plugin = load(&file, &sandbox).await?;
            let failed = tokio::task::spawn_blocking(move || fixtures::run(&plugin, &cases))
                .await
                .context("the fixture run failed")?;
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PluginCommand::Replay(args) => {
            replay::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::TestRunner { args } => Ok(runner::main(&args)),
    }
}

/// The plugin's name for a component file: its stem (`my_plugin.wasm` → `my_plugin`).
fn name_of(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().replace('-', "_"))
        .unwrap_or_else(|| "plugin".into())
}

/// `file` compiled, linked and checked as a running `sluice` would: compiled in a child
/// under the compile limits, loaded into the sandbox with its limits, its self-test run.
async fn load(file: &Path, args: &SandboxArgs) -> anyhow::Result<Arc<Plugin>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let registry = Registry::new(
        Sandbox::new(args.sandbox_config())?,
        Compiler::this_binary(),
        args.compile_limits(),
    );
    registry
        .prepare(&name_of(file), bytes.into())
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

async fn check(file: &Path, args: &SandboxArgs) -> anyhow::Result<ExitCode> {
    let plugin = match load(file, args).await {
        Ok(plugin) => plugin,
        Err(e) => {
            println!("FAILED {e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let (imports, exports) = plugin.describe();
    println!(
        "ok     {} fits this host ({})",
        file.display(),
        plugin.contract()
    );
    let version = plugin.version();
    println!("  version   {}", version.get(..12).unwrap_or(version));
    println!("  size      {} KiB", size.div_ceil(1024));
    println!("  imports   {}", imports.join(", "));
    println!("  exports   {}", exports.join(", "));
    println!(
        "  self-test {}",
        if plugin.has_self_test() {
            "passed"
        } else {
            "none declared"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `cargo test --release --target wasm32-wasip2` in `dir`, with this binary as the runner (no
/// `.cargo/config.toml` needed). Whether every test passed. In the release profile, as `build`:
/// the bindings generator is compiled once for both, and the tests run the code that ships.
fn unit_tests(dir: &Path) -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let runner = serde_json::to_string(&[exe.to_string_lossy().as_ref(), "plugin", "test-runner"])?;
    let status = cargo()
        .args(["test", "--release", "--target", "wasm32-wasip2", "--config"])
        .arg(format!("target.wasm32-wasip2.runner={runner}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running cargo in {}", dir.display()))?;
    Ok(status.success())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Build the plugin in `dir` as its language is built; the component it wrote.
fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    match Lang::of(dir)? {
        Lang::Rust => build_crate(dir),
        lang => interpreted::build(lang, dir),
    }
}

/// `cargo build --release --target wasm32-wasip2` in `dir`; the component it wrote.
fn build_crate(dir: &Path) -> anyhow::Result<PathBuf> {
    let output = cargo()
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo in {}", dir.display()))?;
    let crate_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut built = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_local = message["manifest_path"]
            .as_str()
            .is_some_and(|m| Path::new(m).parent() == Some(crate_dir.as_path()));
        if message["reason"] == "compiler-artifact" && is_local {
            for file in message["filenames"].as_array().into_iter().flatten() {
                if let Some(path) = file.as_str().filter(|p| p.ends_with(".wasm")) {
                    built = Some(PathBuf::from(path));
                }
            }
        }
    }
    if !output.status.success() {
        bail!("cargo build failed (see above)");
    }
    built.with_context(|| {
        format!(
            "cargo built no component in {}: is it a plugin crate (`crate-type = [\"cdylib\"]`)?",
            dir.display()
        )
    })
}

/// What to run in a new plugin's directory: its tools (a Python plugin's in a virtual
/// environment of its own: Debian's system Python refuses a bare `pip install`), then its tests.
fn next_steps(lang: Lang, dir: &Path) -> String {
    let install = match lang {
        Lang::Rust => "",
        Lang::Python => {
            "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt && "
        }
        Lang::Js => "npm install && ",
    };
    format!(
        "cd {} && {install}sluice plugin test --fixtures fixtures/",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_plugin_s_tools_go_into_a_virtual_environment_first() {
        let next = next_steps(Lang::Python, Path::new("p"));
        let venv = next.find("python3 -m venv .venv").expect(&next);
        assert!(venv < next.find("pip install").expect(&next), "{next}");
        assert!(!next_steps(Lang::Rust, Path::new("p")).contains("pip"));
    }
}
