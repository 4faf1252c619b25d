//! The PostgreSQL wire-protocol endpoint (`sql.pg_listen`): `psql`, Grafana's PostgreSQL data
//! source and other clients run the same SQL as `nhiwatch query`.
//!
//! Built on datafusion-postgres (its statement handling, `pg_catalog` emulation and type
//! mapping) with two things of ours: login by SCRAM-SHA-256 against `sql.user` /
//! `sql.password` (datafusion-postgres' own server has no password check), and a hook that
//! refuses every statement that is not a read, before it is planned.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

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
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::Response;
use pgwire::api::{ClientInfo, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};

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

struct Handlers {
    service: Arc<DfSessionService>,
    credentials: Arc<Credentials>,
    params: Arc<DefaultServerParameterProvider>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        // A handler per connection: SCRAM keeps its exchange state in the handler.
        let mut scram = ScramAuth::new(self.credentials.clone());
        scram.set_iterations(SCRAM_ITERATIONS);
        Arc::new(SASLAuthStartupHandler::new(self.params.clone()).with_scram(scram))
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

/// Binds `addr` and serves `ctx` until the runtime stops; returns the bound address.
pub async fn serve(
    addr: &str,
    ctx: Arc<SessionContext>,
    user: &str,
    password: &str,
) -> Result<SocketAddr, super::Error> {
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
    // A session per connection (its own copy of the settings; the tables, the catalog and
    // the memory pool are shared), so nothing one client sets reaches another.
    let handlers_for = move || {
        let session = Arc::new(SessionContext::new_with_state(ctx.state()));
        Arc::new(Handlers {
            service: Arc::new(DfSessionService::new_with_hooks(session, hooks.clone())),
            credentials: credentials.clone(),
            params: params.clone(),
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
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await
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
    tracing::info!(addr = %local, "postgresql endpoint listening");
    Ok(local)
}
