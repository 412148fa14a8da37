//! `sluice`: parse the command line, start logging, run the chosen command.

use std::process::ExitCode;

use sluice::config::{self, Cli, Command, Settings};
use sluice::kit::{self, PluginCommand};
use sluice::otlp::{self, OtlpConfig};
use sluice::{Application, bench, dev, runtime, shutdown, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse_layered();
    // Child processes of sluice itself: no runtime, no logging.
    match &cli.command {
        Command::CompilePlugin(args) => return runtime::compile::child_main(args.memory_mib),
        Command::BenchBroker(args) => return bench::broker_main(args),
        Command::Plugin(plugin) => {
            if let PluginCommand::TestRunner { args } = &plugin.command {
                return kit::runner::main(args);
            }
        }
        _ => telemetry::init(),
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let command = cli.command;
    if let Command::Config(_) = command {
        print!("{}", config::render_effective(&cli.provenance, "config"));
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Plugin(plugin) = command {
        // Plugin tools print their own results; no service logging.
        return kit::run(plugin.command).await;
    }
    let shutdown = shutdown::on_signal();
    if matches!(command, Command::Serve(_) | Command::Dev(_))
        && let Some(otlp) = OtlpConfig::from_env()?
    {
        otlp::init(otlp)?;
    }
    match command {
        Command::Serve(args) => {
            let settings = Settings::for_serve(args)?;
            let app = Application::build(settings).await?;
            tracing::info!(http = %app.local_addr()?, "sluice serving");
            app.run_until_stopped(shutdown).await?;
        }
        Command::Dev(args) => dev::run(args, shutdown).await?,
        Command::Bench(args) => bench::run(args).await?,
        Command::CompilePlugin(_)
        | Command::BenchBroker(_)
        | Command::Plugin(_)
        | Command::Config(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}
