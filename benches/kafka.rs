//! `nhiwatch run` over a real broker, beside a plain librdkafka consumer of the same topic.
//! Not a criterion bench: it drives processes and a broker. `scripts/bench-kafka` starts a
//! broker (or uses `KAFKA_BOOTSTRAP`), simulates the input and runs it:
//!
//! 1. produce the records to a one-partition topic (producer rate);
//! 2. **raw**: a minimal rdkafka consumer reads the topic from the beginning (records/s from
//!    its first record to its last);
//! 3. **nhiwatch**: `nhiwatch run` on the same topic, from its first processed record until its
//!    detect stage has committed every event (records/s);
//! 4. **latency**: the records again, to a new topic at a fixed rate with `nhiwatch run`
//!    already consuming it and the naive `first_seen` detector on (it alerts often, so there
//!    are many samples); latency = alert's Kafka timestamp − its input record's timestamp.
//!
//! Settings from the environment: `KAFKA_BOOTSTRAP` (required), `BENCH_INPUT` (JSON lines,
//! required), `NHIWATCH_BIN` (default `target/release/nhiwatch`), `BENCH_PARTITIONS`
//! (internal topics, default 1), `BENCH_RATE` (records/s for the latency phase, default
//! 2000), `BENCH_REPARTITION` (`false`: direct mode), `BENCH_LATENCY_RECORDS` (default 20000), `BENCH_CONSUMER_OPTIONS` (`name=value,…` for nhiwatch's consumers),
//! `BENCH_INSTANCES` (processes of `nhiwatch run` in the group, default 1),
//! `BENCH_INPUT_PARTITIONS` (of the input topic, default 1: ingest runs on one instance),
//! `BENCH_SHARE_CONTEXT` (`kafka.share_context`, default true).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Headers as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

fn env(name: &str, default: Option<&str>) -> String {
    std::env::var(name)
        .ok()
        .or(default.map(str::to_string))
        .unwrap_or_else(|| panic!("{name} is required (see scripts/bench-kafka)"))
}

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

fn create(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap).create().expect("admin");
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for r in
        futures_executor::block_on(admin.create_topics([&t], &AdminOptions::new())).expect("create")
    {
        r.expect("topic");
    }
}

fn producer(bootstrap: &str) -> BaseProducer {
    config(bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, topic: &str, partition: i32, value: &[u8]) {
    let mut rec = BaseRecord::<(), [u8]>::to(topic)
        .partition(partition)
        .payload(value);
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((_, back)) => {
                rec = back;
                p.poll(Duration::from_millis(5));
            }
        }
    }
}

fn spawn(
    bin: &str,
    cfg: &std::path::Path,
) -> (Child, std::sync::mpsc::Receiver<(Instant, String)>) {
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(cfg)
        .arg("run")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nhiwatch");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    (child, rx)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Sum of the committed offsets of `group` on `topic` (all partitions).
fn committed(c: &BaseConsumer, topic: &str, partitions: i32) -> i64 {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let _ = tpl.add_partition(topic, p);
    }
    match c.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(t) => t
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum(),
        Err(_) => 0,
    }
}

fn write_config(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, body).expect("config");
    p
}

fn pct(v: &mut [i64], q: f64) -> i64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bootstrap = env("KAFKA_BOOTSTRAP", None);
    let input = env("BENCH_INPUT", None);
    let bin = env("NHIWATCH_BIN", Some("target/release/nhiwatch"));
    let partitions: i32 = env("BENCH_PARTITIONS", Some("1"))
        .parse()
        .expect("partitions");
    let rate: u64 = env("BENCH_RATE", Some("2000")).parse().expect("rate");
    let lat_n: usize = env("BENCH_LATENCY_RECORDS", Some("20000"))
        .parse()
        .expect("n");
    let org = std::env::var("BENCH_ORG_CONFIG").unwrap_or_default();
    let mut org = if org.is_empty() {
        String::new()
    } else {
        std::fs::read_to_string(&org).expect("org config")
    };
    // Direct mode (no repartition hop) when BENCH_REPARTITION=false.
    let direct = std::env::var("BENCH_REPARTITION").is_ok_and(|v| v == "false");
    let repartition_line = if direct { "repartition = false\n" } else { "" };
    // Extra consumer properties for nhiwatch, `name=value,…` (e.g. fetch.wait.max.ms=50).
    if let Ok(opts) = std::env::var("BENCH_CONSUMER_OPTIONS")
        && !opts.is_empty()
    {
        org.push_str("\n[kafka.consumer_options]\n");
        for kv in opts.split(',') {
            let (k, v) = kv.split_once('=').expect("name=value");
            org.push_str(&format!("{k:?} = {v:?}\n"));
        }
    }
    // Instances of `nhiwatch run` sharing the work, partitions of the input topic (ingest
    // scales with them), and whether an instance's partitions judge together.
    let instances: usize = env("BENCH_INSTANCES", Some("1"))
        .parse()
        .expect("instances");
    let input_partitions: i32 = env("BENCH_INPUT_PARTITIONS", Some("1"))
        .parse()
        .expect("input partitions");
    let share = env("BENCH_SHARE_CONTEXT", Some("true"));
    let records: Vec<Vec<u8>> = BufReader::new(std::fs::File::open(&input).expect("input"))
        .split(b'\n')
        .map_while(Result::ok)
        .filter(|l| !l.is_empty())
        .collect();
    let n = records.len();
    let bytes: usize = records.iter().map(Vec::len).sum();
    // How many events the records hold (a CloudTrail delivery file holds several; a bad
    // record none): the detect stage is done when it has committed that many.
    let events_expected = {
        let mut cfg = nhiwatch::config::Config::default();
        cfg.fingerprint.key = std::env::var("NHIWATCH_FINGERPRINT_KEY").ok();
        let d = cfg
            .decoder(nhiwatch::decode::Format::Auto)
            .expect("decoder");
        let mut out = Vec::new();
        records.iter().for_each(|r| {
            d.decode(r, &mut out);
        });
        out.iter().filter(|r| r.is_ok()).count() as i64
    };
    let tag = std::process::id();
    let dir = tempfile::tempdir().expect("tempdir");

    // 1. Produce.
    let topic = format!("bench-in-{tag}");
    create(&bootstrap, &topic, input_partitions);
    let p = producer(&bootstrap);
    let t = Instant::now();
    for (i, r) in records.iter().enumerate() {
        // Runs of 100 records per partition: an identity's records stay mostly in order.
        send(&p, &topic, (i / 100) as i32 % input_partitions, r);
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(300)).expect("flush");
    let produce = t.elapsed();
    println!(
        "input: {n} records, {:.1} MB; produced in {:.2} s ({:.0} records/s)",
        bytes as f64 / 1e6,
        produce.as_secs_f64(),
        n as f64 / produce.as_secs_f64()
    );

    // 2. Raw consumer.
    let c: BaseConsumer = config(&bootstrap)
        .set("group.id", format!("bench-raw-{tag}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for q in 0..input_partitions {
        tpl.add_partition_offset(&topic, q, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut got = 0usize;
    let mut first = None;
    let mut sink = 0u64;
    while got < n {
        if let Some(Ok(m)) = c.poll(Duration::from_secs(10)) {
            first.get_or_insert_with(Instant::now);
            sink = sink.wrapping_add(m.payload().map_or(0, |v| v.len() as u64));
            got += 1;
        }
    }
    let raw = first.map_or(Duration::ZERO, |f| f.elapsed());
    let raw_rate = n as f64 / raw.as_secs_f64();
    println!(
        "raw rdkafka consumer: {n} records in {:.2} s = {raw_rate:.0} records/s ({sink} bytes)",
        raw.as_secs_f64()
    );

    // 3. nhiwatch run on the same topic.
    let group = format!("bench-{tag}");
    let cfg = write_config(
        dir.path(),
        "run",
        &format!(
            "{org}\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"{group}\"\npartitions = {partitions}\nshare_context = {share}\n{repartition_line}alerts_topic = \"{group}-alerts\"\n[[kafka.topics]]\nname = \"{topic}\"\n[run]\ncheckpoint_interval = \"5s\"\n"
        ),
    );
    let meta: BaseConsumer = config(&bootstrap)
        .set(
            "group.id",
            if direct {
                group.clone()
            } else {
                format!("{group}-detect")
            },
        )
        .create()
        .expect("meta");
    let ingest_meta: BaseConsumer = config(&bootstrap)
        .set("group.id", group.clone())
        .create()
        .expect("meta");
    let spawned: Vec<_> = (0..instances).map(|_| spawn(&bin, &cfg)).collect();
    let (events_topic, detect_group_topic_parts) = if direct {
        (topic.clone(), 1)
    } else {
        (format!("{group}-events"), partitions)
    };
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut ingest_done = false;
    let done = loop {
        for (_, lines) in &spawned {
            for (at, line) in lines.try_iter() {
                if (line.contains("partition starts empty") || line.contains("state restored"))
                    && started.is_none_or(|s| at < s)
                {
                    started = Some(at);
                }
            }
        }
        if !direct && !ingest_done && committed(&ingest_meta, &topic, input_partitions) >= n as i64
        {
            ingest_done = true;
            if let Some(s) = started {
                println!(
                    "  ingest stage committed every input record {:.2} s after detection began",
                    s.elapsed().as_secs_f64()
                );
            }
        }
        let target = if direct { n as i64 } else { events_expected };
        if committed(&meta, &events_topic, detect_group_topic_parts) >= target {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "nhiwatch did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    for (child, _) in spawned {
        stop(child);
    }
    let took = done - started.expect("nhiwatch processed nothing");
    let nw_rate = n as f64 / took.as_secs_f64();
    println!(
        "nhiwatch run ({}): {n} records in {:.2} s = {nw_rate:.0} records/s ({} events, {partitions} partition(s), {instances} instance(s), {input_partitions} input partition(s), share_context = {share}); ratio to raw: {:.2}",
        if direct { "direct" } else { "repartitioned" },
        took.as_secs_f64(),
        events_expected,
        nw_rate / raw_rate
    );

    // 4. Latency at a fixed rate.
    let topic2 = format!("bench-lat-{tag}");
    create(&bootstrap, &topic2, 1);
    let group2 = format!("bench-lat-{tag}");
    let alerts2 = format!("{group2}-alerts");
    // The naive rule with no learning period alerts on every first sighting: many samples.
    let det = dir.path().join("detectors");
    std::fs::create_dir_all(&det).expect("dir");
    let spec = std::fs::read_to_string("detectors/first_seen.toml")
        .expect("detectors/first_seen.toml (run from the repository)")
        .replace("min_days = 7.0", "min_days = 0.0");
    std::fs::write(det.join("first_seen.toml"), spec).expect("spec");
    let cfg2 = write_config(
        dir.path(),
        "lat",
        &format!(
            "{org}\n[detectors]\ndir = \"{}\"\nenabled = [\"first_seen\"]\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"{group2}\"\npartitions = {partitions}\n{repartition_line}alerts_topic = \"{alerts2}\"\n[[kafka.topics]]\nname = \"{topic2}\"\n[run]\ncheckpoint_interval = \"5s\"\n",
            det.display()
        ),
    );
    let (child, lines) = spawn(&bin, &cfg2);
    let t = Instant::now();
    loop {
        if lines
            .try_iter()
            .any(|(_, l)| l.contains("partitions assigned"))
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "nhiwatch did not join"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let ac: BaseConsumer = config(&bootstrap)
        .set("group.id", format!("bench-alerts-{tag}"))
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&alerts2, p, Offset::Beginning)
            .expect("tpl");
    }
    ac.assign(&tpl).expect("assign");
    let m = lat_n.min(n);
    let start = Instant::now();
    for (i, r) in records.iter().take(m).enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        while Instant::now() < due {
            p.poll(Duration::ZERO);
            let _ = ac.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_micros(200));
        }
        send(&p, &topic2, 0, r);
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    let mut lat = Vec::new();
    let quiet = Duration::from_secs(5);
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        if let Some(Ok(msg)) = ac.poll(Duration::from_millis(200)) {
            last = Instant::now();
            let input = msg.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == "nhiwatch-input-time")
                    .and_then(|x| x.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<i64>().ok())
            });
            if let (Some(i), Some(a)) = (input, msg.timestamp().to_millis()) {
                lat.push(a - i);
            }
        }
    }
    stop(child);
    let k = lat.len();
    let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
    println!(
        "latency at {rate} records/s ({m} records, {k} alerts, first_seen): p50 {p50} ms, p99 {p99} ms, max {max} ms"
    );
}
