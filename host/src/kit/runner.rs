//! `sluice plugin test-runner`: the cargo runner for plugin unit tests on `wasm32-wasip2`. Runs
//! the test binary under wasmtime with the `handler` world's host imports stubbed (the SDK
//! keeps tests' configuration and log lines inside the plugin itself).
//!
//! wasm tests are `panic = abort`: the first failing test would end the whole binary and hide
//! its own message. So the runner lists the tests and runs each in its own instance with
//! `--nocapture` (its panic message and location are printed as they happen), and reports every
//! result and a summary, as libtest does.

use std::process::ExitCode;

use anyhow::Context as _;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use crate::runtime::bindings::{
    Handler, Level, sluice::handler::host, sluice::handler::types, v0_1, v0_2,
};

const OUTPUT_CAPTURE: usize = 1 << 20;

struct Runner {
    engine: Engine,
    linker: Linker<State>,
    component: Component,
    program: String,
}

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The plugin's log lines, shown with the test's output.
    logs: String,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for State {}

impl host::Host for State {
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.log_line(level, &message);
    }

    fn get_config(&mut self, _key: String) -> Option<String> {
        None
    }
}

// Plugins of earlier contracts import their own host interface.
crate::runtime::earlier_host!(v0_2, State);
crate::runtime::earlier_host!(v0_1, State);

impl State {
    fn log_line(&mut self, level: &str, message: &str) {
        if self.logs.len() < OUTPUT_CAPTURE {
            self.logs.push_str(&format!("[log {level}] {message}\n"));
        }
    }
}

/// One run of the test binary.
struct Run {
    passed: bool,
    stdout: String,
    stderr: String,
}

impl Runner {
    fn new(path: &str) -> anyhow::Result<Self> {
        let engine = Engine::default();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)?;
        v0_2::Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)?;
        v0_1::Handler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)?;
        let component = Component::from_file(&engine, path)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("loading test component {path}"))?;
        let program = std::path::Path::new(path)
            .file_name()
            .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned());
        Ok(Self {
            engine,
            linker,
            component,
            program,
        })
    }

    fn run(&self, args: &[String]) -> anyhow::Result<Run> {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPTURE);
        let stderr_pipe = MemoryOutputPipe::new(OUTPUT_CAPTURE);
        let mut argv = vec![self.program.clone()];
        argv.extend(args.iter().cloned());
        let wasi = WasiCtx::builder()
            .args(&argv)
            .stdout(stdout.clone())
            .stderr(stderr_pipe.clone())
            .build();
        let mut store = Store::new(
            &self.engine,
            State {
                wasi,
                table: ResourceTable::new(),
                logs: String::new(),
            },
        );
        let command = Command::instantiate(&mut store, &self.component, &self.linker)
            .map_err(anyhow::Error::from)
            .context("instantiating the test component")?;
        let mut trap = None;
        let passed = match command.wasi_cli_run().call_run(&mut store) {
            Ok(result) => result.is_ok(),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => exit.0 == 0,
                None => {
                    // The panic message is on stderr already; the wasm backtrace adds noise.
                    trap = Some(match e.downcast_ref::<wasmtime::Trap>() {
                        Some(code) => format!("(the test aborted: {code})\n"),
                        None => format!("error: {e:#}\n"),
                    });
                    false
                }
            },
        };
        let mut stderr = std::mem::take(&mut store.data_mut().logs);
        stderr.push_str(&String::from_utf8_lossy(&stderr_pipe.contents()));
        stderr.extend(trap);
        Ok(Run {
            passed,
            stdout: String::from_utf8_lossy(&stdout.contents()).into_owned(),
            stderr,
        })
    }
}

/// `sluice plugin test-runner <test-binary.wasm> [libtest args]`.
pub fn main(args: &[String]) -> ExitCode {
    let Some((path, args)) = args.split_first() else {
        eprintln!("usage: sluice plugin test-runner <test-binary.wasm> [libtest args]");
        return ExitCode::from(2);
    };
    match run_all(path, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice plugin test-runner: {e:#}");
            ExitCode::from(101)
        }
    }
}

fn run_all(path: &str, args: &[String]) -> anyhow::Result<ExitCode> {
    let runner = Runner::new(path)?;

    // Asked for something other than a run (listing, one exact test, help): pass it through.
    if args
        .iter()
        .any(|a| matches!(a.as_str(), "--list" | "--exact" | "--help" | "-h"))
    {
        let run = runner.run(args)?;
        print!("{}", run.stdout);
        eprint!("{}", run.stderr);
        return Ok(if run.passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(101)
        });
    }

    // Filters and flags such as --ignored narrow the listing the same way they narrow a run.
    let mut list_args = vec!["--list".to_string(), "--format".into(), "terse".into()];
    list_args.extend(
        args.iter()
            .filter(|a| {
                !matches!(
                    a.as_str(),
                    "--nocapture" | "--no-capture" | "--show-output" | "--quiet" | "-q"
                )
            })
            .cloned(),
    );
    let listing = runner.run(&list_args)?;
    if !listing.passed {
        anyhow::bail!(
            "listing the tests failed:\n{}{}",
            listing.stdout,
            listing.stderr
        );
    }
    let tests: Vec<&str> = listing
        .stdout
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .collect();

    println!(
        "\nrunning {} tests from {} on wasm32-wasip2 (wasmtime, one instance per test)",
        tests.len(),
        runner.program
    );
    let include_ignored = args
        .iter()
        .any(|a| a == "--include-ignored" || a == "--ignored");
    let show_output = args
        .iter()
        .any(|a| a == "--nocapture" || a == "--show-output");
    let (mut passed, mut failed, mut ignored) = (0, Vec::new(), 0);
    for test in &tests {
        let mut test_args = vec![
            "--exact".to_string(),
            (*test).to_string(),
            "--test-threads=1".into(),
            // A panic aborts the instance: its message must be out before that.
            "--nocapture".into(),
        ];
        if include_ignored {
            test_args.push("--include-ignored".into());
        }
        let run = runner.run(&test_args)?;
        let verdict = if run.stdout.contains(" ... ignored") {
            ignored += 1;
            "ignored"
        } else if run.passed && run.stdout.contains(" ... ok") {
            passed += 1;
            "ok"
        } else {
            failed.push((*test, run.stderr.clone()));
            "FAILED"
        };
        println!("test {test} ... {verdict}");
        if show_output && verdict == "ok" && !run.stderr.trim().is_empty() {
            print!("{}", run.stderr);
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for (test, stderr) in &failed {
            println!("\n---- {test} ----\n{}", stderr.trim_end());
        }
        println!("\nfailures:");
        for (test, _) in &failed {
            println!("    {test}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; {ignored} ignored; 0 measured; 0 filtered out\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    })
}
