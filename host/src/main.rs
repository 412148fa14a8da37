//! `sluice`: parse the command line, run the chosen command.

use std::process::ExitCode;

use sluice::cli::{self, Cli};

/// mimalloc rather than glibc's allocator: every record passes through a few allocations on
/// several threads, and glibc's showed as a tenth of the host's CPU under load (README
/// "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::run(Cli::parse_layered())
}
