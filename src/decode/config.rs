//! `[decode]`: the limits every decoder applies to every record.

use serde::Deserialize;

use crate::error::ConfigError;
use crate::time::Timestamp;
use crate::units::Duration;

/// `[decode]`: limits applied to every record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeConfig {
    /// Records larger than this are rejected with `too_large` (CloudTrail delivery files can be
    /// tens of MiB, so the default is generous).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Event times before this instant are absurd (`absurd_timestamp`).
    #[serde(default = "default_min_time")]
    pub min_time: Timestamp,
    /// Event times further than this in the future of the wall clock are absurd.
    #[serde(default = "default_max_future_skew")]
    pub max_future_skew: Duration,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            max_record_bytes: default_max_record_bytes(),
            min_time: default_min_time(),
            max_future_skew: default_max_future_skew(),
        }
    }
}

fn default_max_record_bytes() -> usize {
    128 << 20
}

fn default_min_time() -> Timestamp {
    // 2000-01-01T00:00:00Z: older "event times" are zero values or unit mistakes.
    Timestamp::from_micros(946_684_800_000_000)
}

fn default_max_future_skew() -> Duration {
    Duration::from_secs(86_400)
}

impl DecodeConfig {
    /// Checks that the record size limit leaves room for a record.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_record_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "decode.max_record_bytes".into(),
                message: format!("{} is too small; at least 1024", self.max_record_bytes),
            });
        }
        Ok(())
    }
}
