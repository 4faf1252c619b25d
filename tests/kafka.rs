//! `nhiwatch run` against a real Kafka-protocol broker (see `util::kafka`): the alerts topic
//! holds what `replay` prints for the same records, poison records reach the dead-letter
//! topic, `kill -9` and restarts lose and double-learn nothing, two instances split the work,
//! and a broker that is not there yet is waited for.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::kafka::{Broker, Msg, Nhiwatch, free_port};
use crate::util::{self, KEY};

/// The shipped simulated week (36 identities, 9 days, 5 attacks).
fn week() -> Vec<Vec<u8>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(util::fixture("simulated/week.jsonl.gz")).expect("sample week"),
    )
    .read_to_string(&mut text)
    .expect("gzip");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// One test's names and files.
struct Setup {
    dir: tempfile::TempDir,
    input: String,
    alerts: String,
    dlq: String,
    group: String,
    config: PathBuf,
}

impl Setup {
    fn new(broker: &Broker, partitions: u32, tag: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let u = format!("{tag}-{}", free_port());
        let s = Setup {
            input: format!("in-{u}"),
            alerts: format!("alerts-{u}"),
            dlq: format!("dlq-{u}"),
            group: format!("g-{u}"),
            config: dir.path().join("nhiwatch.toml"),
            dir,
        };
        let org = std::fs::read_to_string(util::fixture("simulated/nhiwatch.toml")).expect("org");
        let text = format!(
            r#"{org}
[fingerprint]
key = "{KEY}"

[kafka]
bootstrap_servers = "{b}"
group_id = "{g}"
partitions = {partitions}
alerts_topic = "{a}"
dlq_topic = "{d}"

[[kafka.topics]]
name = "{i}"

[kafka.consumer_options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[run]
checkpoint_interval = "1s"
"#,
            b = broker.bootstrap,
            g = s.group,
            a = s.alerts,
            d = s.dlq,
            i = s.input,
        );
        std::fs::write(&s.config, text).expect("config");
        broker.create_topic(&s.input, 1);
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start(&self, name: &str, extra: &[&str]) -> Nhiwatch {
        let state = self.path(&format!("state-{name}"));
        let state = state.to_str().expect("utf-8 path");
        let mut args = vec!["--state-dir", state];
        args.extend_from_slice(extra);
        Nhiwatch::start(&self.config, &args, self.path(&format!("{name}.log")))
    }

    /// Alert ids `replay --partitions N --hold` writes for the same records.
    fn replay_ids(&self, records: &[Vec<u8>], partitions: u32) -> BTreeSet<String> {
        let file = self.path("input.jsonl");
        let mut text = Vec::new();
        for r in records {
            text.extend_from_slice(r);
            text.push(b'\n');
        }
        std::fs::write(&file, text).expect("input");
        let out = util::run(
            &[
                "--config",
                self.config.to_str().expect("utf-8"),
                "replay",
                "--hold",
                "--partitions",
                &partitions.to_string(),
                file.to_str().expect("utf-8"),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        util::parse_alert_ids(&out.stdout)
    }
}

fn ids(msgs: &[Msg]) -> BTreeSet<String> {
    msgs.iter()
        .map(|m| m.json()["id"].as_str().expect("alert id").to_string())
        .collect()
}

/// Reads the alerts topic until it holds every expected id (then a little longer, to see
/// any unexpected extra).
fn read_alerts(broker: &Broker, s: &Setup, expected: &BTreeSet<String>) -> Vec<Msg> {
    let want = expected.clone();
    let msgs = broker.read(
        &s.alerts,
        Duration::from_secs(120),
        Duration::from_secs(60),
        |m| ids(m).is_superset(&want),
    );
    // A little longer, to catch an unexpected extra alert.
    std::thread::sleep(Duration::from_secs(2));
    let n = msgs.len();
    broker.read(
        &s.alerts,
        Duration::from_secs(10),
        Duration::from_secs(1),
        move |m| m.len() > n,
    )
}

#[test]
fn alerts_topic_holds_what_replay_prints() {
    let broker = Broker::start();
    let s = Setup::new(&broker, 6, "same");
    let records = week();
    let expected = s.replay_ids(&records, 6);
    assert!(expected.len() >= 5, "the sample week alerts: {expected:?}");
    broker.produce(&s.input, &records);
    let mut nw = s.start("a", &[]);
    nw.wait_for("nhiwatch run started", Duration::from_secs(30));
    let msgs = read_alerts(&broker, &s, &expected);
    assert_eq!(ids(&msgs), expected, "log:\n{}", nw.log());
    for m in &msgs {
        let a = m.json();
        assert_eq!(m.key.as_deref(), a["identity"].as_str(), "key = identity");
        assert_eq!(
            m.headers.get("nhiwatch-detector").map(String::as_str),
            a["detector"].as_str()
        );
        assert_eq!(
            m.headers.get("nhiwatch-severity").map(String::as_str),
            a["severity"].as_str()
        );
    }
    assert_eq!(nw.terminate(), Some(0));
}

#[allow(dead_code)]
fn _unused(_: &Path) {}
