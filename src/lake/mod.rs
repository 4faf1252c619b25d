//! The lake: canonical events and alerts as Parquet files an analyst queries with SQL
//! (`nhiwatch query`, the PostgreSQL-wire and HTTP endpoints, or any Parquet reader).
//!
//! Layout under the lake directory:
//!
//! ```text
//! events/day=YYYY-MM-DD/source=<source>/part-<stamp>-<writer>-<seq>.parquet
//! alerts/day=YYYY-MM-DD/part-….parquet
//! baselines/<engine or partition>.parquet      (replaced at every checkpoint)
//! _staging/<writer>-<seq>.arrows               (rows not yet rolled; see `writer`)
//! ```
//!
//! The day is the event's (UTC), so a replay of last month lands in last month's partitions.

pub mod schema;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use serde::Deserialize;

pub use schema::Table;
pub use writer::{Writer, Written};

use crate::alert::Alert;
use crate::event::Event;
use crate::time::Timestamp;
use crate::units::Duration;

/// `[lake]`: where and how events and alerts are kept for SQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// The lake directory (`--lake`); no lake when unset.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// A part becomes a Parquet file once it has staged this many bytes of Arrow data
    /// (the Parquet file is several times smaller).
    #[serde(default = "default_roll_bytes")]
    pub roll_bytes: u64,
    /// …or once it is this old. Rows are visible to queries after their part rolls.
    #[serde(default = "default_roll_interval")]
    pub roll_interval: Duration,
    /// Rows per Parquet row group (the unit of pruning by statistics).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// `run` deletes day partitions older than this (by wall clock), hourly. Kept forever
    /// when unset. `replay` never deletes.
    #[serde(default)]
    pub retention: Option<Duration>,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            dir: None,
            roll_bytes: default_roll_bytes(),
            roll_interval: default_roll_interval(),
            row_group_rows: default_row_group_rows(),
            retention: None,
        }
    }
}

fn default_roll_bytes() -> u64 {
    256 << 20
}

fn default_roll_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_row_group_rows() -> usize {
    256 * 1024
}

impl LakeConfig {
    /// Checks the values, naming the key.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        let invalid = |key: &str, message: String| crate::error::ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        if self.roll_bytes < (1 << 20) {
            return Err(invalid(
                "lake.roll_bytes",
                format!("{} is too small; at least 1048576", self.roll_bytes),
            ));
        }
        if self.roll_interval.as_secs() == 0 {
            return Err(invalid("lake.roll_interval", "must be at least 1s".into()));
        }
        if self.row_group_rows < 1024 {
            return Err(invalid(
                "lake.row_group_rows",
                format!("{} is too small; at least 1024", self.row_group_rows),
            ));
        }
        if let Some(r) = self.retention
            && r.as_secs() < 86_400
        {
            return Err(invalid(
                "lake.retention",
                format!("{r} is shorter than a day (partitions are days)"),
            ));
        }
        Ok(())
    }
}

/// A lake failure. It stops `run` and `replay` (offsets stay uncommitted, so nothing is lost).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("lake: cannot {what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file or directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Arrow or Parquet refused the data.
    #[error("lake: {path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The writer thread stopped.
    #[error("lake: the writer thread stopped")]
    Gone,
}

impl Error {
    /// Whether the disk (or quota) is full: the rows are kept, try again later.
    pub fn is_disk_full(&self) -> bool {
        crate::error::is_disk_full(self)
    }
}

/// Lake results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

enum Msg {
    Events(Vec<Event>),
    Alerts(Vec<Alert>, Timestamp),
    Whole(Table, String, datafusion::arrow::array::RecordBatch),
}

/// A [`Writer`] on its own thread, for `replay`: Parquet encoding runs beside detection.
pub struct Background {
    tx: Option<SyncSender<Msg>>,
    handle: Option<JoinHandle<Result<Written>>>,
    root: PathBuf,
}

impl Background {
    /// Opens the lake and starts the thread.
    pub fn start(root: &Path, cfg: &LakeConfig, name: &str) -> Result<Background> {
        let mut w = Writer::open(root, cfg, name)?;
        let (tx, rx): (SyncSender<Msg>, Receiver<Msg>) = sync_channel(16);
        let handle = std::thread::Builder::new()
            .name("lake".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Events(events) => {
                            for e in &events {
                                w.event(e)?;
                            }
                        }
                        Msg::Alerts(alerts, raised) => {
                            for a in &alerts {
                                w.alert(a, raised)?;
                            }
                        }
                        Msg::Whole(table, name, batch) => {
                            writer::write_whole(w.root(), table, &name, &batch)?;
                        }
                    }
                }
                w.close()
            })
            .map_err(|source| Error::Io {
                what: "start a thread for",
                path: root.display().to_string(),
                source,
            })?;
        Ok(Background {
            tx: Some(tx),
            handle: Some(handle),
            root: root.to_path_buf(),
        })
    }

    fn send(&mut self, msg: Msg) -> Result<()> {
        match &self.tx {
            Some(tx) if tx.send(msg).is_ok() => Ok(()),
            _ => Err(self.stop().err().unwrap_or(Error::Gone)),
        }
    }

    /// Queues events.
    pub fn events(&mut self, events: Vec<Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.send(Msg::Events(events))
    }

    /// Queues alerts raised now.
    pub fn alerts(&mut self, alerts: Vec<Alert>) -> Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        self.send(Msg::Alerts(alerts, Timestamp::now()))
    }

    /// Queues a table replaced whole at each checkpoint (`<table>/<name>.parquet`).
    pub fn whole(
        &mut self,
        table: Table,
        name: String,
        batch: datafusion::arrow::array::RecordBatch,
    ) -> Result<()> {
        self.send(Msg::Whole(table, name, batch))
    }

    /// The lake directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes everything queued and closes every file.
    pub fn stop(&mut self) -> Result<Written> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| Error::Gone)?,
            None => Err(Error::Gone),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let _ = self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key() {
        let cfg: LakeConfig = toml::from_str("roll_bytes = 10").unwrap();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("lake.roll_bytes")
        );
        let cfg: LakeConfig = toml::from_str("retention = \"12h\"").unwrap();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("lake.retention")
        );
        let cfg: LakeConfig = toml::from_str("row_group_rows = 10").unwrap();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("lake.row_group_rows")
        );
        let cfg: LakeConfig = toml::from_str("retention = \"90d\"").unwrap();
        cfg.validate().unwrap();
        assert_eq!(LakeConfig::default().roll_interval.as_secs(), 300);
    }

    #[test]
    fn day_partition_is_the_utc_date() {
        let t = crate::time::Timestamp::parse("2026-03-29T23:59:59Z").unwrap();
        assert_eq!(schema::day_of(t), "2026-03-29");
        let t = crate::time::Timestamp::parse("2026-03-30T00:00:00+02:00").unwrap();
        assert_eq!(schema::day_of(t), "2026-03-29");
    }
}
