//! The top: the command line (`Cli`, `Command`), the `--config` file layered under flags and
//! environment, and the one dispatch of each command to the module that runs it.

mod file;

pub use file::Provenance;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::bench::{self, BenchArgs, BrokerArgs};
use crate::config::{ServeArgs, Settings};
use crate::dev::{self, DevArgs};
use crate::kit::{self, PluginArgs, PluginCommand};
use crate::otlp::{self, OtlpConfig};
use crate::runtime::{self, Limits};
use crate::{Application, shutdown, telemetry};

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Where each setting came from (`sluice config`).
    #[arg(skip)]
    pub provenance: Provenance,
}

const LONG_ABOUT: &str = "Sluice consumes order events from Kafka, hands each one to a sandboxed \
WebAssembly plugin, and applies the stock mutations it returns to PostgreSQL. Its HTTP API \
creates orders and publishes their events through a transactional outbox.\n\n\
Every flag can also be set through the environment variable shown with it, or in the TOML \
file of --config under its long name (flag > environment > file > default).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run ingest, the order relay and the HTTP API against an external Kafka and PostgreSQL.
    Serve(ServeArgs),
    /// Run everything in one process with nothing to install: an embedded Kafka-protocol
    /// broker, a throwaway PostgreSQL (unless DATABASE_URL is set), the bundled stock plugin.
    Dev(DevArgs),
    /// Measure ingest throughput and plugin call cost on this machine, with an embedded broker
    /// and a throwaway PostgreSQL (build with --release for figures that mean something).
    Bench(BenchArgs),
    /// Print the effective configuration of `sluice serve` with these flags (environment and
    /// --config file included), each setting with its source, secrets hidden.
    Config(ServeArgs),
    /// Write, build, check and test plugins: `new`, `build`, `check`, `test`, `replay`.
    Plugin(PluginArgs),
    /// Compile a plugin component read on stdin (run by sluice itself, under limits).
    #[command(hide = true)]
    CompilePlugin(CompilePluginArgs),
    /// The benchmark's broker, in a process of its own (run by `sluice bench`).
    #[command(hide = true)]
    BenchBroker(BrokerArgs),
}

#[derive(Debug, Args)]
pub struct CompilePluginArgs {
    /// The sandbox's memory limit, MiB (part of the compiled code's configuration).
    #[arg(long, default_value_t = Limits::default().memory_bytes >> 20)]
    pub memory_mib: usize,
}

/// Run the command. Sluice's own child processes (the plugin compiler, the benchmark's broker,
/// the plugin test runner) start no async runtime and no logging; every other command does.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CompilePlugin(args) => runtime::compile::child_main(args.memory_mib),
        Command::BenchBroker(args) => bench::broker_main(&args),
        Command::Plugin(PluginArgs {
            command: PluginCommand::TestRunner { args },
        }) => kit::runner::main(&args),
        Command::Config(_) => {
            print!("{}", file::render(&cli.provenance, "config"));
            ExitCode::SUCCESS
        }
        // The plugin tools print their own results.
        Command::Plugin(plugin) => block_on(kit::run(plugin.command)),
        Command::Serve(args) => block_on(async {
            let shutdown = shutdown::on_signal();
            start_span_export()?;
            // A signal while it waits for PostgreSQL stops it there.
            let app = tokio::select! {
                app = Application::build(Settings::for_serve(args)?) => app?,
                () = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
            };
            tracing::info!(http = %app.local_addr()?, "sluice serving");
            app.run_until_stopped(shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Dev(args) => block_on(async {
            let shutdown = shutdown::on_signal();
            start_span_export()?;
            dev::run(args, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Bench(args) => block_on(async {
            bench::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// Logging, then `command` on a multi-threaded runtime; an error is printed with its chain.
fn block_on(command: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    telemetry::init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(command));
    result.unwrap_or_else(|e| {
        eprintln!("Error: {e:?}");
        ExitCode::FAILURE
    })
}

/// Span export over OTLP, when the standard `OTEL_*` variables ask for it.
fn start_span_export() -> anyhow::Result<()> {
    if let Some(config) = OtlpConfig::from_env()? {
        otlp::init(config)?;
    }
    Ok(())
}
