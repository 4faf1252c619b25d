//! SQL over the lake with DataFusion: the session with the tables `events`, `alerts` and
//! `baselines`, the read-only rule every entry point applies, and the output formats of
//! `nhiwatch query` and the HTTP endpoint. The PostgreSQL-wire listener is in [`pg`], the HTTP
//! one in [`http`].
//!
//! Tables are DataFusion listing tables over the lake's directories with the schemas of
//! [`crate::lake::schema`], so an empty lake still has every table, and files written or
//! removed after the session started are seen by the next query (the directory is listed per
//! query: DataFusion's own listing cache is off).

pub mod http;
pub mod pg;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::Deserialize;

use crate::lake::Table;
use crate::sink::Secret;

/// `[sql]`: the SQL endpoints for tools (both off by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// `host:port` of the PostgreSQL wire-protocol listener (`psql`, Grafana's PostgreSQL
    /// data source). Off when unset.
    #[serde(default)]
    pub pg_listen: Option<String>,
    /// `host:port` of the HTTP listener serving `POST /query` (JSON, CSV or Arrow IPC).
    /// Off when unset.
    #[serde(default)]
    pub http_listen: Option<String>,
    /// The user name clients log in with.
    #[serde(default = "default_user")]
    pub user: String,
    /// The password (SCRAM-SHA-256 on the PostgreSQL wire; Basic or Bearer over HTTP).
    #[serde(default)]
    pub password: Option<Secret>,
    /// Environment variable holding the password instead of `password`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Most rows one HTTP query returns; more are cut and the response says so.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Bytes the queries of one process may hold at once (hash tables, sorts, aggregates).
    /// Sorts and aggregates spill to a temporary directory beyond it; a query that still
    /// needs more fails with an error naming this key, instead of the process running out
    /// of memory (an endpoint shares it with `run`'s detectors).
    #[serde(default = "default_memory_limit")]
    pub memory_limit: u64,
    /// Most bytes (Arrow, in memory) of one HTTP query's result; more are cut and the
    /// response says so (rows can be wide: `record` holds whole native records).
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: u64,
    /// A query running longer than this is stopped: answered 504 over HTTP, cancelled
    /// with SQLSTATE 57014 over the PostgreSQL wire.
    #[serde(default = "default_query_timeout")]
    pub query_timeout: crate::units::Duration,
    /// PEM file of the server certificate (chain) both listeners present. With `tls_key`,
    /// the listeners accept TLS connections only.
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            pg_listen: None,
            http_listen: None,
            user: default_user(),
            password: None,
            password_env: None,
            max_rows: default_max_rows(),
            memory_limit: default_memory_limit(),
            max_result_bytes: default_max_result_bytes(),
            query_timeout: default_query_timeout(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

fn default_memory_limit() -> u64 {
    2 << 30
}

fn default_max_result_bytes() -> u64 {
    256 << 20
}

fn default_query_timeout() -> crate::units::Duration {
    crate::units::Duration::from_secs(120)
}

/// The smallest `sql.memory_limit`: below it DataFusion cannot run a join of two batches.
pub const MIN_MEMORY_LIMIT: u64 = 16 << 20;

fn default_user() -> String {
    "nhiwatch".into()
}

fn default_max_rows() -> usize {
    1_000_000
}

impl SqlConfig {
    /// True when a listener is configured.
    pub fn enabled(&self) -> bool {
        self.pg_listen.is_some() || self.http_listen.is_some()
    }

    /// Checks the section, naming the key. A listener needs a password: nhiwatch never
    /// serves the lake to anyone who asks.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        let invalid = |key: &str, message: String| crate::error::ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        if self.password.is_some() && self.password_env.is_some() {
            return Err(invalid(
                "sql.password",
                "set either `password` or `password_env`, not both".into(),
            ));
        }
        if self.user.trim().is_empty() {
            return Err(invalid("sql.user", "is empty".into()));
        }
        if self.max_rows == 0 {
            return Err(invalid("sql.max_rows", "must be at least 1".into()));
        }
        if self.max_result_bytes < 1 << 20 {
            return Err(invalid(
                "sql.max_result_bytes",
                format!("{} is too small; at least 1048576", self.max_result_bytes),
            ));
        }
        if self.query_timeout.as_secs() == 0 {
            return Err(invalid("sql.query_timeout", "must be at least 1s".into()));
        }
        if self.memory_limit < MIN_MEMORY_LIMIT {
            return Err(invalid(
                "sql.memory_limit",
                format!(
                    "{} is too small; at least {MIN_MEMORY_LIMIT}",
                    self.memory_limit
                ),
            ));
        }
        if let Some(p) = &self.password {
            check_length("sql.password", &p.0)?;
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(invalid("sql.tls_key", "is needed with tls_cert".into()));
            }
            (None, Some(_)) => {
                return Err(invalid("sql.tls_cert", "is needed with tls_key".into()));
            }
            _ => {}
        }
        if self.enabled() && self.password.is_none() && self.password_env.is_none() {
            let key = if self.pg_listen.is_some() {
                "sql.pg_listen"
            } else {
                "sql.http_listen"
            };
            return Err(invalid(
                key,
                "needs sql.password or sql.password_env (the endpoints never run without one)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The password, read from the environment when `password_env` is set.
    pub fn password(&self) -> Result<String, crate::error::ConfigError> {
        if let Some(p) = &self.password {
            check_length("sql.password", &p.0)?;
            return Ok(p.0.clone());
        }
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => {
                    check_length("sql.password_env", &v)?;
                    Ok(v)
                }
                _ => Err(crate::error::ConfigError::Invalid {
                    key: "sql.password_env".into(),
                    message: format!("environment variable {var} is unset or empty"),
                }),
            };
        }
        Err(crate::error::ConfigError::Invalid {
            key: "sql.password".into(),
            message: "is required".into(),
        })
    }
}

/// The shortest password the SQL endpoints accept: they serve every event and alert, and the
/// HTTP endpoint takes the password as a bearer token.
pub const MIN_PASSWORD_CHARS: usize = 12;

fn check_length(key: &str, password: &str) -> Result<(), crate::error::ConfigError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(crate::error::ConfigError::Invalid {
            key: key.into(),
            message: format!("is {n} characters; at least {MIN_PASSWORD_CHARS}"),
        });
    }
    Ok(())
}

/// A query failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL is not a read (DDL, DML, `COPY`, `SET` …).
    #[error("the lake is read-only: {0}")]
    ReadOnly(String),
    /// The query needed more memory than `sql.memory_limit` allows, after spilling.
    #[error(
        "the query needs more memory than sql.memory_limit ({limit} bytes) allows; \
         filter on day or time, aggregate before collecting lists, or raise the limit: {source}"
    )]
    Memory {
        /// The limit.
        limit: u64,
        /// DataFusion's account of what ran out.
        source: DataFusionError,
    },
    /// It ran longer than `sql.query_timeout`.
    #[error(
        "the query ran longer than sql.query_timeout ({0} s) and was stopped; narrow it by day or time, or raise the limit"
    )]
    Timeout(u64),
    /// DataFusion could not plan or run it.
    #[error("{0}")]
    Sql(#[from] DataFusionError),
    /// Output could not be written.
    #[error("cannot write the result: {0}")]
    Output(String),
    /// An endpoint could not start.
    #[error("sql endpoint: {0}")]
    Setup(String),
}

impl Error {
    /// The metric outcome of this error.
    pub fn outcome(&self) -> &'static str {
        match self {
            Error::ReadOnly(_) => "refused",
            Error::Memory { .. } => "memory_limit",
            Error::Timeout(_) => "timeout",
            _ => "error",
        }
    }
}

/// What one query on an endpoint may return and take (`sql.max_rows`,
/// `sql.max_result_bytes`, `sql.query_timeout`).
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Rows.
    pub max_rows: usize,
    /// Bytes of the result (HTTP: Arrow data in memory; PostgreSQL: the rows as sent).
    pub max_bytes: u64,
    /// Run time, planning included.
    pub timeout: std::time::Duration,
}

/// Why a result was cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// It is whole.
    No,
    /// At `max_rows`.
    Rows,
    /// At `max_result_bytes`.
    Bytes,
}

/// Plans `sql` read-only and collects its result batch by batch, stopping at `max_rows` rows
/// or `max_bytes` bytes of Arrow data (what is over is dropped, and the cut said), or with
/// [`Error::Timeout`] after `timeout`: an endpoint never holds more than it will send.
pub async fn execute_capped(
    ctx: &SessionContext,
    sql: &str,
    max_rows: usize,
    max_bytes: u64,
    timeout: std::time::Duration,
) -> Result<(SchemaRef, Vec<RecordBatch>, Cut), Error> {
    use futures_util::StreamExt;
    let run = async {
        let (df, schema) = plan(ctx, sql, Some(max_rows.saturating_add(1))).await?;
        let mut stream = df.execute_stream().await.map_err(|e| over_memory(ctx, e))?;
        let (mut batches, mut rows, mut bytes) = (Vec::new(), 0usize, 0u64);
        let mut cut = Cut::No;
        while let Some(b) = stream.next().await {
            let b = b.map_err(|e| over_memory(ctx, e))?;
            let size = b.get_array_memory_size() as u64;
            if bytes + size > max_bytes {
                // Keep the rows that fit, in proportion (a batch's rows are alike in width).
                let room = (max_bytes - bytes) as f64 / size.max(1) as f64;
                let n = ((b.num_rows() as f64) * room) as usize;
                if n > 0 {
                    batches.push(b.slice(0, n));
                }
                cut = Cut::Bytes;
                break;
            }
            bytes += size;
            rows += b.num_rows();
            if rows > max_rows {
                let over = rows - max_rows;
                batches.push(b.slice(0, b.num_rows() - over));
                cut = Cut::Rows;
                break;
            }
            batches.push(b);
        }
        Ok::<_, Error>((schema, batches, cut))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(timeout.as_secs())),
    }
}

/// A DataFusion session over the lake at `root` with `events`, `alerts` and `baselines`; its
/// queries together hold at most `memory_limit` bytes (`sql.memory_limit`).
pub async fn session(root: &Path, memory_limit: u64) -> Result<SessionContext, Error> {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("datafusion", "public")
        .with_target_partitions(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        );
    let opts = config.options_mut();
    // Filters evaluated while decoding (late materialization): the investigation queries
    // select few rows of wide tables.
    opts.execution.parquet.pushdown_filters = true;
    opts.execution.parquet.reorder_filters = true;
    // File and row-group statistics prune `time` filters.
    opts.execution.collect_statistics = true;
    // DataFusion keeps a table's file listing for the life of a session by default: an
    // endpoint serving a lake that is being written would never see a file rolled after its
    // first query, and would answer from files retention had removed. Listing a local
    // directory per query costs little; the footer and statistics caches stay (a lake file
    // is never rewritten in place, only added or removed).
    //
    // The memory pool is shared by every query of the session; sorts and aggregates spill to
    // the OS temporary directory when it is full, the rest fail (see [`Error::Memory`]).
    let runtime = RuntimeEnvBuilder::new()
        .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
        .with_memory_limit(usize::try_from(memory_limit).unwrap_or(usize::MAX), 1.0)
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    register(&ctx, root).await?;
    Ok(ctx)
}

/// Registers the lake's tables in `ctx`.
pub async fn register(ctx: &SessionContext, root: &Path) -> Result<(), Error> {
    for table in Table::ALL {
        let dir = root.join(table.name());
        let url = ListingTableUrl::parse(format!("{}/", absolute(&dir).display()))?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(
                table
                    .partitions()
                    .iter()
                    .map(|p| (p.to_string(), DataType::Utf8))
                    .collect(),
            );
        let cfg = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(table.schema());
        let provider = ListingTable::try_new(cfg)?;
        ctx.register_table(table.name(), Arc::new(provider))?;
    }
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// What a read-only entry point accepts: queries (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`,
/// `SHOW`, `DESCRIBE`); never DDL, DML, `COPY` or session changes.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Plans `sql` read-only and runs it to completion.
pub async fn execute(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, Error> {
    let (_, batches) = execute_limited(ctx, sql, None).await?;
    Ok(batches)
}

/// As [`execute`], keeping at most `limit` rows; returns the schema too (an empty result
/// still has columns).
pub async fn execute_limited(
    ctx: &SessionContext,
    sql: &str,
    limit: Option<usize>,
) -> Result<(SchemaRef, Vec<RecordBatch>), Error> {
    let (df, schema) = plan(ctx, sql, limit).await?;
    let batches = df.collect().await.map_err(|e| over_memory(ctx, e))?;
    Ok((schema, batches))
}

/// Plans `sql` read-only, keeping at most `limit` rows; with the result's schema.
async fn plan(
    ctx: &SessionContext,
    sql: &str,
    limit: Option<usize>,
) -> Result<(datafusion::dataframe::DataFrame, SchemaRef), Error> {
    let df = ctx
        .sql_with_options(sql, read_only())
        .await
        .map_err(refusal)?;
    let df = match limit {
        Some(n) => df.limit(0, Some(n))?,
        None => df,
    };
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    Ok((df, schema))
}

/// A query that ran out of the session's memory pool is the analyst's to narrow, not an
/// internal failure: say which limit it hit.
fn over_memory(ctx: &SessionContext, e: DataFusionError) -> Error {
    if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
        let limit = match ctx.runtime_env().memory_pool.memory_limit() {
            datafusion::execution::memory_pool::MemoryLimit::Finite(n) => n as u64,
            _ => u64::MAX,
        };
        Error::Memory { limit, source: e }
    } else {
        Error::Sql(e)
    }
}

/// DataFusion reports a refused DDL/DML/statement as a plan error; say it plainly.
fn refusal(e: DataFusionError) -> Error {
    let msg = e.to_string();
    if msg.contains("not supported")
        && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement"))
    {
        Error::ReadOnly(msg)
    } else {
        Error::Sql(e)
    }
}

/// How a result is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table (for a terminal).
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// JSON, one object per row per line (nulls omitted).
    Json,
    /// A Parquet file (`--output`, or stdout when it is not a terminal).
    Parquet,
    /// Arrow IPC stream.
    Arrow,
}

/// Writes `batches` (with `schema`) to `out` in `format`.
pub fn write(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    out: &mut (impl Write + Send),
) -> Result<(), Error> {
    let e = |e: &dyn std::fmt::Display| Error::Output(e.to_string());
    match format {
        Format::Table => {
            let t = if batches.is_empty() {
                datafusion::arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(
                    schema.clone(),
                )])
            } else {
                datafusion::arrow::util::pretty::pretty_format_batches(batches)
            }
            .map_err(|x| e(&x))?;
            writeln!(out, "{t}").map_err(|x| e(&x))?;
        }
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.6fZ".to_string())
                .build(&mut *out);
            if batches.is_empty() {
                let empty = RecordBatch::new_empty(schema.clone());
                w.write(&flat_for_csv(&empty).map_err(|x| e(&x))?)
                    .map_err(|x| e(&x))?;
            }
            for b in batches {
                w.write(&flat_for_csv(b).map_err(|x| e(&x))?)
                    .map_err(|x| e(&x))?;
            }
        }
        Format::Json => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in batches {
                w.write(b).map_err(|x| e(&x))?;
            }
            w.finish().map_err(|x| e(&x))?;
        }
        Format::Parquet => {
            let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
                &mut *out,
                schema.clone(),
                Some(crate::lake::writer::properties(128 * 1024)),
            )
            .map_err(|x| e(&x))?;
            for b in batches {
                w.write(b).map_err(|x| e(&x))?;
            }
            w.close().map_err(|x| e(&x))?;
        }
        Format::Arrow => {
            let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut *out, schema)
                .map_err(|x| e(&x))?;
            for b in batches {
                w.write(b).map_err(|x| e(&x))?;
            }
            w.finish().map_err(|x| e(&x))?;
        }
    }
    out.flush().map_err(|x| e(&x))
}

/// CSV has no lists: list and struct columns (`scopes`, `array_agg(…)`) are written as their
/// text, `[a, b]`, the way the table format shows them. Other columns are untouched.
fn flat_for_csv(batch: &RecordBatch) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type().is_nested())
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if !f.data_type().is_nested() {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
            continue;
        }
        let fmt = ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default())?;
        let mut b = StringBuilder::with_capacity(c.len(), c.len() * 16);
        for i in 0..c.len() {
            if c.is_null(i) {
                b.append_null();
            } else {
                b.append_value(fmt.value(i).to_string());
            }
        }
        fields.push(Field::new(f.name(), DataType::Utf8, true));
        columns.push(std::sync::Arc::new(b.finish()));
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
}

/// A tokio runtime for DataFusion (one worker per core).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("sql")
        .enable_all()
        .build()
}

/// The SQL endpoints of a process, running on their own runtime until it ends.
pub struct Endpoints {
    /// Where the PostgreSQL listener is bound.
    pub pg: Option<std::net::SocketAddr>,
    /// Where the HTTP listener is bound.
    pub http: Option<std::net::SocketAddr>,
    _rt: tokio::runtime::Runtime,
}

/// Starts the listeners `cfg` sets, over the lake at `root`.
pub fn serve(root: &Path, cfg: &SqlConfig) -> Result<Endpoints, Error> {
    let password = cfg.password().map_err(|e| Error::Setup(e.to_string()))?;
    let rt = runtime().map_err(|e| Error::Setup(e.to_string()))?;
    let ctx = Arc::new(rt.block_on(session(root, cfg.memory_limit))?);
    let caps = Caps {
        max_rows: cfg.max_rows,
        max_bytes: cfg.max_result_bytes,
        timeout: std::time::Duration::from_secs(cfg.query_timeout.as_secs()),
    };
    // A server configuration per listener: each offers its own protocol name (ALPN).
    let tls = |alpn: &[u8]| match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => crate::tls::server_config("sql", cert, key, &[alpn])
            .map(Some)
            .map_err(|e| Error::Setup(e.to_string())),
        _ => Ok(None),
    };
    let mut pg_addr = None;
    if let Some(addr) = &cfg.pg_listen {
        let login = pg::Login {
            user: &cfg.user,
            password: &password,
        };
        let tls = tls(b"postgresql")?;
        pg_addr = Some(rt.block_on(pg::serve(addr, ctx.clone(), login, caps, tls))?);
    }
    let mut http_addr = None;
    if let Some(addr) = &cfg.http_listen {
        http_addr = Some(http::serve(
            addr,
            rt.handle().clone(),
            ctx.clone(),
            http::Auth::new(&cfg.user, &password),
            caps,
            tls(b"http/1.1")?,
        )?);
    }
    Ok(Endpoints {
        pg: pg_addr,
        http: http_addr,
        _rt: rt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SqlConfig {
        toml::from_str(text).expect("sql section")
    }

    #[test]
    fn a_listener_needs_a_password() {
        let err = parse("pg_listen = \"127.0.0.1:5433\"")
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("sql.pg_listen"), "{err}");
        let err = parse("http_listen = \"127.0.0.1:8089\"")
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("sql.http_listen"), "{err}");
        parse("pg_listen = \"127.0.0.1:5433\"\npassword = \"long-enough-pw\"")
            .validate()
            .unwrap();
        parse("").validate().unwrap();
    }

    #[test]
    fn a_certificate_needs_its_key_and_a_key_its_certificate() {
        let pw = "password = \"long-enough-pw\"\n";
        let err = parse(&format!("{pw}tls_cert = \"c.pem\""))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("sql.tls_key"), "{err}");
        let err = parse(&format!("{pw}tls_key = \"k.pem\""))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("sql.tls_cert"), "{err}");
        parse(&format!("{pw}tls_cert = \"c.pem\"\ntls_key = \"k.pem\""))
            .validate()
            .unwrap();
    }

    #[test]
    fn password_and_password_env_are_exclusive_and_env_must_be_set() {
        // Short passwords are refused, without showing them.
        for short in ["", "x", "elevenchars"] {
            let err = parse(&format!("password = \"{short}\"")).validate();
            let err = err.expect_err(short).to_string();
            assert!(
                err.contains("sql.password") && err.contains("at least 12"),
                "{err}"
            );
            assert!(short.is_empty() || !err.contains(short), "{err}");
        }
        parse("password = \"twelve-chars\"").validate().unwrap();
        let both = parse("password = \"x\"\npassword_env = \"Y\"");
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .contains("sql.password")
        );
        let unset = parse("password_env = \"NHIWATCH_TEST_UNSET_PASSWORD_VARIABLE\"");
        unset.validate().unwrap();
        let err = unset.password().unwrap_err().to_string();
        assert!(
            err.contains("NHIWATCH_TEST_UNSET_PASSWORD_VARIABLE"),
            "{err}"
        );
    }

    /// A lake with every table's directory and no rows.
    fn empty_lake() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for t in Table::ALL {
            std::fs::create_dir_all(dir.path().join(t.name())).unwrap();
        }
        dir
    }

    #[test]
    fn the_memory_limit_has_a_floor() {
        let err = parse("memory_limit = 1048576").validate().unwrap_err();
        assert!(err.to_string().contains("sql.memory_limit"), "{err}");
        parse("memory_limit = 16777216").validate().unwrap();
        assert_eq!(SqlConfig::default().memory_limit, 2 << 30);
    }

    /// A query that needs more than the pool is refused with the key to change, and the
    /// session answers the next one: the pool is shared with nothing left held.
    #[test]
    fn a_query_over_the_memory_limit_fails_naming_the_limit_and_the_session_goes_on() {
        let dir = empty_lake();
        let rt = runtime().unwrap();
        rt.block_on(async {
            let ctx = session(dir.path(), MIN_MEMORY_LIMIT).await.unwrap();
            // The hash join's build side (3 million rows) cannot fit in 16 MiB, and a hash
            // join does not spill.
            let err = execute(
                &ctx,
                "SELECT count(*) FROM generate_series(1, 3000000) a \
                 JOIN generate_series(1, 3000000) b ON a.value = b.value",
            )
            .await
            .unwrap_err();
            assert_eq!(err.outcome(), "memory_limit", "{err}");
            let text = err.to_string();
            assert!(text.contains("sql.memory_limit (16777216 bytes)"), "{text}");
            let small = execute(&ctx, "SELECT count(*) AS n FROM generate_series(1, 1000)")
                .await
                .unwrap();
            assert_eq!(small[0].num_rows(), 1);
            let plain = execute(&ctx, "SELECT nope FROM events").await.unwrap_err();
            assert_eq!(plain.outcome(), "error", "{plain}");
        });
    }

    /// Regression: `--format csv` (and HTTP `?format=csv`) failed on any list column, and
    /// most investigation queries have one.
    #[test]
    fn csv_writes_lists_as_text() {
        let rt = runtime().unwrap();
        let dir = empty_lake();
        let (schema, batches) = rt
            .block_on(async {
                let ctx = session(dir.path(), MIN_MEMORY_LIMIT).await?;
                execute_limited(
                    &ctx,
                    "SELECT 'ci:x' AS identity, make_array('read', 'write') AS scopes \
                     UNION ALL SELECT 'ci:y', NULL",
                    None,
                )
                .await
            })
            .unwrap();
        let mut out = Vec::new();
        write(Format::Csv, &schema, &batches, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[1..].sort();
        assert_eq!(
            lines,
            ["identity,scopes", "ci:x,\"[read, write]\"", "ci:y,"]
        );
        let mut out = Vec::new();
        let empty = RecordBatch::new_empty(schema.clone());
        write(Format::Csv, &schema, &[empty], &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap().trim(), "identity,scopes");
    }

    #[test]
    fn a_password_never_shows_in_debug() {
        let c = parse("password = \"hunter2-very-secret\"");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
