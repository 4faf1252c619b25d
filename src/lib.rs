//! nhiwatch: a streaming anomaly detector for non-human identities in software delivery.
//!
//! Records flow one way: a source frames them, [`decode`] turns them into canonical
//! [`event::Event`]s, and later stages baseline, detect, alert and store. See
//! `ARCHITECTURE.md` beside the repository for the whole design.

#![warn(missing_docs)]

pub mod alert;
pub mod baseline;
pub mod cli;
pub mod config;
pub mod decode;
pub mod detect;
pub mod encode;
pub mod environment;
pub mod event;
pub mod fingerprint;
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
