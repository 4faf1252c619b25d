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
    /// A decoded identity, environment, scope, runner or context value longer than this
    /// rejects its record (`invalid_field`): no real one comes close (an IAM role ARN is at
    /// most 2,048 characters), and each is kept in the baselines.
    #[serde(default = "default_max_field_bytes")]
    pub max_field_bytes: usize,
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
            max_field_bytes: default_max_field_bytes(),
            min_time: default_min_time(),
            max_future_skew: default_max_future_skew(),
        }
    }
}

fn default_max_record_bytes() -> usize {
    128 << 20
}

fn default_max_field_bytes() -> usize {
    4096
}

fn default_min_time() -> Timestamp {
    // 2000-01-01T00:00:00Z: older "event times" are zero values or unit mistakes.
    Timestamp::from_micros(946_684_800_000_000)
}

fn default_max_future_skew() -> Duration {
    Duration::from_secs(86_400)
}

impl DecodeConfig {
    /// Checks that the size limits leave room for a record and its fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_field_bytes < 256 {
            return Err(ConfigError::Invalid {
                key: "decode.max_field_bytes".into(),
                message: format!("{} is too small; at least 256", self.max_field_bytes),
            });
        }
        if self.max_record_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "decode.max_record_bytes".into(),
                message: format!("{} is too small; at least 1024", self.max_record_bytes),
            });
        }
        Ok(())
    }
}
