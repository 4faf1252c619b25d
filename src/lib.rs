//! nhiwatch: a streaming anomaly detector for non-human identities in software delivery.
//!
//! Records flow one way: a source frames them, [`decode`] turns them into canonical
//! [`event::Event`]s, [`baseline`] remembers what each identity, its peers and the fleet do,
//! [`detect`] judges each event against that memory and makes [`alert::Alert`]s, and
//! [`encode`], [`sink`] and [`lake`] carry the alerts and events out; [`query`] is SQL over
//! the lake. [`replay`] (files) and [`kafka`] (`nhiwatch run`) are the two pipelines that wire
//! those parts, and [`cli`] is the command line. `ARCHITECTURE.md` beside the repository has
//! the whole design.
//!
//! # Layers
//!
//! Imports point down: a module uses modules of its own layer or of lower layers, never of a
//! higher one, and the modules never import each other in a cycle. `tests/layers.rs` reads
//! this table and every `crate::…` path in `src/`, and fails on an import that reaches up (it
//! names the file and the import) or on a cycle; a module missing from the table fails it too.
//!
//! | layer | modules | what they are |
//! |---|---|---|
//! | 0 primitives | `time` `units` `error` `redact` `httpd` `tls` `files` | instants, config units (`Duration`), the config error (and what a full disk looks like), secret masking, bounds for the small HTTP endpoints, server TLS from PEM files, owner-only files |
//! | 1 model | `event` `alert` `environment` `fingerprint` | the canonical event, the alert and its `Severity`, environment names and tiers, credential fingerprints |
//! | 2 read and remember | `source` `decode` `baseline` `telemetry` | framing, the five formats, per-identity/peer/fleet state, metrics and logs |
//! | 3 judge | `detect` | the engine, the four detectors, specs, peer rules, `baselines show` reports |
//! | 4 deliver and keep | `encode` `sink` `lake` `kafka::config` | SIEM encodings, sinks with their spool, the Parquet lake, the `[kafka]`/`[run]` sections |
//! | 5 investigate and simulate | `query` `simulate` `score` | SQL over the lake, the organisation simulator, scoring against its labels |
//! | 6 assembly | `config` | `nhiwatch.toml`: assembles every component's section |
//! | 7 pipelines | `replay` `kafka` | files to alerts; Kafka stages, checkpoints, fencing |
//! | 8 entry | `cli` | the command line |
//!
//! Each component owns its configuration section next to its code (`decode::DecodeConfig`,
//! `detect::{DetectorsConfig, TimeConfig}`, `sink::SinkConfig`, `lake::LakeConfig`,
//! `query::SqlConfig`, `kafka::config::KafkaConfig`, …) and validates it; only the pipelines
//! and `cli` see the assembled [`config::Config`]. `kafka::config` sits in layer 4 although
//! the rest of `kafka` is a pipeline: the assembly embeds the section, and the stages that use
//! it sit above the assembly.

#![warn(missing_docs)]

pub mod alert;
pub mod baseline;
pub mod cli;
pub mod config;
pub mod decode;
pub mod detect;
pub mod encode;
pub mod environment;
pub mod error;
pub mod event;
pub mod files;
pub mod fingerprint;
pub mod httpd;
pub mod kafka;
pub mod lake;
pub mod query;
pub mod redact;
pub mod replay;
pub mod score;
pub mod simulate;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod units;
