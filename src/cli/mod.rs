//! The command line: clap definitions and the glue from arguments to the library. Every flag
//! also reads an `NHIWATCH_*` environment variable.

mod args;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::decode::Format;
use crate::detect::Engine;
use crate::replay::{self, Emit, Progress};
use crate::simulate;
use crate::telemetry::logs::LogFormat;
pub use args::*;

/// The learned state in a directory: a `replay --state` snapshot, or the per-partition
/// checkpoints `run --state-dir` writes (one engine per partition).
fn load_state(cfg: &Config, dir: &std::path::Path) -> anyhow::Result<Vec<Engine>> {
    let mut engine = cfg.engine(None)?;
    if engine.load(dir)? {
        return Ok(vec![engine]);
    }
    let mut engines = Vec::new();
    if dir.is_dir() {
        for cp in crate::kafka::checkpoint::read_dir(dir)? {
            let mut e = cfg.engine(None)?;
            e.restore_bytes(&cp.engine)
                .with_context(|| format!("checkpoint of {}/{}", cp.topic, cp.partition))?;
            engines.push(e);
        }
    }
    if engines.is_empty() {
        anyhow::bail!(
            "no baselines in {} (written by `nhiwatch replay --state DIR` or `nhiwatch run --state-dir DIR`)",
            dir.display()
        );
    }
    Ok(engines)
}

/// Builds (without connecting) every Kafka client `run` uses, so a misspelt or invalid
/// librdkafka option is reported at start, naming it.
fn check_kafka_clients(cfg: &Config) -> anyhow::Result<()> {
    use crate::kafka::client::{Role, client_config};
    let k = &cfg.kafka;
    let bad = |e: rdkafka::error::KafkaError| {
        let msg = e.to_string();
        // Name the table and key the property came from.
        let key = [
            ("options", &k.options),
            ("consumer_options", &k.consumer_options),
            ("producer_options", &k.producer_options),
        ]
        .iter()
        .find_map(|(t, m)| {
            m.keys()
                .find(|n| msg.contains(&format!("\"{n}\"")))
                .map(|n| format!("kafka.{t}.{n:?}"))
        })
        .unwrap_or_else(|| "kafka.options".to_string());
        anyhow::anyhow!("invalid config: `{key}`: {msg}")
    };
    client_config(k, Role::Consumer, &k.group_id)
        .create::<rdkafka::consumer::BaseConsumer>()
        .map_err(bad)?;
    client_config(k, Role::Producer, &k.group_id)
        .create::<rdkafka::producer::BaseProducer>()
        .map_err(bad)?;
    Ok(())
}

/// What `main` should exit with.
pub enum Outcome {
    /// Success.
    Ok,
    /// Ran, but nothing could be read (exit status 1).
    NothingRead,
    /// Ran, but a measured quality was below the bar asked for (exit status 2).
    BelowBar,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run(args) => {
            args.apply(&mut cfg)?;
            cfg.validate_run()?;
            check_kafka_clients(&cfg)?;
            // Fail on a bad detector spec or key before touching the cluster.
            drop(cfg.engine(None)?);
            drop(cfg.decoder(Format::Auto)?);
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            crate::kafka::run::run(&cfg, stop)?;
            Ok(Outcome::Ok)
        }
        Command::CheckConfig => {
            let decoder = cfg.decoder(Format::Auto)?;
            drop(decoder);
            let engine = cfg.engine(None)?;
            drop(engine);
            if cfg.kafka.bootstrap_servers.is_some() || !cfg.kafka.topics.is_empty() {
                cfg.validate_run()?;
                check_kafka_clients(&cfg)?;
            }
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
            let lake = args.lake.clone().or_else(|| cfg.lake.dir.clone());
            let decoder = cfg.decoder(args.format)?.keep_records(lake.is_some());
            if args.state.is_some() && args.emit == Emit::Events {
                anyhow::bail!(
                    "--state keeps the detectors' baselines, but --emit events runs no detector"
                );
            }
            if args.partitions == 0 || (args.state.is_some() && args.partitions > 1) {
                anyhow::bail!("--partitions must be at least 1, and 1 with --state");
            }
            let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            if let Some(addr) = &args.metrics_addr {
                let token =
                    crate::telemetry::server::metrics_token(cfg.run.metrics_token_file.as_deref())?;
                crate::telemetry::server::serve(addr, ready.clone(), token)
                    .with_context(|| format!("--metrics-addr {addr}"))?;
            }
            let mut engines = Vec::new();
            for _ in 1..args.partitions {
                engines.push(cfg.engine(args.detectors.as_deref())?);
            }
            let mut engine = cfg.engine(args.detectors.as_deref())?;
            if let Some(dir) = &args.state
                && engine.load(dir)?
            {
                tracing::info!(
                    dir = %dir.display(),
                    identities = engine.identity_count(),
                    "baselines restored"
                );
            }
            let opts = replay::Options {
                inputs: args.inputs,
                emit: args.emit,
                output: args.output,
                rejects: args.rejects,
                progress: args.progress,
                hold: args.hold,
                encoding: args.encoding,
                lake,
                lake_config: cfg.lake.clone(),
            };
            let sinks = if args.sinks {
                if cfg.sinks.is_empty() {
                    anyhow::bail!("--sinks: the config has no [[sinks]] to deliver to");
                }
                let spool_dir = cfg.spool_dir();
                crate::sink::require_spool(&cfg.sinks, spool_dir.as_deref())?;
                Some(crate::sink::Sinks::build(
                    &cfg.sinks,
                    &crate::sink::BuildOptions {
                        spool_dir: spool_dir.as_deref(),
                        hostname: cfg.delivery.hostname(),
                        latency_sink: None,
                    },
                )?)
            } else {
                None
            };
            engines.insert(0, engine);
            if !args.isolated_partitions {
                // Partitions judge together within an instance (all of them in one, unless
                // `--instances` spreads them as a consumer group would).
                let n = engines.len();
                let k = (args.instances.max(1) as usize).min(n);
                let mut start = 0;
                for i in 0..k {
                    let end = start + n / k + usize::from(i < n % k);
                    let (first, rest) = engines[start..end].split_at_mut(1);
                    for e in rest {
                        e.share_context(&mut first[0]);
                    }
                    crate::detect::link_peers(&engines[start..end].iter().collect::<Vec<_>>());
                    start = end;
                }
                // Instances share their credential bindings (`<group>-bindings`).
                if k > 1 && args.share_bindings {
                    let (first, rest) = engines.split_at_mut(1);
                    for e in rest {
                        e.share_bindings(&first[0]);
                    }
                }
            }
            // State is restored: ready.
            ready.store(true, std::sync::atomic::Ordering::Release);
            let result = replay::run(&decoder, &mut engines, &opts, sinks.as_ref());
            if let Some(sinks) = sinks {
                for r in sinks.shutdown(cfg.delivery.drain())? {
                    eprintln!(
                        "sink {}: {} alerts routed, {} left spooled",
                        r.name, r.routed, r.spooled
                    );
                }
            }
            let summary = result?;
            let engine = &engines[0];
            if let Some(dir) = &args.state {
                let path = engine.save(dir)?;
                tracing::info!(path = %path.display(), identities = engine.identity_count(), "baselines saved");
            }
            eprint!("{}", summary.render());
            Ok(if summary.nothing_read() {
                Outcome::NothingRead
            } else {
                Outcome::Ok
            })
        }
        Command::Query(args) => query(&cfg, args),
        Command::Baselines(BaselinesCommand::Show(args)) => {
            let engines = load_state(&cfg, &args.state)?;
            let report = engines
                .iter()
                .find_map(|e| crate::detect::report::identity(e, &args.identity))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no baseline for identity {:?} in {}",
                        args.identity,
                        args.state.display()
                    )
                })?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::detect::report::render(&report));
            }
            Ok(Outcome::Ok)
        }
        Command::Inventory(args) => {
            use crate::detect::inventory;
            let engines = if args.inputs.is_empty() {
                load_state(&cfg, &args.state)?
            } else {
                // Straight from records: learn them as a replay does, then list.
                let decoder = cfg.decoder(args.format.unwrap_or_default())?;
                let mut engines = vec![cfg.engine(None)?];
                let opts = replay::Options {
                    inputs: args.inputs.clone(),
                    emit: replay::Emit::None,
                    output: None,
                    rejects: None,
                    progress: replay::Progress::Never,
                    hold: false,
                    encoding: Default::default(),
                    lake: None,
                    lake_config: cfg.lake.clone(),
                };
                let summary = replay::run(&decoder, &mut engines, &opts, None)?;
                // What was read and rejected (and why), as replay reports it.
                eprint!("{}", summary.render());
                if summary.nothing_read() {
                    anyhow::bail!("no record of {} could be read", args.inputs.join(", "));
                }
                engines
            };
            let filter = inventory::Filter {
                environment: args.environment.clone(),
                tier: args.tier,
                source: args.source.clone(),
                stale_days: args.stale_days,
            };
            let engines: Vec<&Engine> = engines.iter().collect();
            let mut rows: Vec<inventory::Row> = inventory::rows(&engines)
                .into_iter()
                .filter(|r| filter.keeps(r))
                .collect();
            match args.sort.as_str() {
                "last-seen" => rows.sort_by_key(|r| r.last_seen),
                "mints" => rows.sort_by_key(|r| std::cmp::Reverse(r.mints)),
                "identity" => rows.sort_by(|a, b| a.identity.cmp(&b.identity)),
                _ => {}
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if args.csv {
                print!("{}", inventory::csv(&rows));
            } else {
                print!("{}", inventory::table(&rows));
            }
            Ok(Outcome::Ok)
        }
        Command::Baselines(BaselinesCommand::List(args)) => {
            let engines = load_state(&cfg, &args.state)?;
            let mut rows: Vec<(String, u32, u32, u32)> = engines
                .iter()
                .flat_map(|engine| {
                    let mut rows = Vec::new();
                    engine.each_identity(|k, b| {
                        rows.push((k.to_string(), b.events, b.mints, b.uses));
                    });
                    rows
                })
                .collect();
            rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            println!("{:>9} {:>8} {:>8}  identity", "events", "mints", "uses");
            for (id, ev, m, u) in rows.into_iter().take(args.limit) {
                println!("{ev:>9} {m:>8} {u:>8}  {id}");
            }
            Ok(Outcome::Ok)
        }
        Command::Detectors => {
            let engine = cfg.engine(None)?;
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
                let p = &spec.peers;
                println!(
                    "{:<17} peers: {}",
                    "",
                    if p.judge {
                        format!(
                            "judged; routine when {:.0} % of them do it ({})",
                            p.routine_share * 100.0,
                            if p.routine == "drop" {
                                "not alerted".to_string()
                            } else {
                                format!("alerted as {}", p.routine)
                            }
                        )
                    } else {
                        "not judged".into()
                    }
                );
            }
            Ok(Outcome::Ok)
        }
        Command::Score(args) => {
            let open = |p: &PathBuf| {
                std::fs::File::open(p)
                    .map(std::io::BufReader::new)
                    .with_context(|| format!("cannot open {}", p.display()))
            };
            if args.alerts.len() != args.labels.len() {
                anyhow::bail!(
                    "{} --alerts files but {} --labels files: give them in pairs",
                    args.alerts.len(),
                    args.labels.len()
                );
            }
            let mut s = crate::score::Score::default();
            for (alerts, labels) in args.alerts.iter().zip(&args.labels) {
                let key = crate::score::AnswerKey::read(open(labels)?)
                    .with_context(|| format!("{}", labels.display()))?;
                let one = crate::score::score(open(alerts)?, &key)
                    .with_context(|| format!("{}", alerts.display()))?;
                s.merge(&one);
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", s.render());
            }
            let low_recall = args.min_recall.is_some_and(|m| s.min_recall() < m);
            let low_precision = args.min_precision.is_some_and(|m| s.precision < m);
            if low_recall || low_precision {
                tracing::error!(
                    min_recall = s.min_recall(),
                    precision = s.precision,
                    "below the bar asked for"
                );
                return Ok(Outcome::BelowBar);
            }
            Ok(Outcome::Ok)
        }
        Command::Simulate(args) => {
            // The simulation starts at midnight UTC of the day, so a bare date is enough.
            let start = match args.start.len() {
                10 => format!("{}T00:00:00Z", args.start),
                _ => args.start.clone(),
            };
            let start = crate::time::Timestamp::parse(&start)
                .with_context(|| format!("--start {:?}", args.start))?;
            let sim = simulate::Simulation::new(simulate::Settings {
                seed: args.seed,
                identities: args
                    .identities
                    .unwrap_or_else(|| args.profile.default_identities()),
                days: args.days,
                start,
                timezone: args.timezone.clone(),
                profile: args.profile,
                attacks: args.attacks,
                only: args.format,
                hygiene: args.hygiene,
            })?;
            if let Some(p) = &args.config_out {
                // Whole or not at all: a replay may read it while the records stream.
                crate::baseline::snapshot::write_atomic(p, &[sim.config_toml().as_bytes()])
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
            let mut labels = match &args.labels {
                Some(p) => Some(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => None,
            };
            let labels = labels.as_mut().map(|l| l as &mut dyn std::io::Write);
            let summary = match &args.output {
                Some(p) => {
                    let f = std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?;
                    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                    if p.extension().is_some_and(|e| e == "gz") {
                        let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::best());
                        let summary = sim.run(&mut gz, labels, args.records)?;
                        std::io::Write::flush(&mut gz.finish()?)?;
                        summary
                    } else {
                        let summary = sim.run(&mut w, labels, args.records)?;
                        std::io::Write::flush(&mut w)?;
                        summary
                    }
                }
                None => {
                    let mut w =
                        std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
                    sim.run(&mut w, labels, args.records)?
                }
            };
            let n = summary.records;
            tracing::info!(
                records = n,
                identities = summary.identities,
                identity_days = summary.identity_days,
                attacks = summary.attacks,
                attacks_skipped = summary.attacks_skipped,
                "simulation written"
            );
            Ok(Outcome::Ok)
        }
    }
}

/// `nhiwatch query`: one query, or `--serve`.
fn query(cfg: &Config, args: QueryArgs) -> anyhow::Result<Outcome> {
    let lake = args
        .lake
        .or_else(|| cfg.lake.dir.clone())
        .ok_or_else(|| anyhow::anyhow!("no lake: give --lake DIR (or set lake.dir)"))?;
    if !lake.is_dir() {
        anyhow::bail!("--lake {}: not a directory", lake.display());
    }
    if args.serve {
        let mut sql = cfg.sql.clone();
        if args.pg_listen.is_some() {
            sql.pg_listen = args.pg_listen;
        }
        if args.http_listen.is_some() {
            sql.http_listen = args.http_listen;
        }
        if !sql.enabled() {
            anyhow::bail!("--serve: no listener; set --pg-listen or --http-listen (or [sql])");
        }
        sql.validate()?;
        let endpoints = crate::query::serve(&lake, &sql)?;
        if let Some(a) = endpoints.pg {
            eprintln!("postgresql endpoint on {a} (user {})", sql.user);
        }
        if let Some(a) = endpoints.http {
            eprintln!("http endpoint on http://{a}/query");
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, stop.clone())?;
        }
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        drop(endpoints);
        return Ok(Outcome::Ok);
    }
    let sql = match args.sql.as_deref() {
        Some("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        }
        Some(s) => s.to_string(),
        None => anyhow::bail!("no SQL given"),
    };
    if args.format == crate::query::Format::Parquet
        && args.output.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        anyhow::bail!("--format parquet writes binary: give --output FILE or redirect stdout");
    }
    let rt = crate::query::runtime()?;
    let (schema, batches) = rt.block_on(async {
        let ctx = crate::query::session(&lake, cfg.sql.memory_limit).await?;
        crate::query::execute_limited(&ctx, &sql, None).await
    })?;
    match &args.output {
        Some(p) => {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(p)
                    .with_context(|| format!("cannot create {}", p.display()))?,
            );
            crate::query::write(args.format, &schema, &batches, &mut f)?;
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            match crate::query::write(args.format, &schema, &batches, &mut out) {
                Err(crate::query::Error::Output(m)) if m.contains("Broken pipe") => {}
                r => r?,
            }
        }
    }
    Ok(Outcome::Ok)
}
