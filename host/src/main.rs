//! `sluice`: parse the command line, run the chosen command.

use std::process::ExitCode;

use sluice::cli::{self, Cli};

fn main() -> ExitCode {
    cli::run(Cli::parse_layered())
}
