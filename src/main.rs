//! The `nhiwatch` binary: parse the command line, run, map the outcome to an exit status
//! (0 success, 1 nothing could be read, 2 usage or configuration error).

use std::process::ExitCode;

use clap::Parser;
use nhiwatch::cli::{self, Cli, Outcome};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    nhiwatch::telemetry::logs::init(cli.log_format);
    match cli::run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::NothingRead) => ExitCode::from(1),
        Ok(Outcome::BelowBar) => ExitCode::from(2),
        Err(e) => {
            eprintln!("nhiwatch: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
