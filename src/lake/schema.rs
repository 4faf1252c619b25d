//! The lake's tables as Arrow schemas, and the builders that turn events, alerts and baselines
//! into record batches. One place defines every column, so the writer, the query session and
//! the documentation cannot disagree.
//!
//! Partition columns (`day`, and `source` for events) are directory names, not file columns:
//! `events/day=2026-11-03/source=vault/part-….parquet`. Engines that read hive-style
//! partitions (DataFusion here, DuckDB, Spark, Trino) add them back as columns.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;

use crate::alert::Alert;
use crate::event::Event;
use crate::time::Timestamp;

/// The lake's three tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Canonical events, partitioned by day and source.
    Events,
    /// Alerts, partitioned by the day of their triggering event.
    Alerts,
    /// The per-identity baselines as of the last checkpoint (one file per engine or
    /// partition, replaced whole).
    Baselines,
    /// The inventory (`nhiwatch inventory`): one row per identity with its risk tier,
    /// written with the baselines.
    Identities,
}

impl Table {
    /// The table (and directory) name.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Alerts => "alerts",
            Table::Baselines => "baselines",
            Table::Identities => "identities",
        }
    }

    /// Every table.
    pub const ALL: [Table; 4] = [
        Table::Events,
        Table::Alerts,
        Table::Baselines,
        Table::Identities,
    ];

    /// The columns stored in the files.
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Events => EVENTS.clone(),
            Table::Alerts => ALERTS.clone(),
            Table::Baselines => BASELINES.clone(),
            Table::Identities => IDENTITIES.clone(),
        }
    }

    /// The partition columns (directory levels), outermost first; all strings.
    pub const fn partitions(self) -> &'static [&'static str] {
        match self {
            Table::Events => &["day", "source"],
            Table::Alerts => &["day"],
            Table::Baselines | Table::Identities => &[],
        }
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn s(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn req(name: &str, t: DataType) -> Field {
    Field::new(name, t, false)
}

static EVENTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        req("id", DataType::Utf8),
        req("time", ts()),
        req("kind", DataType::Utf8),
        req("action", DataType::Utf8),
        req("outcome", DataType::Utf8),
        req("identity", DataType::Utf8),
        s("environment"),
        s("runner_kind"),
        s("runner_id"),
        s("runner_group"),
        s("runner_name"),
        s("runner_ip"),
        s("runner_agent"),
        Field::new("scopes", text_list(), true),
        Field::new("ttl", DataType::Int64, true),
        s("credential_kind"),
        s("credential"),
        Field::new("credential_single_use", DataType::Boolean, true),
        s("repo"),
        s("git_ref"),
        Field::new("ref_protected", DataType::Boolean, true),
        s("workflow"),
        s("actor"),
        s("subject"),
        s("trigger"),
        s("namespace"),
        s("account"),
        s("region"),
        s("operation"),
        s("resource"),
        s("bound_to"),
        s("error"),
        s("record"),
    ]))
});

static ALERTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        req("id", DataType::Utf8),
        req("time", ts()),
        req("raised_at", ts()),
        req("detector", DataType::Utf8),
        req("severity", DataType::Utf8),
        req("severity_rank", DataType::Int32),
        req("identity", DataType::Utf8),
        req("event_id", DataType::Utf8),
        req("source", DataType::Utf8),
        req("action", DataType::Utf8),
        s("environment"),
        req("summary", DataType::Utf8),
        req("reason", DataType::Utf8),
        req("evidence", DataType::Utf8),
        s("credential"),
        s("runner_kind"),
        s("runner_id"),
        s("runner_group"),
        s("runner_name"),
        s("runner_ip"),
        s("runner_agent"),
    ]))
});

static BASELINES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        req("identity", DataType::Utf8),
        req("first_seen", ts()),
        req("last_seen", ts()),
        req("events", DataType::Int64),
        req("mints", DataType::Int64),
        req("uses", DataType::Int64),
        req("failures", DataType::Int64),
        Field::new("armed", text_list(), false),
        req("timezone", DataType::Utf8),
        req("usual_hours", DataType::Utf8),
        Field::new("runners", text_list(), false),
        Field::new("networks", text_list(), false),
        Field::new("scopes", text_list(), false),
        req("highest_rank", DataType::Utf8),
        Field::new("environments", text_list(), false),
        req("environment_crossings", DataType::Int64),
        req("longest_ttl", DataType::Int64),
        req("production_mints", DataType::Int64),
        req("production_unprotected_mints", DataType::Int64),
        req("live_credentials", DataType::Int64),
        req("updated_at", ts()),
    ]))
});

static IDENTITIES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        req("tier", DataType::Int64),
        req("identity", DataType::Utf8),
        req("kind", DataType::Utf8),
        req("source", DataType::Utf8),
        req("owner", DataType::Utf8),
        Field::new("environments", text_list(), false),
        req("production", DataType::Boolean),
        req("highest_rank", DataType::Utf8),
        req("scopes", DataType::Int64),
        req("longest_ttl_s", DataType::Int64),
        Field::new("runner_kinds", text_list(), false),
        req("first_seen", ts()),
        req("last_seen", ts()),
        req("days_seen", DataType::Int64),
        req("mints", DataType::Int64),
        req("uses", DataType::Int64),
        req("mints_per_day", DataType::Float64),
        req("uses_per_day", DataType::Float64),
        req("unprotected_production_mints", DataType::Int64),
        req("peer_group", DataType::Utf8),
        req("peer_group_size", DataType::Int64),
        Field::new("reasons", text_list(), false),
        req("updated_at", ts()),
    ]))
});

/// The inventory rows of `engines` as one batch of [`Table::Identities`], as of `now`.
/// (Days idle are left to the query: `now() - last_seen`.)
pub fn identities_batch(
    engines: &[&crate::detect::Engine],
    now: Timestamp,
) -> Result<RecordBatch, ArrowError> {
    use datafusion::arrow::array::Float64Builder;
    let rows = crate::detect::inventory::rows(engines);
    let mut text: [StringBuilder; 6] = std::array::from_fn(|_| StringBuilder::new());
    let mut ints: [Int64Builder; 8] = std::array::from_fn(|_| Int64Builder::new());
    let mut floats: [Float64Builder; 2] = std::array::from_fn(|_| Float64Builder::new());
    let mut times: [TimestampMicrosecondBuilder; 3] =
        std::array::from_fn(|_| TimestampMicrosecondBuilder::new().with_timezone("UTC"));
    let mut lists: [ListBuilder<StringBuilder>; 3] =
        std::array::from_fn(|_| ListBuilder::new(StringBuilder::new()));
    let mut production = BooleanBuilder::new();
    for r in &rows {
        for (b, v) in text.iter_mut().zip([
            &r.identity,
            &r.kind,
            &r.source,
            &r.owner,
            &r.highest_rank,
            &r.peer_group,
        ]) {
            b.append_value(v);
        }
        for (b, v) in ints.iter_mut().zip([
            i64::from(r.tier),
            i64::try_from(r.scopes).unwrap_or(i64::MAX),
            i64::from(r.longest_ttl_s),
            i64::from(r.days_seen),
            i64::from(r.mints),
            i64::from(r.uses),
            i64::from(r.unprotected_production_mints),
            i64::from(r.peer_group_size),
        ]) {
            b.append_value(v);
        }
        floats[0].append_value(r.mints_per_day);
        floats[1].append_value(r.uses_per_day);
        times[0].append_value(r.first_seen.as_micros());
        times[1].append_value(r.last_seen.as_micros());
        times[2].append_value(now.as_micros());
        list(&mut lists[0], &r.environments);
        list(&mut lists[1], &r.runner_kinds);
        list(&mut lists[2], &r.reasons);
        production.append_value(r.production);
    }
    let [identity, kind, source, owner, rank, peer] =
        text.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [tier, scopes, ttl, days, mints, uses, unprot, peers] =
        ints.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [mpd, upd] = floats.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [first, last, updated] = times.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [envs, runners, reasons] = lists.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    RecordBatch::try_new(
        Table::Identities.schema(),
        vec![
            tier,
            identity,
            kind,
            source,
            owner,
            envs,
            Arc::new(production.finish()),
            rank,
            scopes,
            ttl,
            runners,
            first,
            last,
            days,
            mints,
            uses,
            mpd,
            upd,
            unprot,
            peer,
            peers,
            reasons,
            updated,
        ],
    )
}

/// The tables replaced whole at each checkpoint (`baselines` and `identities`) for one
/// engine, as of `now`.
pub fn state_tables(
    engine: &crate::detect::Engine,
    now: Timestamp,
) -> Result<[(Table, RecordBatch); 2], super::Error> {
    let format = |table: Table| {
        move |e: ArrowError| super::Error::Format {
            path: table.name().into(),
            message: e.to_string(),
        }
    };
    Ok([
        (
            Table::Baselines,
            baselines_batch(&[engine], now).map_err(format(Table::Baselines))?,
        ),
        (
            Table::Identities,
            identities_batch(&[engine], now).map_err(format(Table::Identities))?,
        ),
    ])
}

/// The `day=` partition value of a time: `YYYY-MM-DD` (UTC).
pub fn day_of(t: Timestamp) -> String {
    let (y, m, d, ..) = t.to_civil();
    format!("{y:04}-{m:02}-{d:02}")
}

fn list(b: &mut ListBuilder<StringBuilder>, items: impl IntoIterator<Item = impl AsRef<str>>) {
    for i in items {
        b.values().append_value(i.as_ref());
    }
    b.append(true);
}

/// Accumulates events (of one partition) into a record batch.
pub struct EventRows {
    secrets: fn(&str) -> std::borrow::Cow<'_, str>,
    id: StringBuilder,
    time: TimestampMicrosecondBuilder,
    kind: StringBuilder,
    action: StringBuilder,
    outcome: StringBuilder,
    identity: StringBuilder,
    environment: StringBuilder,
    runner: [StringBuilder; 6],
    scopes: ListBuilder<StringBuilder>,
    ttl: Int64Builder,
    credential_kind: StringBuilder,
    credential: StringBuilder,
    single_use: BooleanBuilder,
    repo: StringBuilder,
    git_ref: StringBuilder,
    ref_protected: BooleanBuilder,
    context: [StringBuilder; 11],
    record: StringBuilder,
    rows: usize,
}

impl EventRows {
    /// Empty rows; `mask` removes secrets from a native record before it is stored.
    pub fn new(mask: fn(&str) -> std::borrow::Cow<'_, str>) -> Self {
        EventRows {
            secrets: mask,
            id: StringBuilder::new(),
            time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            kind: StringBuilder::new(),
            action: StringBuilder::new(),
            outcome: StringBuilder::new(),
            identity: StringBuilder::new(),
            environment: StringBuilder::new(),
            runner: std::array::from_fn(|_| StringBuilder::new()),
            scopes: ListBuilder::new(StringBuilder::new()),
            ttl: Int64Builder::new(),
            credential_kind: StringBuilder::new(),
            credential: StringBuilder::new(),
            single_use: BooleanBuilder::new(),
            repo: StringBuilder::new(),
            git_ref: StringBuilder::new(),
            ref_protected: BooleanBuilder::new(),
            context: std::array::from_fn(|_| StringBuilder::new()),
            record: StringBuilder::new(),
            rows: 0,
        }
    }

    /// Rows appended since the last [`EventRows::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no row is pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one event.
    pub fn push(&mut self, e: &Event) {
        self.rows += 1;
        self.id.append_value(&e.id);
        self.time.append_value(e.time.as_micros());
        self.kind.append_value(&e.kind);
        self.action.append_value(e.action.as_str());
        self.outcome.append_value(match e.outcome {
            crate::event::Outcome::Success => "success",
            crate::event::Outcome::Failure => "failure",
        });
        self.identity.append_value(&e.identity);
        self.environment.append_option(e.environment.as_deref());
        let r = &e.runner;
        self.runner[0].append_option(r.kind.map(|k| k.as_str()));
        for (b, v) in self.runner[1..]
            .iter_mut()
            .zip([&r.id, &r.group, &r.name, &r.ip, &r.agent])
        {
            b.append_option(v.as_deref());
        }
        list(&mut self.scopes, &e.scopes);
        self.ttl
            .append_option(e.ttl.map(|t| i64::try_from(t).unwrap_or(i64::MAX)));
        let c = e.credential.as_ref();
        self.credential_kind
            .append_option(c.map(|c| c.kind.as_str()));
        self.credential.append_option(c.map(|c| c.fp.as_str()));
        self.single_use.append_option(c.map(|c| c.single_use));
        let x = &e.context;
        self.repo.append_option(x.repo.as_deref());
        self.git_ref.append_option(x.git_ref.as_deref());
        self.ref_protected.append_option(x.ref_protected);
        for (b, v) in self.context.iter_mut().zip([
            &x.workflow,
            &x.actor,
            &x.subject,
            &x.trigger,
            &x.namespace,
            &x.account,
            &x.region,
            &x.operation,
            &x.resource,
            &x.bound_to,
            &x.error,
        ]) {
            b.append_option(v.as_deref());
        }
        self.record
            .append_option(e.record.as_deref().map(|r| (self.secrets)(r)));
    }

    /// The pending rows as a batch of [`Table::Events`]; the builders start over.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.action.finish()),
            Arc::new(self.outcome.finish()),
            Arc::new(self.identity.finish()),
            Arc::new(self.environment.finish()),
        ];
        cols.extend(
            self.runner
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        cols.push(Arc::new(self.scopes.finish()));
        cols.push(Arc::new(self.ttl.finish()));
        cols.push(Arc::new(self.credential_kind.finish()));
        cols.push(Arc::new(self.credential.finish()));
        cols.push(Arc::new(self.single_use.finish()));
        cols.push(Arc::new(self.repo.finish()));
        cols.push(Arc::new(self.git_ref.finish()));
        cols.push(Arc::new(self.ref_protected.finish()));
        cols.extend(
            self.context
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        cols.push(Arc::new(self.record.finish()));
        RecordBatch::try_new(Table::Events.schema(), cols)
    }
}

/// Accumulates alerts into a record batch.
pub struct AlertRows {
    text: [StringBuilder; 18],
    time: TimestampMicrosecondBuilder,
    raised: TimestampMicrosecondBuilder,
    rank: Int32Builder,
    rows: usize,
}

impl Default for AlertRows {
    fn default() -> Self {
        AlertRows {
            text: std::array::from_fn(|_| StringBuilder::new()),
            time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            raised: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            rank: Int32Builder::new(),
            rows: 0,
        }
    }
}

impl AlertRows {
    /// Rows pending.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no row is pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one alert, raised at `raised` (wall time).
    pub fn push(&mut self, a: &Alert, raised: Timestamp) {
        self.rows += 1;
        self.time.append_value(a.event_time.as_micros());
        self.raised.append_value(raised.as_micros());
        self.rank.append_value(a.severity as i32);
        let evidence = serde_json::Value::Object(a.evidence.clone()).to_string();
        let r = &a.runner;
        let values: [Option<&str>; 18] = [
            Some(&a.id),
            Some(&a.detector),
            Some(a.severity.as_str()),
            Some(&a.identity),
            Some(&a.event_id),
            Some(a.source.as_str()),
            Some(a.action.as_str()),
            a.environment.as_deref(),
            Some(&a.summary),
            Some(&a.reason),
            Some(&evidence),
            a.credential.as_deref(),
            r.kind.map(|k| k.as_str()),
            r.id.as_deref(),
            r.group.as_deref(),
            r.name.as_deref(),
            r.ip.as_deref(),
            r.agent.as_deref(),
        ];
        for (b, v) in self.text.iter_mut().zip(values) {
            b.append_option(v);
        }
    }

    /// The pending rows as a batch of [`Table::Alerts`].
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        let mut t: Vec<ArrayRef> = self
            .text
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        // Column order of ALERTS: id, time, raised_at, detector, severity, severity_rank, …
        let rest = t.split_off(3);
        let mut cols = vec![t[0].clone()];
        cols.push(Arc::new(self.time.finish()));
        cols.push(Arc::new(self.raised.finish()));
        cols.push(t[1].clone());
        cols.push(t[2].clone());
        cols.push(Arc::new(self.rank.finish()));
        cols.extend(rest);
        RecordBatch::try_new(Table::Alerts.schema(), cols)
    }
}

/// The baselines of `engines` as one batch of [`Table::Baselines`], as of `now`.
pub fn baselines_batch(
    engines: &[&crate::detect::Engine],
    now: Timestamp,
) -> Result<RecordBatch, ArrowError> {
    let mut text: [StringBuilder; 4] = std::array::from_fn(|_| StringBuilder::new());
    let mut times: [TimestampMicrosecondBuilder; 3] =
        std::array::from_fn(|_| TimestampMicrosecondBuilder::new().with_timezone("UTC"));
    let mut ints: [Int64Builder; 9] = std::array::from_fn(|_| Int64Builder::new());
    let mut lists: [ListBuilder<StringBuilder>; 5] =
        std::array::from_fn(|_| ListBuilder::new(StringBuilder::new()));
    for engine in engines {
        for r in crate::detect::report::all(engine) {
            text[0].append_value(&r.identity);
            text[1].append_value(&r.timezone);
            text[2].append_value(&r.usual_hours);
            text[3].append_value(r.highest_rank);
            times[0].append_value(r.first_seen.as_micros());
            times[1].append_value(r.last_seen.as_micros());
            times[2].append_value(now.as_micros());
            let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
            for (b, v) in ints.iter_mut().zip([
                i64::from(r.events),
                i64::from(r.mints),
                i64::from(r.uses),
                i64::from(r.failures),
                n(r.environment_crossings),
                i64::from(r.longest_ttl),
                i64::from(r.production_mints.0),
                i64::from(r.production_mints.1),
                n(r.live_credentials),
            ]) {
                b.append_value(v);
            }
            list(&mut lists[0], &r.armed);
            let values = |v: &[crate::detect::report::Value], with_kind: bool| {
                v.iter()
                    .map(|x| {
                        if with_kind {
                            format!("{}={}", x.kind, x.value)
                        } else {
                            x.value.clone()
                        }
                    })
                    .collect::<Vec<_>>()
            };
            list(&mut lists[1], values(&r.runners, true));
            list(&mut lists[2], values(&r.networks, false));
            list(&mut lists[3], values(&r.scopes, false));
            list(&mut lists[4], values(&r.environments, false));
        }
    }
    let [identity, timezone, usual, highest] = text.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [first, last, updated] = times.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [
        events,
        mints,
        uses,
        failures,
        crossings,
        ttl,
        prod,
        unprot,
        live,
    ] = ints.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let [armed, runners, networks, scopes, envs] =
        lists.map(|mut b| Arc::new(b.finish()) as ArrayRef);
    RecordBatch::try_new(
        Table::Baselines.schema(),
        vec![
            identity, first, last, events, mints, uses, failures, armed, timezone, usual, runners,
            networks, scopes, highest, envs, crossings, ttl, prod, unprot, live, updated,
        ],
    )
}
