//! Splunk HTTP Event Collector envelope: `{"time", "host", "source", "sourcetype", "index",
//! "event", "fields"}` for the `/services/collector/event` endpoint. `event` is the nhiwatch
//! alert; `fields` are indexed fields (strings only) for fast `tstats` searches.

use serde_json::{Value, json};

use super::HecFields;
use crate::alert::Alert;

/// The HEC event of an alert.
pub(super) fn event(a: &Alert, host: &str, hec: &HecFields) -> Value {
    let micros = a.event_time.as_micros();
    // HEC takes epoch seconds with a fraction; milliseconds are what Splunk keeps.
    let time = (micros.div_euclid(1000) as f64) / 1000.0;
    let mut fields = json!({
        "detector": a.detector,
        "severity": a.severity.as_str(),
        "source_system": a.source.as_str(),
    });
    if let Some(env) = &a.environment {
        fields["environment"] = env.as_str().into();
    }
    let mut v = json!({
        "time": time,
        "host": host,
        "source": hec.source,
        "sourcetype": hec.sourcetype,
        "event": a,
        "fields": fields,
    });
    if let Some(index) = &hec.index {
        v["index"] = index.as_str().into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope() {
        let a = crate::encode::tests::sample();
        let v = event(&a, "det-1", &HecFields::default());
        assert_eq!(v["time"].as_f64(), Some(1_774_869_964.25));
        assert_eq!(v["host"], "det-1");
        assert_eq!(v["sourcetype"], "nhiwatch:alert");
        assert!(v.get("index").is_none());
        assert_eq!(v["event"]["id"], a.id.as_str());
        assert_eq!(v["fields"]["environment"], "production");
        let with_index = event(
            &a,
            "h",
            &HecFields {
                index: Some("security".into()),
                ..HecFields::default()
            },
        );
        assert_eq!(with_index["index"], "security");
    }
}
