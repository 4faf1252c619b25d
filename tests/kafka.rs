//! `nhiwatch run` against a real Kafka-protocol broker (see `util::kafka`): the alerts topic
//! holds what `replay` prints for the same records, poison records reach the dead-letter
//! topic, `kill -9` and restarts lose and double-learn nothing, two instances split the work,
//! and a broker that is not there yet is waited for.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::kafka::{Broker, Msg, Nhiwatch, free_port};
use crate::util::prom;
use crate::util::{self, KEY};

/// The shipped simulated week (36 identities, 9 days, 5 attacks).
pub(crate) fn week() -> Vec<Vec<u8>> {
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
pub(crate) struct Setup {
    dir: tempfile::TempDir,
    pub(crate) input: String,
    pub(crate) alerts: String,
    pub(crate) dlq: String,
    pub(crate) group: String,
    pub(crate) config: PathBuf,
    /// `kafka.share_context`: the partitions an instance holds judge together.
    shared: bool,
}

impl Setup {
    pub(crate) fn new(broker: &Broker, partitions: u32, tag: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let u = format!("{tag}-{}", free_port());
        let s = Setup {
            input: format!("in-{u}"),
            alerts: format!("alerts-{u}"),
            dlq: format!("dlq-{u}"),
            group: format!("g-{u}"),
            config: dir.path().join("nhiwatch.toml"),
            dir,
            shared: true,
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
# Records of a partition the loaded test broker serves late are still taken in order.
merge_wait_ms = 2000
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

    /// Every partition judges alone (`kafka.share_context = false`): the alerts then do not
    /// depend on which instance holds which partitions, which tests of several instances
    /// need to know what to expect.
    pub(crate) fn isolated(mut self) -> Setup {
        self.edit_config("[kafka]\n", "[kafka]\nshare_context = false\n");
        self.shared = false;
        self
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces `from` by `to` in the configuration (a consumer option, say).
    pub(crate) fn edit_config(&self, from: &str, to: &str) {
        let config = std::fs::read_to_string(&self.config).expect("config");
        assert!(config.contains(from), "{from} not in the configuration");
        std::fs::write(&self.config, config.replace(from, to)).expect("config");
    }

    pub(crate) fn start(&self, name: &str, extra: &[&str]) -> Nhiwatch {
        self.start_with(name, extra, &[])
    }

    /// [`Setup::start`] with extra environment variables (test hooks).
    pub(crate) fn start_with(&self, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Nhiwatch {
        let state = self.path(&format!("state-{name}"));
        let state = state.to_str().expect("utf-8 path");
        let mut args = vec!["--state-dir", state];
        args.extend_from_slice(extra);
        Nhiwatch::start_with(&self.config, &args, self.path(&format!("{name}.log")), env)
    }

    /// Alert ids `replay --partitions N --hold` writes for the same records: with
    /// `--isolated-partitions` when each partition judges alone ([`Setup::isolated`]); else
    /// what one instance holding every partition alerts.
    pub(crate) fn replay_ids(&self, records: &[Vec<u8>], partitions: u32) -> BTreeSet<String> {
        self.replay_ids_with(records, partitions, !self.shared)
    }

    /// [`Setup::replay_ids`], the partitions judging alone or not as asked.
    pub(crate) fn replay_ids_with(
        &self,
        records: &[Vec<u8>],
        partitions: u32,
        isolated: bool,
    ) -> BTreeSet<String> {
        let file = self.path("input.jsonl");
        let mut text = Vec::new();
        for r in records {
            text.extend_from_slice(r);
            text.push(b'\n');
        }
        std::fs::write(&file, text).expect("input");
        let n = partitions.to_string();
        let mut args = vec![
            "--config",
            self.config.to_str().expect("utf-8"),
            "replay",
            "--hold",
            "--partitions",
            &n,
            file.to_str().expect("utf-8"),
        ];
        if isolated {
            args.push("--isolated-partitions");
        }
        let out = util::run(&args, None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        util::parse_alert_ids(&out.stdout)
    }
}

/// A GET on loopback: status and body.
pub(crate) fn http_get(addr: &str, path: &str) -> (u16, String) {
    prom::http(addr, "GET", path, None)
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
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut nw = s.start("a", &["--metrics-addr", &addr]);
    nw.wait_for("nhiwatch run started", Duration::from_secs(30));
    let msgs = read_alerts(&broker, &s, &expected);
    assert_eq!(ids(&msgs), expected, "log:\n{}", nw.log());
    // The counters agree with what was consumed and written.
    let (status, _) = http_get(&addr, "/readyz");
    assert_eq!(status, 200);
    // The last records may still be in flight after the last alert: wait for the count.
    let start = std::time::Instant::now();
    let body = loop {
        let (status, body) = http_get(&addr, "/metrics");
        assert_eq!(status, 200);
        let done = prom::sum(&body, "nhiwatch_detect_events_total", &[]) == records.len() as f64;
        if done || start.elapsed() > Duration::from_secs(20) {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let value = |name: &str, labels: &[(&str, &str)]| prom::sum(&body, name, labels) as u64;
    assert_eq!(
        value("nhiwatch_input_records_total", &[("topic", &s.input)]),
        records.len() as u64
    );
    assert_eq!(
        value("nhiwatch_detect_events_total", &[]),
        records.len() as u64
    );
    assert_eq!(value("nhiwatch_alerts_total", &[]), expected.len() as u64);
    assert_eq!(value("nhiwatch_records_rejected_total", &[]), 0);
    assert_eq!(
        value("nhiwatch_kafka_partitions_assigned", &[("stage", "detect")]),
        6
    );
    // Every alert's delivery to the topic was confirmed and timed.
    assert_eq!(
        value("nhiwatch_sink_deliveries_total", &[("sink", "kafka")]),
        expected.len() as u64
    );
    assert_eq!(
        value("nhiwatch_alert_latency_seconds_count", &[]),
        expected.len() as u64
    );
    let identity = msgs[0].json()["identity"]
        .as_str()
        .expect("identity")
        .to_string();
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
    // What the run learned is inspectable from its state directory.
    let state = s.path("state-a");
    let state = state.to_str().expect("utf-8");
    let out = util::run(
        &["baselines", "list", "--state", state, "--limit", "1000"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout).lines().count() - 1;
    assert!(
        listed >= 30,
        "the sample week has 36 identities; listed {listed}"
    );
    let out = util::run(
        &["baselines", "show", &identity, "--state", state, "--json"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Produces `records` on a thread in slices with pauses (about `secs` seconds in all), so
/// processes can be killed mid-stream.
fn produce_slowly(
    broker: &Broker,
    topic: &str,
    records: Vec<Vec<u8>>,
    secs: u64,
) -> std::thread::JoinHandle<()> {
    let bootstrap = broker.bootstrap.clone();
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let b = Broker::external(&bootstrap);
        let slices = 40usize;
        let per = records.len().div_ceil(slices);
        for chunk in records.chunks(per) {
            b.produce(&topic, chunk);
            std::thread::sleep(Duration::from_millis(secs * 1000 / slices as u64));
        }
    })
}

/// Starts instance `a` and `kill -9`s it `rounds` times, each time only once it detects
/// (and has checkpointed, at least once a second, for a while): 0.8 to 3.8 s after its
/// restore, at points that differ from run to run (the setup's port seeds them; the log
/// says which).
fn kill_mid_stream(s: &Setup, rounds: u64) {
    let mut seed = xxhash_rust::xxh3::xxh3_64(s.group.as_bytes());
    for round in 0..rounds {
        let mut nw = s.start("a", &[]);
        nw.wait_for_any(
            &["partition starts empty", "partition state restored"],
            Duration::from_secs(90),
        );
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ms = 800 + (seed >> 33) % 3000;
        eprintln!("kill -9 round {round}: {ms} ms after the restore");
        std::thread::sleep(Duration::from_millis(ms));
        assert!(nw.running(), "{}", nw.log());
        nw.kill9();
    }
}

/// The detection state of every partition in a run's local checkpoints, as snapshot bytes.
fn run_state(dir: &Path, topic: &str, partitions: u32) -> Vec<Vec<u8>> {
    let cfg = nhiwatch::config::Config::default();
    (0..partitions as i32)
        .map(|p| {
            let cp = nhiwatch::kafka::checkpoint::read_local(dir, topic, p)
                .expect("readable checkpoint")
                .unwrap_or_else(|| panic!("no checkpoint of partition {p} in {}", dir.display()));
            let mut e = cfg.engine(None).expect("engine");
            e.restore_bytes(&cp.engine).expect("state");
            e.snapshot_bytes().expect("encode")
        })
        .collect()
}

/// Where two snapshots differ (for a failure message).
fn state_diff(a: &[u8], b: &[u8]) -> String {
    let cfg = nhiwatch::config::Config::default();
    let load = |bytes: &[u8]| {
        let mut e = cfg.engine(None).expect("engine");
        e.restore_bytes(bytes).expect("state");
        e
    };
    let (x, y) = (load(a), load(b));
    let mut out = Vec::new();
    let ids = |e: &nhiwatch::detect::Engine| {
        let mut v: Vec<(String, nhiwatch::baseline::IdentityBaseline)> = e
            .state
            .identities
            .iter()
            .map(|r| (r.key().to_string(), r.value().clone()))
            .collect();
        v.sort_by(|p, q| p.0.cmp(&q.0));
        v
    };
    let (ix, iy) = (ids(&x), ids(&y));
    out.push(format!("identities {} vs {}", ix.len(), iy.len()));
    for ((n, p), (_, q)) in ix.iter().zip(&iy) {
        if p != q {
            out.push(format!(
                "identity {n} differs:\n  run    {p:?}\n  replay {q:?}"
            ));
            break;
        }
    }
    if x.state.fleet.export() != y.state.fleet.export() {
        out.push("fleet differs".into());
    }
    if x.state.credentials.export() != y.state.credentials.export() {
        out.push(format!(
            "credentials differ ({} vs {})",
            x.state.credentials.len(),
            y.state.credentials.len()
        ));
    }
    if x.state.interner.export() != y.state.interner.export() {
        out.push(format!(
            "strings differ ({} vs {})",
            x.state.interner.len(),
            y.state.interner.len()
        ));
    }
    if x.state.peers.export() != y.state.peers.export() {
        out.push("peer groups differ".into());
    }
    let (rx, ry) = (format!("{:#?}", x.runtime()), format!("{:#?}", y.runtime()));
    let (lx, ly): (Vec<&str>, Vec<&str>) = (rx.lines().collect(), ry.lines().collect());
    if let Some(i) = (0..lx.len().min(ly.len())).find(|i| lx[*i] != ly[*i]) {
        // The field it is in: the nearest line above it that names one.
        let field = lx[..i]
            .iter()
            .rev()
            .find(|l| {
                l.trim_start().starts_with(|c: char| c.is_ascii_lowercase()) && l.contains(':')
            })
            .unwrap_or(&"?");
        out.push(format!(
            "engine state differs in {}: run {} / replay {}",
            field.trim(),
            lx[i].trim(),
            ly[i].trim()
        ));
    }
    out.join("\n")
}

/// The detection state `replay --partitions N --hold` ends with, per partition.
fn replay_state(s: &Setup, records: &[Vec<u8>], partitions: u32) -> Vec<Vec<u8>> {
    let cfg = nhiwatch::config::Config::load(Some(&s.config)).expect("config");
    let decoder = cfg
        .decoder(nhiwatch::decode::Format::Auto)
        .expect("decoder");
    let mut engines: Vec<_> = (0..partitions)
        .map(|_| cfg.engine(None).expect("engine"))
        .collect();
    if s.shared && partitions > 1 {
        // As one instance holding every partition judges them.
        let (first, rest) = engines.split_at_mut(1);
        for e in rest {
            e.share_context(&mut first[0]);
        }
        nhiwatch::detect::link_peers(&engines.iter().collect::<Vec<_>>());
    }
    let file = s.path("replay-input.jsonl");
    std::fs::write(&file, records.join(&b'\n')).expect("input");
    let opts = nhiwatch::replay::Options {
        inputs: vec![file.to_string_lossy().into_owned()],
        emit: nhiwatch::replay::Emit::None,
        output: Some(s.path("replay-alerts.jsonl")),
        rejects: None,
        progress: nhiwatch::replay::Progress::Never,
        hold: true,
        encoding: nhiwatch::encode::Encoding::Json,
        lake: None,
        lake_config: Default::default(),
    };
    nhiwatch::replay::run(&decoder, &mut engines, &opts, None).expect("replay");
    engines
        .iter()
        .map(|e| e.snapshot_bytes().expect("encode"))
        .collect()
}

#[test]
fn poison_records_go_to_the_dead_letter_topic_and_the_rest_is_processed() {
    let broker = Broker::start();
    let s = Setup::new(&broker, 2, "dlq");
    let mut records = week();
    let poison: Vec<(usize, &str, &str)> = vec![
        (10, "{\"truncated\": ", "malformed_json"),
        (
            500,
            "{\"kind\":\"Unknown\",\"token\":\"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOmFjbWUvYXBpIn0.c2lnbmF0dXJl\"}",
            "unknown_format",
        ),
        (1500, "42", "not_an_object"),
        (3000, "", "malformed_json"),
    ];
    for (at, text, _) in &poison {
        records.insert(*at, text.as_bytes().to_vec());
    }
    let expected = s.replay_ids(&records, 2);
    assert!(expected.len() >= 5, "the sample week alerts: {expected:?}");
    broker.produce(&s.input, &records);
    let mut nw = s.start("a", &[]);
    nw.wait_for("nhiwatch run started", Duration::from_secs(30));
    let dead = broker.read(
        &s.dlq,
        Duration::from_secs(60),
        Duration::from_secs(30),
        |m| m.len() >= poison.len(),
    );
    assert_eq!(
        dead.len(),
        poison.len(),
        "dead letters: {dead:?}\n{}",
        nw.log()
    );
    for (m, (at, text, reason)) in dead.iter().zip(&poison) {
        let h = &m.headers;
        assert_eq!(
            h.get("nhiwatch-reason").map(String::as_str),
            Some(*reason),
            "{h:?}"
        );
        assert_eq!(h.get("nhiwatch-origin-topic"), Some(&s.input));
        assert_eq!(
            h.get("nhiwatch-origin-partition").map(String::as_str),
            Some("0")
        );
        assert_eq!(
            h.get("nhiwatch-origin-offset"),
            Some(&at.to_string()),
            "{h:?}"
        );
        assert!(!h.get("nhiwatch-message").expect("message").is_empty());
        let body = String::from_utf8_lossy(&m.value);
        assert!(
            !body.contains("eyJhbGciOi"),
            "a token reached the dead-letter topic: {body}"
        );
        if !text.contains("eyJ") {
            assert_eq!(
                body,
                text.trim_end(),
                "the record as it was, trailing blanks aside"
            );
        }
    }
    let msgs = read_alerts(&broker, &s, &expected);
    assert_eq!(ids(&msgs), expected);
    assert_eq!(nw.terminate(), Some(0));
}

#[test]
fn kill_9_ten_times_mid_stream_loses_nothing_and_learns_nothing_twice() {
    let broker = Broker::start();
    let partitions = 3;
    let s = Setup::new(&broker, partitions, "kill");
    let records = week();
    let expected = s.replay_ids(&records, partitions);
    assert!(expected.len() >= 5, "the sample week alerts: {expected:?}");
    // Ten kills at random points, each restart waiting out the killed member's session
    // (6 s), take 70 to 100 s; the stream lasts longer.
    let producer = produce_slowly(&broker, &s.input, records.clone(), 100);
    kill_mid_stream(&s, 10);
    let mut nw = s.start("a", &[]);
    nw.wait_for("partition state restored", Duration::from_secs(90));
    producer.join().expect("producer");
    let msgs = read_alerts(&broker, &s, &expected);
    let log_before_stop = nw.log();
    let log_path = nw.log.clone();
    assert_eq!(nw.terminate(), Some(0));
    // What the last instance skipped as already checkpointed, and dropped as produced twice.
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("run stopped"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(ids(&msgs), expected, "log:\n{log_before_stop}");
    // Alerts sent before a kill and processed again after it are not sent twice.
    assert_eq!(
        msgs.len(),
        expected.len(),
        "alerts on the topic more than once; log:\n{log_before_stop}"
    );
    assert!(
        log.contains("partition state restored"),
        "the last start restored no checkpoint: the kills did not happen mid-stream\n{log}"
    );
    let from_run = run_state(
        &s.path("state-a"),
        &format!("{}-events", s.group),
        partitions,
    );
    let from_replay = replay_state(&s, &records, partitions);
    for p in 0..partitions as usize {
        assert!(
            from_run[p] == from_replay[p],
            "partition {p}: the state after ten kill -9 differs from a clean replay: {}",
            state_diff(&from_run[p], &from_replay[p])
        );
    }
}

/// Fault drill: the newest local checkpoint truncated and the newest changelog snapshot
/// damaged (a chunk with a wrong body, as a bit flip leaves it) while the instance is down.
/// Both are caught by their checksums, counted and logged; the older changelog snapshot is
/// restored, the events since are processed again, and the alerts and the state still equal
/// a clean replay's, with no alert sent twice.
#[test]
fn a_damaged_checkpoint_and_changelog_snapshot_fall_back_to_the_older_good_one() {
    let broker = Broker::start();
    let s = Setup::new(&broker, 1, "damage");
    let records = week();
    let expected = s.replay_ids(&records, 1);
    let producer = produce_slowly(&broker, &s.input, records.clone(), 16);
    let mut nw = s.start("a", &[]);
    nw.wait_for_any(
        &["partition starts empty", "partition state restored"],
        Duration::from_secs(90),
    );
    // Several checkpoints (one a second), then a clean stop mid-stream.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(nw.terminate(), Some(0));

    let events = format!("{}-events", s.group);
    let dir = s.path("state-a");
    let cp = nhiwatch::kafka::checkpoint::read_local(&dir, &events, 0)
        .expect("readable checkpoint")
        .expect("a checkpoint");
    assert!(cp.epoch >= 2, "epoch {}: too few checkpoints", cp.epoch);
    let file = nhiwatch::kafka::checkpoint::local_path(&dir, &events, 0);
    let bytes = std::fs::read(&file).expect("checkpoint file");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("truncate");
    // The newest snapshot's first chunk, replaced: right epoch, wrong body.
    let slot = if cp.epoch.is_multiple_of(2) { 'a' } else { 'b' };
    let mut damaged = cp.epoch.to_le_bytes().to_vec();
    damaged.extend_from_slice(b"\x00bit-flipped chunk");
    broker.produce_keyed(
        &format!("{}-changelog", s.group),
        0,
        format!("{events}/0/{slot}/0").as_bytes(),
        &damaged,
    );
    producer.join().expect("producer");

    let addr = format!("127.0.0.1:{}", free_port());
    let nw = s.start("a", &["--metrics-addr", &addr]);
    let msgs = read_alerts(&broker, &s, &expected);
    let (_, metrics) = http_get(&addr, "/metrics");
    let log = nw.log();
    assert_eq!(nw.terminate(), Some(0));
    assert!(log.contains("local checkpoint unusable"), "{log}");
    assert!(log.contains("using the other slot"), "{log}");
    assert!(log.contains("from=\"changelog\""), "{log}");
    for reason in ["local_checkpoint_unusable", "changelog_slot_unusable"] {
        let n = prom::sum(
            &metrics,
            "nhiwatch_errors_total",
            &[("stage", "state"), ("reason", reason)],
        );
        assert!(n >= 1.0, "{reason}: {n}\n{metrics}");
    }
    assert_eq!(ids(&msgs), expected, "log:\n{log}");
    assert_eq!(
        msgs.len(),
        expected.len(),
        "an alert sent twice; log:\n{log}"
    );
    let from_run = run_state(&dir, &events, 1);
    let from_replay = replay_state(&s, &records, 1);
    assert!(
        from_run[0] == from_replay[0],
        "the state after the fallback differs from a clean replay: {}",
        state_diff(&from_run[0], &from_replay[0])
    );
}

/// Fault drill: the broker frozen (SIGSTOP) for 60 s mid-stream, then resumed: every
/// request times out rather than being refused (a hung broker, or a network partition).
/// nhiwatch keeps running, retries, and once the broker is back the alert ids equal a clean
/// replay's, none twice. The restart drill below stops the broker outright.
#[test]
fn the_broker_frozen_for_a_minute_mid_stream_loses_nothing() {
    let mut broker = Broker::start();
    let s = Setup::new(&broker, 3, "freeze");
    broker_outage(&mut broker, &s, |broker| {
        if !broker.signal("STOP") {
            eprintln!("skipping: an external broker (KAFKA_BOOTSTRAP) cannot be frozen");
            return false;
        }
        std::thread::sleep(Duration::from_secs(60));
        broker.signal("CONT");
        true
    });
}

/// Fault drill: the broker killed mid-stream, down for 60 s, and started again on the same
/// port with its log on disk (Tansu over SQLite). nhiwatch keeps running through the outage
/// (its clients retry), and once the broker is back the alert ids equal a clean replay's,
/// none twice.
#[test]
fn the_broker_restarted_on_the_same_port_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let mut broker = Broker::tansu_on_disk(&dir.path().join("broker"));
    let s = Setup::new(&broker, 3, "restart");
    // librdkafka's default session timeout, not the suite's 6 s: after a restart Tansu
    // answers heartbeats slowly for a while, and at 6 s the group lost its members every
    // ten seconds and never settled.
    s.edit_config(
        "\"session.timeout.ms\" = \"6000\"",
        "\"session.timeout.ms\" = \"45000\"",
    );
    broker_outage(&mut broker, &s, |broker| {
        broker.restart(Duration::from_secs(60));
        true
    });
}

/// The broker drills: half the week processed, then `outage` (false: it cannot be done
/// here, skip), then the rest; nhiwatch must keep running and serving `/healthz`, and the
/// alert ids equal a clean replay's, none twice.
fn broker_outage(broker: &mut Broker, s: &Setup, outage: impl FnOnce(&mut Broker) -> bool) {
    let records = week();
    let expected = s.replay_ids(&records, 3);
    let half = records.len() / 2;
    broker.produce(&s.input, &records[..half]);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut nw = s.start("a", &["--metrics-addr", &addr]);
    nw.wait_for_any(
        &["partition starts empty", "partition state restored"],
        Duration::from_secs(90),
    );
    std::thread::sleep(Duration::from_secs(3));
    if !outage(broker) {
        return;
    }
    assert!(
        nw.running(),
        "nhiwatch exited during the broker outage:\n{}",
        nw.log()
    );
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    broker.produce(&s.input, &records[half..]);
    let msgs = read_alerts(broker, s, &expected);
    let log = nw.log();
    assert_eq!(nw.terminate(), Some(0), "{log}");
    assert_eq!(ids(&msgs), expected, "log:\n{log}");
    assert_eq!(
        msgs.len(),
        expected.len(),
        "an alert sent twice; log:\n{log}"
    );
}

/// An instance that sent alerts and then crashed before the checkpoint including their
/// records: the next owner processes those records again (same records, same alert ids) and
/// must not put their alerts on the alerts topic a second time.
#[test]
fn alerts_sent_before_a_crash_are_not_sent_twice_after_the_restore() {
    let broker = Broker::start();
    let partitions = 3;
    let s = Setup::new(&broker, partitions, "resend");
    let records = week();
    let expected = s.replay_ids(&records, partitions);
    // The first half, checkpointed; then the rest, whose alerts are sent before the hook
    // aborts the process at the next checkpoint (as `kill -9` would, after the alerts were
    // delivered and before the checkpoint is written).
    let half = records.len() / 2;
    broker.produce(&s.input, &records[..half]);
    let mut nw = s.start_with("a", &[], &[("NHIWATCH_TEST_CRASH_AFTER_ALERTS", "1")]);
    nw.wait_for("partition starts empty", Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(4));
    broker.produce(&s.input, &records[half..]);
    let status = nw.wait_exit(Duration::from_secs(120));
    assert!(!status.success(), "the hook did not abort: {status}");
    assert!(
        nw.log().contains("NHIWATCH_TEST_CRASH_AFTER_ALERTS"),
        "{}",
        nw.log()
    );
    let before = broker.read(
        &s.alerts,
        Duration::from_secs(10),
        Duration::from_secs(1),
        |_| false,
    );
    assert!(!before.is_empty(), "no alert was sent before the crash");
    // The restart restores the last checkpoint, processes the rest again and finishes.
    let mut nw = s.start("a", &[]);
    nw.wait_for("partition state restored", Duration::from_secs(90));
    // Until its checkpoints include every event (the tail after the crash was processed
    // again), then a moment for the last sends to land.
    let events = format!("{}-events", s.group);
    let ends = broker.end_offsets(&events, partitions as i32);
    let start = std::time::Instant::now();
    loop {
        let done = (0..partitions as i32).all(|p| {
            nhiwatch::kafka::checkpoint::read_local(&s.path("state-a"), &events, p)
                .ok()
                .flatten()
                .is_some_and(|cp| cp.next_offset >= ends[p as usize])
        });
        if done {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the restarted instance did not catch up with {ends:?}:\n{}",
            nw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let msgs = read_alerts(&broker, &s, &expected);
    let log = nw.log();
    assert_eq!(nw.terminate(), Some(0));
    assert_eq!(ids(&msgs), expected, "log:\n{log}");
    let mut seen = BTreeSet::new();
    let twice: Vec<String> = msgs
        .iter()
        .map(|m| m.json()["id"].as_str().expect("alert id").to_string())
        .filter(|id| !seen.insert(id.clone()))
        .collect();
    assert!(
        twice.is_empty(),
        "{} alert(s) on the topic twice ({} messages, {} before the crash): {twice:?}\nlog:\n{log}",
        twice.len(),
        msgs.len(),
        before.len()
    );
    assert!(
        log.contains("partition state restored") && log.contains("they are not sent again"),
        "the restart found no alert sent after the checkpoint, so nothing was at stake:\n{log}"
    );
}

#[test]
fn two_instances_split_the_partitions_and_one_dying_loses_nothing() {
    let broker = Broker::start();
    let partitions = 6;
    let s = Setup::new(&broker, partitions, "pair").isolated();
    let records = week();
    let expected = s.replay_ids(&records, partitions);
    assert!(expected.len() >= 5, "the sample week alerts: {expected:?}");
    let mut a = s.start("a", &[]);
    let mut b = s.start("b", &[]);
    a.wait_for("event partitions assigned", Duration::from_secs(60));
    b.wait_for("event partitions assigned", Duration::from_secs(60));
    let producer = produce_slowly(&broker, &s.input, records, 10);
    a.wait_for("partition starts empty", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    a.kill9();
    producer.join().expect("producer");
    let msgs = read_alerts(&broker, &s, &expected);
    let log = b.log();
    assert_eq!(b.terminate(), Some(0));
    assert_eq!(ids(&msgs), expected, "b's log:\n{log}");
    assert!(
        log.contains("from=\"changelog\"") || log.contains("from=changelog"),
        "b took over a's partitions without restoring their state:\n{log}"
    );
}

/// The epochs of the checkpoints in `<group>-changelog`, per partition state, in the order
/// they were written (from each checkpoint's first chunk, whose value starts with its epoch).
fn changelog_epochs(broker: &Broker, s: &Setup) -> BTreeMap<String, Vec<u64>> {
    let topic = format!("{}-changelog", s.group);
    let msgs = broker.read(
        &topic,
        Duration::from_secs(30),
        Duration::from_secs(3),
        |_| false,
    );
    let mut by_state: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in msgs {
        let Some(key) = m.key.as_deref() else {
            continue;
        };
        // `<topic>/<partition>/<slot>/<chunk>`: only first chunks.
        let Some(state) = key
            .strip_suffix("/a/0")
            .or_else(|| key.strip_suffix("/b/0"))
        else {
            continue;
        };
        let epoch = u64::from_le_bytes(m.value[..8].try_into().expect("epoch"));
        by_state.entry(state.to_string()).or_default().push(epoch);
    }
    by_state
}

#[test]
fn a_stalled_instance_writes_nothing_for_the_partitions_it_lost() {
    // An instance stopped (SIGSTOP) past `session.timeout.ms` loses its partitions to another
    // one, which restores their state and checkpoints it on; when the stalled instance
    // resumes, it must not write its stale state over the new owner's.
    let broker = Broker::start();
    let s = Setup::new(&broker, 2, "stall").isolated();
    let mut a = s.start("a", &[]);
    a.wait_for("event partitions assigned", Duration::from_secs(60));
    let producer = produce_slowly(&broker, &s.input, week(), 30);
    a.wait_for("partition starts empty", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(4));
    a.signal("STOP");
    let mut b = s.start("b", &[]);
    b.wait_for("partition state restored", Duration::from_secs(60));
    // The new owner processes and checkpoints for a while.
    std::thread::sleep(Duration::from_secs(4));
    a.signal("CONT");
    a.wait_for("event partitions lost", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    producer.join().expect("producer");
    std::thread::sleep(Duration::from_secs(3));
    let (a_log, b_log) = (a.log(), b.log());
    let epochs = changelog_epochs(&broker, &s);
    assert!(!epochs.is_empty(), "no checkpoint in the changelog");
    for (state, e) in &epochs {
        assert!(
            e.windows(2).all(|w| w[0] < w[1]),
            "{state}: checkpoint epochs {e:?} go back: a stale owner wrote after the new one\n== a:\n{a_log}\n== b:\n{b_log}"
        );
    }
    assert!(
        b_log.contains("from=\"changelog\"") || b_log.contains("from=changelog"),
        "b did not take over a's state:\n{b_log}"
    );
    // The stalled instance carries on as a member of the group (it does not exit on the
    // commit the group refused).
    assert!(a.running(), "a exited after it resumed:\n{a_log}");
    assert_eq!(a.terminate(), Some(0), "{a_log}");
    assert_eq!(b.terminate(), Some(0), "{b_log}");
}

#[test]
fn a_stalled_instance_does_not_send_the_alerts_its_partitions_new_owner_sends() {
    // An instance stands still (test hook) with its first alerts in hand, longer than the
    // group lets a member go without polling; the other instance takes its partition over,
    // restores the last checkpoint and sends those alerts itself. When the stalled instance
    // resumes, it must not send them too.
    let broker = Broker::start();
    let s = Setup::new(&broker, 2, "stalls").isolated();
    s.edit_config(
        "\"heartbeat.interval.ms\" = \"500\"",
        "\"heartbeat.interval.ms\" = \"500\"\n\"max.poll.interval.ms\" = \"7000\"",
    );
    let records = week();
    let expected = s.replay_ids(&records, 2);
    let mut b = s.start("b", &[]);
    let mut a = s.start_with("a", &[], &[("NHIWATCH_TEST_STALL_BEFORE_ALERT", "20")]);
    settled(&mut b, (0, 0));
    settled(&mut a, (0, 0));
    a.wait_for("partition starts empty", Duration::from_secs(60));
    broker.produce(&s.input, &records);
    a.wait_for(
        "standing still with alerts in hand",
        Duration::from_secs(90),
    );
    b.wait_for("partition state restored", Duration::from_secs(60));
    // Until the stall is over and the stalled instance has polled again.
    a.wait_for("event partitions lost", Duration::from_secs(60));
    let msgs = read_alerts(&broker, &s, &expected);
    let got = ids(&msgs);
    let (a_log, b_log) = (a.log(), b.log());
    assert_eq!(got, expected, "== a:\n{a_log}\n== b:\n{b_log}");
    assert_eq!(
        msgs.len(),
        got.len(),
        "an alert is on the topic twice\n== a:\n{a_log}\n== b:\n{b_log}"
    );
    assert!(
        a_log.contains("no longer owns are dropped"),
        "the held alerts were not left to the new owner:\n{a_log}"
    );
    assert_eq!(a.terminate(), Some(0), "{a_log}");
    assert_eq!(b.terminate(), Some(0), "{b_log}");
}

#[test]
fn alerts_held_back_after_a_stall_are_sent_when_the_instance_still_owns_its_partitions() {
    // A stall past the session timeout with the first alerts in hand, but the group keeps
    // the member (its heartbeats go on, and nobody else wants the partitions): the held
    // alerts are sent once the doubt is over, and none is lost or sent twice.
    let broker = Broker::start();
    let s = Setup::new(&broker, 2, "keeps");
    let records = week();
    let expected = s.replay_ids(&records, 2);
    let mut a = s.start_with("a", &[], &[("NHIWATCH_TEST_STALL_BEFORE_ALERT", "8")]);
    a.wait_for("partition starts empty", Duration::from_secs(60));
    broker.produce(&s.input, &records);
    a.wait_for("alerts held back", Duration::from_secs(90));
    a.wait_for("the alerts held back are sent", Duration::from_secs(60));
    let msgs = read_alerts(&broker, &s, &expected);
    let got = ids(&msgs);
    let log = a.log();
    assert_eq!(got, expected, "{log}");
    assert_eq!(
        msgs.len(),
        got.len(),
        "an alert is on the topic twice\n{log}"
    );
    assert!(!log.contains("event partitions lost"), "{log}");
    assert_eq!(a.terminate(), Some(0), "{log}");
}

/// How many times an instance was assigned event and input partitions so far.
fn assignments(nw: &Nhiwatch) -> (usize, usize) {
    let log = nw.log();
    (
        log.matches("event partitions assigned").count(),
        log.matches("input partitions assigned").count(),
    )
}

/// Waits until both of an instance's groups assigned it partitions again since `before`.
fn settled(nw: &mut Nhiwatch, before: (usize, usize)) {
    let start = std::time::Instant::now();
    loop {
        let now = assignments(nw);
        if now.0 > before.0 && now.1 > before.1 {
            return;
        }
        assert!(nw.running(), "{}", nw.log());
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the groups did not settle within 90 s:\n{}",
            nw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 19's chaos drill, with every partition judging alone (`share_context = false`), so
/// the expected alerts (`replay --partitions 6 --isolated-partitions`'s) do not depend on which
/// instance holds which partition at which moment. Each kill or restart
/// waits until the group has settled without (or with) the instance: Tansu 0.6, the test
/// broker, keeps a member that dies while its group rebalances as the group's leader for good
/// (seen with `NHIWATCH_TEST_LOG=debug` and `"debug" = "cgrp"`: every JoinGroup of the live
/// members answered with the same generation and a dead member as leader, no SyncGroup ever
/// carrying an assignment), so back-to-back kills stalled a group in 6 of 9 runs; with the
/// waits, 9 of 9 passed. Real brokers expire such a member after `session.timeout.ms`.
#[test]
fn three_instances_through_two_kills_and_a_restart_alert_what_replay_does() {
    // Six partitions over three instances; one instance is killed (-9) twice mid-stream and
    // restarted, another stopped with SIGTERM and restarted. The alerts topic must hold the
    // alerts of `replay --partitions 6 --isolated-partitions` (each partition judged alone),
    // none missing and none extra.
    let broker = Broker::start();
    let partitions = 6;
    let s = Setup::new(&broker, partitions, "trio").isolated();
    let records = week();
    let expected = s.replay_ids(&records, partitions);
    assert!(expected.len() >= 5, "the sample week alerts: {expected:?}");
    let mut b = s.start("b", &[]);
    let mut c = s.start("c", &[]);
    settled(&mut b, (0, 0));
    settled(&mut c, (0, 0));
    let producer = produce_slowly(&broker, &s.input, records, 40);
    for round in 0..2 {
        let mut a = s.start("a", &[]);
        a.wait_for_any(
            &["partition starts empty", "partition state restored"],
            Duration::from_secs(90),
        );
        std::thread::sleep(Duration::from_millis(2500 + 1000 * round));
        assert!(a.running(), "{}", a.log());
        let before = assignments(&c);
        a.kill9();
        // Each change waits for the group to settle without the dead member: Tansu 0.6
        // keeps a member that dies while its group rebalances as the group's leader for
        // good (see below), which no client can get past.
        settled(&mut c, before);
    }
    let mut a = s.start("a", &[]);
    settled(&mut a, (0, 0));
    let before = assignments(&c);
    assert_eq!(b.terminate(), Some(0), "b did not stop cleanly");
    settled(&mut c, before);
    let mut b = s.start("b", &[]);
    settled(&mut b, (0, 0));
    producer.join().expect("producer");
    let msgs = read_alerts(&broker, &s, &expected);
    let (a_log, b_log, c_log) = (a.log(), b.log(), c.log());
    for nw in [a, b, c] {
        assert_eq!(nw.terminate(), Some(0));
    }
    let got = ids(&msgs);
    let twice = msgs.len() - got.len();
    eprintln!(
        "three instances: {} alerts on the topic, {} distinct, {twice} repeated",
        msgs.len(),
        got.len()
    );
    assert_eq!(
        got, expected,
        "== a:\n{a_log}\n== b:\n{b_log}\n== c:\n{c_log}"
    );
    // Alerts of records processed again after a kill keep their ids, and a restore reads
    // which were already sent: none is on the topic twice.
    assert_eq!(twice, 0, "== a:\n{a_log}\n== b:\n{b_log}\n== c:\n{c_log}");
}

#[test]
fn broker_unavailable_at_start_is_retried_with_a_clear_error() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("nhiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"127.0.0.1:{port}\"\ngroup_id = \"late\"\n[[kafka.topics]]\nname = \"in\"\n"
        ),
    )
    .expect("config");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut nw = Nhiwatch::start(
        &config,
        &["--metrics-addr", &addr],
        dir.path().join("run.log"),
    );
    nw.wait_for("cannot reach kafka; retrying", Duration::from_secs(60));
    assert!(
        nw.log().contains(&format!("127.0.0.1:{port}")),
        "{}",
        nw.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(nw.running(), "exited instead of retrying:\n{}", nw.log());
    // Alive, not ready, and the failed attempts are counted.
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert_eq!(http_get(&addr, "/readyz").0, 503);
    let (_, body) = http_get(&addr, "/metrics");
    assert!(
        prom::sum(
            &body,
            "nhiwatch_errors_total",
            &[("stage", "kafka"), ("reason", "unreachable")]
        ) >= 1.0,
        "{body}"
    );
    let broker = Broker::tansu_on(port);
    broker.create_topic("in", 1);
    nw.wait_for("nhiwatch run started", Duration::from_secs(90));
    let start = std::time::Instant::now();
    while http_get(&addr, "/readyz").0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "never ready:\n{}",
            nw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(nw.terminate(), Some(0));
}

#[test]
fn direct_mode_without_repartitioning_equals_replay_through_kill_9() {
    let broker = Broker::start();
    let s = Setup::new(&broker, 1, "direct");
    let text = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(
        &s.config,
        text.replace("partitions = 1\n", "partitions = 1\nrepartition = false\n"),
    )
    .expect("config");
    let records = week();
    let expected = s.replay_ids(&records, 1);
    assert!(expected.len() >= 5, "the sample week alerts: {expected:?}");
    let producer = produce_slowly(&broker, &s.input, records.clone(), 15);
    kill_mid_stream(&s, 2);
    producer.join().expect("producer");
    let nw = s.start("a", &[]);
    let msgs = read_alerts(&broker, &s, &expected);
    let log = nw.log();
    assert_eq!(nw.terminate(), Some(0));
    assert_eq!(ids(&msgs), expected, "log:\n{log}");
    assert_eq!(
        msgs.len(),
        expected.len(),
        "alerts on the topic more than once; log:\n{log}"
    );
    assert!(log.contains("repartition=false"), "{log}");
    assert!(
        log.contains("partition state restored"),
        "no checkpoint was restored:\n{log}"
    );
    let from_run = run_state(&s.path("state-a"), &s.input, 1);
    let from_replay = replay_state(&s, &records, 1);
    assert!(
        from_run[0] == from_replay[0],
        "state after kill -9 differs from a clean replay: {}",
        state_diff(&from_run[0], &from_replay[0])
    );
}

/// A small tmpfs mounted for a test (unmounted when dropped); the drill needs root.
pub(crate) struct Tmpfs(pub(crate) PathBuf);

impl Tmpfs {
    pub(crate) fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs for the full-disk drill needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir)
    }

    /// Produces half of `records`, lets them be processed, fills the file system and
    /// produces the rest; returns the filler file (remove it to free the space).
    pub(crate) fn fill_mid_stream(
        &self,
        broker: &Broker,
        topic: &str,
        records: &[Vec<u8>],
    ) -> PathBuf {
        let half = records.len() / 2;
        broker.produce(topic, &records[..half]);
        std::thread::sleep(Duration::from_secs(5));
        let filler = self.fill();
        broker.produce(topic, &records[half..]);
        filler
    }

    /// The full-disk drill's middle, for a process started with `--metrics-addr addr`: half
    /// of `records` produced and processed, the file system filled, the rest produced; the
    /// process must say it paused, keep running, count the full disk under `stage` at every
    /// retry, and resume by itself once the space is freed.
    pub(crate) fn drill(
        &self,
        nw: &mut Nhiwatch,
        addr: &str,
        stage: &str,
        broker: &Broker,
        topic: &str,
        records: &[Vec<u8>],
    ) {
        let filler = self.fill_mid_stream(broker, topic, records);
        nw.wait_for("disk full: consumption paused", Duration::from_secs(90));
        std::thread::sleep(Duration::from_secs(6));
        assert!(
            nw.running(),
            "nhiwatch exited on a full disk:\n{}",
            nw.log()
        );
        let (code, body) = http_get(addr, "/metrics");
        assert_eq!(code, 200);
        let series = format!(r#"nhiwatch_errors_total{{reason="disk_full",stage="{stage}"}}"#);
        let full: f64 = body
            .lines()
            .find(|l| l.starts_with(&series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {series}:\n{body}"));
        assert!(full >= 2.0, "tried again while the disk is full: {full}");
        std::fs::remove_file(&filler).expect("free the disk");
        nw.wait_for("disk space is back", Duration::from_secs(60));
    }

    /// Fills the file system to the last byte; returns the filler file.
    pub(crate) fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_under_the_state_directory_pauses_consumption_and_it_resumes_when_space_returns() {
    let broker = Broker::start();
    let s = Setup::new(&broker, 3, "statefull");
    let records = week();
    let expected = s.replay_ids(&records, 3);
    let disk = Tmpfs::mount(s.path("disk"), "64m");
    let state = disk.0.join("state");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut nw = Nhiwatch::start_with(
        &s.config,
        &[
            "--state-dir",
            state.to_str().expect("utf-8"),
            "--metrics-addr",
            &addr,
        ],
        s.path("a.log"),
        &[],
    );
    nw.wait_for_any(
        &["partition starts empty", "partition state restored"],
        Duration::from_secs(90),
    );
    disk.drill(&mut nw, &addr, "state", &broker, &s.input, &records);
    let msgs = read_alerts(&broker, &s, &expected);
    let text = nw.log();
    assert_eq!(nw.terminate(), Some(0), "{text}");
    assert_eq!(ids(&msgs), expected, "log:\n{text}");
    assert_eq!(
        msgs.len(),
        expected.len(),
        "an alert sent twice; log:\n{text}"
    );
    drop(disk);
}

/// The lake's staging files are written as records arrive (events by the ingest stage,
/// alerts by the detect stage): on a full disk both keep their rows in memory, pause and
/// commit nothing, and go on by themselves once there is space, losing no row and writing
/// none twice.
#[test]
fn a_full_disk_under_the_lake_pauses_consumption_and_no_row_is_lost_when_space_returns() {
    let broker = Broker::start();
    let s = Setup::new(&broker, 3, "lakefull");
    let records = week();
    let expected = s.replay_ids(&records, 3);
    let disk = Tmpfs::mount(s.path("disk"), "64m");
    let lake = disk.0.join("lake");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut nw = s.start(
        "a",
        &[
            "--lake",
            lake.to_str().expect("utf-8"),
            "--metrics-addr",
            &addr,
        ],
    );
    nw.wait_for_any(
        &["partition starts empty", "partition state restored"],
        Duration::from_secs(90),
    );
    disk.drill(&mut nw, &addr, "lake", &broker, &s.input, &records);
    let msgs = read_alerts(&broker, &s, &expected);
    let text = nw.log();
    assert_eq!(nw.terminate(), Some(0), "{text}");
    assert_eq!(ids(&msgs), expected, "log:\n{text}");
    assert_eq!(
        msgs.len(),
        expected.len(),
        "an alert sent twice; log:\n{text}"
    );
    // The lake holds every event and every alert once.
    let events = crate::lake::count(&lake, "SELECT count(*) FROM events");
    assert_eq!(events as usize, records.len(), "log:\n{text}");
    let distinct = crate::lake::count(
        &lake,
        "SELECT count(*) FROM (SELECT DISTINCT id, source, identity, time FROM events)",
    );
    assert_eq!(distinct, events);
    let alerts = crate::lake::count(&lake, "SELECT count(DISTINCT id) FROM alerts");
    assert_eq!(alerts as usize, expected.len());
    assert_eq!(
        crate::lake::count(&lake, "SELECT count(*) FROM alerts"),
        alerts
    );
    drop(disk);
}

/// The five hygiene findings end to end in `run`: a small organisation with the hygiene
/// scenarios (`simulate --hygiene`) streamed through the broker alerts what `replay` does,
/// and each finding is among the alerts.
#[test]
fn the_hygiene_findings_reach_the_alerts_topic_as_replay_finds_them() {
    let records: Vec<Vec<u8>> = util::hygiene_org(5)
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let broker = Broker::start();
    let s = Setup::new(&broker, 1, "hygiene");
    let expected = s.replay_ids(&records, 1);
    broker.produce(&s.input, &records);
    let mut nw = s.start("a", &[]);
    nw.wait_for("nhiwatch run started", Duration::from_secs(30));
    let msgs = read_alerts(&broker, &s, &expected);
    assert_eq!(ids(&msgs), expected, "log:\n{}", nw.log());
    let detectors: BTreeSet<String> = msgs
        .iter()
        .map(|m| m.json()["detector"].as_str().unwrap_or("").to_string())
        .collect();
    for d in [
        "dormant_reactivated",
        "long_lived_credential",
        "human_bound_credential",
        "new_trust",
        "unapproved_ref",
    ] {
        assert!(detectors.contains(d), "no {d} alert among {detectors:?}");
    }
    assert_eq!(nw.terminate(), Some(0));
}

/// A simulated organisation's records (`nhiwatch simulate`), one per line.
fn simulated_org(s: &Setup, identities: u32, days: u32, seed: u32) -> Vec<Vec<u8>> {
    let file = s.path("org.jsonl");
    let out = util::run(
        &[
            "simulate",
            "--identities",
            &identities.to_string(),
            "--days",
            &days.to_string(),
            "--seed",
            &seed.to_string(),
            "-o",
            file.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&file)
        .expect("simulated records")
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Issue 19: the partitions one instance holds judge together (one fleet and peer context,
/// one table of bindings), their records taken in the order ingest produced them. Six
/// partitions then alert exactly what one does, on an organisation where six partitions
/// judging alone do not (checked first, so the comparison can fail), through two `kill -9`s
/// whose restores merge each partition's saved context back into the instance's.
#[test]
fn six_partitions_in_one_instance_alert_what_one_partition_does_through_kills() {
    let broker = Broker::start();
    let partitions = 6;
    let s = Setup::new(&broker, partitions, "sixshared");
    let records = simulated_org(&s, 300, 21, 11);
    let expected = s.replay_ids(&records, 1);
    let alone = s.replay_ids_with(&records, partitions, true);
    assert_ne!(
        alone, expected,
        "partitions judging alone must differ on this organisation, or the test proves nothing"
    );
    let producer = produce_slowly(&broker, &s.input, records, 40);
    // Each instance restores its six partitions (about 0.7 s each), checkpoints a few
    // times, and dies mid-stream.
    for (round, ms) in [(0, 9_000), (1, 7_500)] {
        let mut nw = s.start("a", &[]);
        nw.wait_for_any(
            &["partition starts empty", "partition state restored"],
            Duration::from_secs(90),
        );
        std::thread::sleep(Duration::from_millis(ms));
        assert!(nw.running(), "round {round}: {}", nw.log());
        nw.kill9();
    }
    let mut nw = s.start("a", &[]);
    nw.wait_for("partition state restored", Duration::from_secs(90));
    producer.join().expect("producer");
    let msgs = read_alerts(&broker, &s, &expected);
    let log = nw.log();
    assert_eq!(nw.terminate(), Some(0));
    let got = ids(&msgs);
    let missing: Vec<_> = expected.difference(&got).collect();
    let extra: Vec<_> = got.difference(&expected).collect();
    eprintln!(
        "six partitions, one instance: {} alerts expected, {} on the topic ({} messages); missing {missing:?}, extra {extra:?}; alone: {}",
        expected.len(),
        got.len(),
        msgs.len(),
        alone.len()
    );
    assert!(missing.is_empty() && extra.is_empty(), "log:\n{log}");
    assert_eq!(
        msgs.len(),
        got.len(),
        "an alert on the topic twice; log:\n{log}"
    );
}

/// Issue 19: instances share their credential bindings through `<group>-bindings`. Two
/// instances hold one partition each (so they judge apart otherwise): a simulated
/// organisation is streamed in two phases, cut just before the first record whose
/// `cross_env_reuse` alert needs a binding the other instance made (found with `replay
/// --partitions 2 --instances 2` with and without `--share-bindings`, so the test fails if no
/// such alert exists). After the first phase is detected and its bindings have had a second
/// to travel, the second phase must raise that alert; nothing is alerted twice.
#[test]
fn a_credential_minted_under_one_instance_and_reused_under_another_alerts() {
    let broker = Broker::start();
    let partitions = 2;
    let s = Setup::new(&broker, partitions, "bindings");
    let records = simulated_org(&s, 300, 28, 1);
    let file = s.path("org.jsonl");
    let oracle = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![
            "--config",
            s.config.to_str().expect("utf-8"),
            "replay",
            "--hold",
            "--partitions",
            "2",
            "--instances",
            "2",
        ];
        args.extend_from_slice(extra);
        args.push(file.to_str().expect("utf-8"));
        let out = util::run(&args, None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("alert"))
            .collect()
    };
    let apart = oracle(&[]);
    let shared = oracle(&["--share-bindings"]);
    let apart_ids: BTreeSet<&str> = apart.iter().filter_map(|a| a["id"].as_str()).collect();
    // The first alert only shared bindings give, in record order.
    let needs: Vec<&serde_json::Value> = shared
        .iter()
        .filter(|a| {
            a["detector"] == "cross_env_reuse"
                && !apart_ids.contains(a["id"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(
        !needs.is_empty(),
        "no alert on this organisation needs another instance's binding: the test proves nothing"
    );
    let line_of = |event_id: &str| {
        records
            .iter()
            .position(|r| r.windows(event_id.len()).any(|w| w == event_id.as_bytes()))
            .expect("the alert's record")
    };
    let (cut, target) = needs
        .iter()
        .map(|a| (line_of(a["event_id"].as_str().expect("event id")), a))
        .min_by_key(|(l, _)| *l)
        .expect("one");
    let target_id = target["id"].as_str().expect("id").to_string();
    eprintln!(
        "{} alerts need another instance's binding; the first, {target_id} ({}), is on record {cut} of {}",
        needs.len(),
        target["identity"],
        records.len()
    );
    let addrs: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut a = s.start("a", &["--metrics-addr", &addrs[0]]);
    let mut b = s.start("b", &["--metrics-addr", &addrs[1]]);
    settled(&mut a, (0, 0));
    settled(&mut b, (0, 0));
    // Both hold one event partition each before anything is produced.
    let one_each = |nw: &Nhiwatch| {
        nw.log()
            .lines()
            .rev()
            .find(|l| l.contains("event partitions assigned"))
            .is_some_and(|l| l.matches("-events\", ").count() == 1)
    };
    let start = std::time::Instant::now();
    while !(one_each(&a) && one_each(&b)) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the two instances did not take one partition each\n== a:\n{}\n== b:\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.produce(&s.input, &records[..cut]);
    // Wait until both instances detected every event of the first phase.
    let events_topic = format!("{}-events", s.group);
    let detected = |addr: &str| {
        let (_, m) = http_get(addr, "/metrics");
        prom::sum(&m, "nhiwatch_detect_events_total", &[])
    };
    let start = std::time::Instant::now();
    let mut last_end = -1;
    let bindings = |name: &str| -> f64 {
        addrs
            .iter()
            .map(|x| prom::sum(&http_get(x, "/metrics").1, name, &[]))
            .sum()
    };
    loop {
        let end: i64 = broker
            .end_offsets(&events_topic, partitions as i32)
            .iter()
            .sum();
        let done: f64 = addrs.iter().map(|x| detected(x)).sum();
        // Every binding published has reached the other instance (an instance's bindings are
        // all of its own partition's identities, which the other merges).
        let (published, received) = (
            bindings("nhiwatch_bindings_published_total"),
            bindings("nhiwatch_bindings_received_total"),
        );
        if end > 0 && end == last_end && done >= end as f64 && received >= published {
            break;
        }
        last_end = end;
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the first phase was not detected ({done} of {end} events) or its bindings did not travel ({received} of {published})\n{}\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(1));
    broker.produce(&s.input, &records[cut..]);
    let want = BTreeSet::from([target_id.clone()]);
    let msgs = read_alerts(&broker, &s, &want);
    let received: f64 = addrs
        .iter()
        .map(|x| {
            let (_, m) = http_get(x, "/metrics");
            prom::sum(&m, "nhiwatch_bindings_received_total", &[])
        })
        .sum();
    let (a_log, b_log) = (a.log(), b.log());
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
    let got = ids(&msgs);
    assert!(
        got.contains(&target_id),
        "the reuse of another instance's credential was not alerted\n== a:\n{a_log}\n== b:\n{b_log}"
    );
    assert!(received > 0.0, "no binding crossed between the instances");
    assert_eq!(msgs.len(), got.len(), "an alert on the topic twice");
    let missed = needs
        .iter()
        .filter(|x| !got.contains(x["id"].as_str().unwrap_or("")))
        .count();
    eprintln!(
        "bindings: {received} received; of {} alerts that need another instance's binding, {missed} missed (streamed at full speed after the cut)",
        needs.len()
    );
}
