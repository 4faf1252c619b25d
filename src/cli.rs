//! The command line: clap definitions and the glue from arguments to the library. Every flag
//! also reads an `NHIWATCH_*` environment variable.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::decode::{Decoder, Format};
use crate::replay::{self, Emit, Progress};
use crate::simulate;
use crate::telemetry::logs::LogFormat;

/// nhiwatch: anomaly detection for non-human identities (CI pipelines, deploy bots, workloads).
#[derive(Debug, Parser)]
#[command(name = "nhiwatch", version, about, max_term_width = 100)]
pub struct Cli {
    /// Configuration file (TOML). Without one, built-in defaults apply.
    #[arg(long, short = 'c', env = "NHIWATCH_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(
        long,
        value_enum,
        default_value_t,
        env = "NHIWATCH_LOG_FORMAT",
        global = true
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode records from files or stdin and write canonical events as JSON lines.
    Replay(ReplayArgs),
    /// Write simulated records in the real formats (JSON lines), for tests and benchmarks.
    Simulate(SimulateArgs),
    /// Validate the configuration file and exit.
    CheckConfig,
}

/// `nhiwatch replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Input files or directories (JSON lines, JSON documents or arrays, CloudTrail delivery
    /// files, gzip), or `-` for stdin.
    #[arg(required = true, value_name = "FILE")]
    pub inputs: Vec<String>,
    /// Input format; `auto` detects it per record.
    #[arg(long, value_enum, default_value_t, env = "NHIWATCH_FORMAT")]
    pub format: Format,
    /// What to write to the output.
    #[arg(long, value_enum, default_value_t, env = "NHIWATCH_EMIT")]
    pub emit: Emit,
    /// Output file (default: stdout).
    #[arg(long, short = 'o', env = "NHIWATCH_OUTPUT")]
    pub output: Option<PathBuf>,
    /// Write every rejected record here (JSON lines: location, reason, record with secrets
    /// masked).
    #[arg(long, env = "NHIWATCH_REJECTS")]
    pub rejects: Option<PathBuf>,
    /// Progress bar on stderr.
    #[arg(long, value_enum, default_value_t, env = "NHIWATCH_PROGRESS")]
    pub progress: Progress,
}

/// `nhiwatch simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Number of records to write.
    #[arg(long, default_value_t = 10_000, env = "NHIWATCH_SIM_RECORDS")]
    pub records: u64,
    /// Random seed: the same seed gives the same records.
    #[arg(long, default_value_t = 1, env = "NHIWATCH_SIM_SEED")]
    pub seed: u64,
    /// Number of non-human identities in the simulated organisation.
    #[arg(long, default_value_t = 200, env = "NHIWATCH_SIM_IDENTITIES")]
    pub identities: u32,
    /// Only this format (default: a realistic mix of all five).
    #[arg(long, value_enum, env = "NHIWATCH_SIM_FORMAT")]
    pub format: Option<Format>,
    /// First event time (RFC 3339).
    #[arg(
        long,
        default_value = "2026-01-05T00:00:00Z",
        env = "NHIWATCH_SIM_START"
    )]
    pub start: String,
    /// Output file (default: stdout).
    #[arg(long, short = 'o', env = "NHIWATCH_OUTPUT")]
    pub output: Option<PathBuf>,
}

/// What `main` should exit with.
pub enum Outcome {
    /// Success.
    Ok,
    /// Ran, but nothing could be read (exit status 1).
    NothingRead,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let cfg = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::CheckConfig => {
            let decoder = Decoder::from_config(&cfg, Format::Auto)?;
            drop(decoder);
            eprintln!(
                "config ok: {}",
                cli.config
                    .as_deref()
                    .map_or("(built-in defaults)".to_string(), |p| p
                        .display()
                        .to_string())
            );
            Ok(Outcome::Ok)
        }
        Command::Replay(args) => {
            let decoder = Decoder::from_config(&cfg, args.format)?;
            let opts = replay::Options {
                inputs: args.inputs,
                emit: args.emit,
                output: args.output,
                rejects: args.rejects,
                progress: args.progress,
            };
            let summary = replay::run(&decoder, &opts)?;
            eprint!("{}", summary.render());
            Ok(if summary.nothing_read() {
                Outcome::NothingRead
            } else {
                Outcome::Ok
            })
        }
        Command::Simulate(args) => {
            let start = crate::time::Timestamp::parse(&args.start)
                .with_context(|| format!("--start {:?}", args.start))?;
            let sim = simulate::Simulation::new(simulate::Settings {
                seed: args.seed,
                identities: args.identities,
                start,
                only: args.format,
            });
            let n = match &args.output {
                Some(p) => {
                    let f = std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?;
                    sim.write(args.records, std::io::BufWriter::new(f))?
                }
                None => sim.write(
                    args.records,
                    std::io::BufWriter::new(std::io::stdout().lock()),
                )?,
            };
            tracing::info!(records = n, "simulation written");
            Ok(Outcome::Ok)
        }
    }
}
