//! The command line: clap definitions and the glue from arguments to the library. Every flag
//! also reads an `NHIWATCH_*` environment variable.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::decode::{Decoder, Format};
use crate::detect::Engine;
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
    /// Decode records from files or stdin, run the detectors and write alerts as JSON lines.
    Replay(ReplayArgs),
    /// Show what nhiwatch has learned about identities (from a `--state` directory).
    #[command(subcommand)]
    Baselines(BaselinesCommand),
    /// List the detectors with their effective specifications.
    Detectors,
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
    /// What to write to the output: alerts (default), the decoded events, or nothing.
    #[arg(long, value_enum, default_value_t, env = "NHIWATCH_EMIT")]
    pub emit: Emit,
    /// Detectors to run, comma-separated (default: those enabled in their specifications;
    /// `first_seen` is the naive comparison rule).
    #[arg(long, value_delimiter = ',', env = "NHIWATCH_DETECTORS")]
    pub detectors: Option<Vec<String>>,
    /// Restore baselines from this directory at start and save them there on exit, so
    /// history replayed from files carries over to later runs.
    #[arg(long, env = "NHIWATCH_STATE_DIR")]
    pub state: Option<PathBuf>,
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

/// `nhiwatch baselines`.
#[derive(Debug, Subcommand)]
pub enum BaselinesCommand {
    /// What nhiwatch believes about one identity: the first question after an alert.
    Show(ShowArgs),
    /// List the identities with a baseline, most active first.
    List(ListArgs),
}

/// `nhiwatch baselines show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The identity (as in alerts, e.g. `github:acme/api/.github/workflows/deploy.yml`).
    pub identity: String,
    /// The state directory written by `replay --state` (or `run`).
    #[arg(long, env = "NHIWATCH_STATE_DIR", default_value = "state")]
    pub state: PathBuf,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `nhiwatch baselines list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The state directory written by `replay --state` (or `run`).
    #[arg(long, env = "NHIWATCH_STATE_DIR", default_value = "state")]
    pub state: PathBuf,
    /// At most this many identities.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
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
            let engine = Engine::from_config(&cfg, None)?;
            drop(engine);
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
            if args.state.is_some() && args.emit == Emit::Events {
                anyhow::bail!(
                    "--state keeps the detectors' baselines, but --emit events runs no detector"
                );
            }
            let mut engine = Engine::from_config(&cfg, args.detectors.as_deref())?;
            if let Some(dir) = &args.state
                && engine.load(dir)?
            {
                tracing::info!(
                    dir = %dir.display(),
                    identities = engine.state.identities.len(),
                    "baselines restored"
                );
            }
            let opts = replay::Options {
                inputs: args.inputs,
                emit: args.emit,
                output: args.output,
                rejects: args.rejects,
                progress: args.progress,
            };
            let summary = replay::run(&decoder, Some(&mut engine), &opts)?;
            if let Some(dir) = &args.state {
                let path = engine.save(dir)?;
                tracing::info!(path = %path.display(), identities = engine.state.identities.len(), "baselines saved");
            }
            eprint!("{}", summary.render());
            Ok(if summary.nothing_read() {
                Outcome::NothingRead
            } else {
                Outcome::Ok
            })
        }
        Command::Baselines(BaselinesCommand::Show(args)) => {
            let mut engine = Engine::from_config(&cfg, None)?;
            if !engine.load(&args.state)? {
                anyhow::bail!(
                    "no baselines in {} (run `nhiwatch replay --state {}` first)",
                    args.state.display(),
                    args.state.display()
                );
            }
            let report =
                crate::baseline::report::identity(&engine, &args.identity).ok_or_else(|| {
                    anyhow::anyhow!(
                        "no baseline for identity {:?} in {}",
                        args.identity,
                        args.state.display()
                    )
                })?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::baseline::report::render(&report));
            }
            Ok(Outcome::Ok)
        }
        Command::Baselines(BaselinesCommand::List(args)) => {
            let mut engine = Engine::from_config(&cfg, None)?;
            if !engine.load(&args.state)? {
                anyhow::bail!("no baselines in {}", args.state.display());
            }
            let mut rows: Vec<(String, u32, u32, u32)> = engine
                .state
                .identities
                .iter()
                .map(|e| (e.key().to_string(), e.events, e.mints, e.uses))
                .collect();
            rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            println!("{:>9} {:>8} {:>8}  identity", "events", "mints", "uses");
            for (id, ev, m, u) in rows.into_iter().take(args.limit) {
                println!("{ev:>9} {m:>8} {u:>8}  {id}");
            }
            Ok(Outcome::Ok)
        }
        Command::Detectors => {
            let engine = Engine::from_config(&cfg, None)?;
            let running = engine.detector_names();
            for spec in crate::detect::load_specs(cfg.detectors.dir.as_deref())? {
                let name = &spec.detector.name;
                println!(
                    "{name:<17} {:<8} {}",
                    if running.contains(&name.as_str()) {
                        "enabled"
                    } else {
                        "disabled"
                    },
                    spec.detector.description
                );
                println!(
                    "{:<17} learning: {} events over {} days; forget after {}; half-life {}; suppression {}",
                    "",
                    spec.learning.min_events,
                    spec.learning.min_days,
                    spec.forgetting.forget_after,
                    spec.forgetting.half_life,
                    spec.suppression.window
                );
            }
            Ok(Outcome::Ok)
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
