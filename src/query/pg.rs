//! The PostgreSQL wire-protocol endpoint (`sql.pg_listen`): `psql`, Grafana's PostgreSQL data
//! source and other clients run the same SQL as `nhiwatch query`.
//!
//! Built on datafusion-postgres (its statement handling, `pg_catalog` emulation and type
//! mapping) with two things of ours: login by SCRAM-SHA-256 against `sql.user` /
//! `sql.password` (datafusion-postgres' own server has no password check), and a hook that
//! refuses every statement that is not a read, before it is planned. Every query is bounded
//! in time and size (`sql.query_timeout`, `sql.max_rows`, `sql.max_result_bytes`) by a layer
//! around the library's handlers, and with `sql.tls_cert` only TLS connections are served.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{Response, SendableRowStream};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::telemetry::metrics;

/// The salted password clients prove they know.
struct Credentials {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({})", self.user)
    }
}

#[async_trait]
impl AuthSource for Credentials {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if login.user() != Some(self.user.as_str()) {
            metrics::get().query_done("postgres", "refused", 0.0);
            tracing::warn!(
                user = login.user().unwrap_or(""),
                "sql login refused: unknown user"
            );
            return Err(PgWireError::InvalidPassword(
                login.user().unwrap_or_default().to_string(),
            ));
        }
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

/// Refuses whatever is not a read: DDL, DML, `COPY`, an `EXPLAIN` of any of them, a change to
/// the DataFusion settings (the operator's, from the configuration), and anything else
/// outside the list. Session
/// chatter clients send (`SET`, `SHOW`, transactions, cursors) passes to the hooks after this
/// one; a statement that arrives with a plan has its plan checked too.
#[derive(Debug)]
struct ReadOnly;

fn allowed(s: &Statement) -> bool {
    match s {
        // `EXPLAIN ANALYZE` runs its statement: only a read may be explained.
        Statement::Explain { statement, .. } => matches!(**statement, Statement::Query(_)),
        // The DataFusion settings (the memory limit, …) are the operator's, set in the
        // configuration, though each connection has its own session. Clients' own parameters
        // (`application_name`, `client_encoding`, …) go to the SET/SHOW hook.
        Statement::Set(_) => !s.to_string().to_ascii_lowercase().contains("datafusion."),
        _ => chatter_or_read(s),
    }
}

fn chatter_or_read(s: &Statement) -> bool {
    matches!(
        s,
        Statement::Query(_)
            | Statement::ExplainTable { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::ShowSchemas { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
    )
}

fn refuse(s: &Statement) -> PgWireError {
    metrics::get().query_done("postgres", "refused", 0.0);
    let text = s.to_string();
    let head: String = text.chars().take(40).collect();
    tracing::warn!(statement = %head, "sql statement refused: the lake is read-only");
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        // read_only_sql_transaction
        "25006".into(),
        format!("the lake is read-only: {head} is not a query"),
    )))
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        (!allowed(statement)).then(|| Err(refuse(statement)))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        (!allowed(statement)).then(|| Err(refuse(statement)))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        // Statements (SET, transactions) were screened above; the plan must not write.
        let writes = datafusion::execution::context::SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false);
        if !allowed(statement) || writes.verify_plan(plan).is_err() {
            return Some(Err(refuse(statement)));
        }
        None
    }
}

/// An error the client shows as PostgreSQL's own.
fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.into(),
        code.into(),
        message,
    )))
}

/// The library's query handlers with every query bounded: planning within
/// `sql.query_timeout`, and its rows stopped with an error once the run passes the timeout or
/// the rows pass `sql.max_rows` or `sql.max_result_bytes` (the stream, and the DataFusion
/// tasks behind it, dropped). Each query is counted in `nhiwatch_query_requests_total`.
struct Bounded {
    inner: Arc<DfSessionService>,
    caps: super::Caps,
}

impl Bounded {
    /// Runs `planned` (the library's handler, up to a response) within the time left.
    async fn plan<T>(
        &self,
        started: Instant,
        planned: impl Future<Output = PgWireResult<T>>,
    ) -> PgWireResult<T> {
        match tokio::time::timeout(self.caps.timeout, planned).await {
            Err(_) => {
                let secs = started.elapsed().as_secs_f64();
                metrics::get().query_done("postgres", "timeout", secs);
                Err(timed_out(self.caps))
            }
            Ok(Err(e)) => {
                // Refusals were counted where they were made.
                if !is_refusal(&e) {
                    let secs = started.elapsed().as_secs_f64();
                    metrics::get().query_done("postgres", "error", secs);
                }
                Err(e)
            }
            Ok(Ok(r)) => Ok(r),
        }
    }

    fn bound(&self, response: Response, started: Instant) -> Response {
        match response {
            Response::Query(mut q) => {
                let rows =
                    std::mem::replace(&mut q.data_rows, Box::pin(futures_util::stream::empty()));
                q.data_rows = Box::pin(Capped::new(rows, self.caps, started));
                Response::Query(q)
            }
            other => other,
        }
    }
}

fn is_refusal(e: &PgWireError) -> bool {
    match e {
        PgWireError::UserError(info) => info.code == "25006",
        PgWireError::InvalidPassword(_) => true,
        _ => false,
    }
}

fn timed_out(caps: super::Caps) -> PgWireError {
    user_error(
        "ERROR",
        // query_canceled
        "57014",
        format!(
            "canceling statement: it ran longer than sql.query_timeout ({} s)",
            caps.timeout.as_secs()
        ),
    )
}

/// A query's rows, stopped at the deadline or a cap.
struct Capped {
    rows: Option<SendableRowStream>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    caps: super::Caps,
    started: Instant,
    sent_rows: usize,
    sent_bytes: u64,
}

impl Capped {
    fn new(rows: SendableRowStream, caps: super::Caps, started: Instant) -> Self {
        let deadline = tokio::time::Instant::from_std(started + caps.timeout);
        Capped {
            rows: Some(rows),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            caps,
            started,
            sent_rows: 0,
            sent_bytes: 0,
        }
    }

    /// Ends the query: counted once, the rows (and the work behind them) dropped.
    fn end(&mut self, outcome: &str) {
        self.rows = None;
        metrics::get().query_done("postgres", outcome, self.started.elapsed().as_secs_f64());
    }
}

impl futures_util::Stream for Capped {
    type Item = PgWireResult<pgwire::messages::data::DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(rows) = this.rows.as_mut() else {
            return Poll::Ready(None);
        };
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.end("timeout");
            return Poll::Ready(Some(Err(timed_out(this.caps))));
        }
        match rows.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.end("ok");
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.end("error");
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(row))) => {
                this.sent_rows += 1;
                this.sent_bytes += row.data.len() as u64;
                let over = if this.sent_rows > this.caps.max_rows {
                    Some(format!(
                        "more than sql.max_rows ({}) rows",
                        this.caps.max_rows
                    ))
                } else if this.sent_bytes > this.caps.max_bytes {
                    Some(format!(
                        "more than sql.max_result_bytes ({} bytes)",
                        this.caps.max_bytes
                    ))
                } else {
                    None
                };
                match over {
                    None => Poll::Ready(Some(Ok(row))),
                    Some(what) => {
                        this.end("too_large");
                        tracing::warn!("sql query stopped: its result has {what}");
                        Poll::Ready(Some(Err(user_error(
                            "ERROR",
                            // program_limit_exceeded
                            "54000",
                            format!("the result has {what}; add a LIMIT, filter or aggregate"),
                        ))))
                    }
                }
            }
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Bounded {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures_util::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: fmt::Debug,
        PgWireError: From<<C as futures_util::Sink<PgWireBackendMessage>>::Error>,
    {
        let started = Instant::now();
        let responses = self
            .plan(
                started,
                SimpleQueryHandler::do_query(&*self.inner, client, query),
            )
            .await?;
        Ok(responses
            .into_iter()
            .map(|r| self.bound(r, started))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Bounded {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.inner.query_parser()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures_util::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: fmt::Debug,
        PgWireError: From<<C as futures_util::Sink<PgWireBackendMessage>>::Error>,
    {
        let started = Instant::now();
        let response = self
            .plan(
                started,
                ExtendedQueryHandler::do_query(&*self.inner, client, portal, max_rows),
            )
            .await?;
        Ok(self.bound(response, started))
    }
}

/// Refuses a connection in the clear when the endpoint has a certificate (as PostgreSQL's
/// `hostssl` does), before any credential is exchanged; then SCRAM.
struct Startup {
    scram: SASLAuthStartupHandler<DefaultServerParameterProvider>,
    tls_only: bool,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + futures_util::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: fmt::Debug,
        PgWireError: From<<C as futures_util::Sink<PgWireBackendMessage>>::Error>,
    {
        if self.tls_only && !client.is_secure() {
            metrics::get().query_done("postgres", "refused", 0.0);
            tracing::warn!(peer = %client.socket_addr(), "sql connection refused: not TLS");
            return Err(user_error(
                "FATAL",
                // invalid_authorization_specification, as PostgreSQL answers without hostssl
                "28000",
                "nhiwatch serves TLS connections only: connect with sslmode=require (or verify-full)"
                    .into(),
            ));
        }
        self.scram.on_startup(client, message).await
    }
}

struct Handlers {
    queries: Arc<Bounded>,
    credentials: Arc<Credentials>,
    params: Arc<DefaultServerParameterProvider>,
    tls_only: bool,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        // A handler per connection: SCRAM keeps its exchange state in the handler.
        let mut scram = ScramAuth::new(self.credentials.clone());
        scram.set_iterations(SCRAM_ITERATIONS);
        Arc::new(Startup {
            scram: SASLAuthStartupHandler::new(self.params.clone()).with_scram(scram),
            tls_only: self.tls_only,
        })
    }
}

/// Connections served at once; more are refused with SQLSTATE 53300, as PostgreSQL refuses
/// past `max_connections`. Each query takes a share of `sql.memory_limit`, so more would
/// mostly make them fail.
const MAX_CONNECTIONS: usize = 16;

/// A PostgreSQL `ErrorResponse` (FATAL, 53300 too_many_connections), the whole answer to a
/// connection over the limit.
fn too_many_connections() -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (
            b'M',
            "sorry, too many clients already (nhiwatch serves 16 at once)",
        ),
    ] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

/// Tells a connection over the limit why, the way a client can show it: an `SSLRequest` or
/// `GSSENCRequest` is declined first (`N`; an error in its place is all libpq would report),
/// then the startup message is read and answered with the error.
async fn refuse_connection(socket: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const SSL_REQUEST: u32 = 80_877_103;
    const GSSENC_REQUEST: u32 = 80_877_104;
    for _ in 0..3 {
        let len = socket.read_u32().await? as usize;
        if !(8..=10_240).contains(&len) {
            break;
        }
        let mut body = vec![0u8; len - 4];
        socket.read_exact(&mut body).await?;
        let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        if len == 8 && (code == SSL_REQUEST || code == GSSENC_REQUEST) {
            socket.write_all(b"N").await?;
            continue;
        }
        break;
    }
    socket.write_all(&too_many_connections()).await?;
    socket.shutdown().await
}

/// Who may log in (`sql.user`, `sql.password`).
pub struct Login<'a> {
    /// The user name.
    pub user: &'a str,
    /// The password.
    pub password: &'a str,
}

/// Binds `addr` and serves `ctx` until the runtime stops, TLS only when `tls` is set; returns
/// the bound address.
pub async fn serve(
    addr: &str,
    ctx: Arc<SessionContext>,
    login: Login<'_>,
    caps: super::Caps,
    tls: Option<Arc<crate::tls::ServerConfig>>,
) -> Result<SocketAddr, super::Error> {
    let Login { user, password } = login;
    datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
        &ctx,
        "datafusion",
        Arc::new(datafusion_postgres::auth::AuthManager::default()),
    )
    .map_err(|e| super::Error::Setup(format!("pg_catalog: {e}")))?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| super::Error::Setup(e.to_string()))?;
    let credentials = Arc::new(Credentials {
        user: user.to_string(),
        salt: salt.to_vec(),
        salted: gen_salted_password(password, &salt, SCRAM_ITERATIONS),
    });
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(ReadOnly),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let mut params = DefaultServerParameterProvider::default();
    params.default_transaction_read_only = true;
    params.time_zone = "UTC".into();
    let params = Arc::new(params);
    let tls_only = tls.is_some();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    // A session per connection (its own copy of the settings; the tables, the catalog and
    // the memory pool are shared), so nothing one client sets reaches another.
    let handlers_for = move || {
        let session = Arc::new(SessionContext::new_with_state(ctx.state()));
        Arc::new(Handlers {
            queries: Arc::new(Bounded {
                inner: Arc::new(DfSessionService::new_with_hooks(session, hooks.clone())),
                caps,
            }),
            credentials: credentials.clone(),
            params: params.clone(),
            tls_only,
        })
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| super::Error::Setup(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| super::Error::Setup(e.to_string()))?;
    metrics::get().declare_query("postgres");
    let places = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((mut socket, peer)) => {
                    let Ok(place) = places.clone().try_acquire_owned() else {
                        // Answered before the startup is read, as PostgreSQL does.
                        metrics::get().query_done("postgres", "refused", 0.0);
                        tracing::warn!(%peer, "sql connection refused: {MAX_CONNECTIONS} already open");
                        tokio::spawn(async move {
                            let deadline = std::time::Duration::from_secs(5);
                            let _ = tokio::time::timeout(deadline, refuse_connection(&mut socket))
                                .await;
                        });
                        continue;
                    };
                    let handlers = handlers_for();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        if let Err(e) =
                            pgwire::tokio::process_socket(socket, acceptor, handlers).await
                        {
                            tracing::debug!(%peer, error = %e, "sql connection ended with an error");
                        }
                        drop(place);
                    });
                }
                Err(e) => tracing::warn!(error = %e, "sql listener accept failed"),
            }
        }
    });
    tracing::info!(addr = %local, tls = tls_only, "postgresql endpoint listening");
    Ok(local)
}
