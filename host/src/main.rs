//! `sluice`: parse the command line, start logging, run the chosen command.

use clap::Parser;
use sluice::config::{Cli, Command, Settings};
use sluice::{Application, bench, dev, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init();
    let shutdown = shutdown::on_signal();
    match cli.command {
        Command::Serve(args) => {
            let settings = Settings::from_args(args.common, args.database_url, args.kafka_brokers);
            let app = Application::build(settings).await?;
            tracing::info!(http = %app.local_addr()?, "sluice serving");
            app.run_until_stopped(shutdown).await
        }
        Command::Dev(args) => dev::run(args, shutdown).await,
        Command::Bench(args) => bench::run(args).await,
    }
}
