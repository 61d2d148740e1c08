//! A PostgreSQL connection: the asynchronous client on a single-threaded runtime of its
//! own, used through blocking calls (what the `postgres` crate does too), so that requests
//! that do not wait for each other go out pipelined.
//!
//! Nothing here keeps state in the server session between transactions (no session
//! `SET`, no session advisory lock, no named prepared statement), so a connection pooler
//! in transaction mode (PgBouncer's `pool_mode = transaction`) may hand every transaction
//! to another server connection. Statements are sent unnamed with their parameter types
//! (`Parse`/`Bind`/`Execute`/`Sync` in one round trip).

pub mod tls;

use std::pin::pin;

use tokio_postgres::types::{ToSql, Type};

use crate::location::PgUrl;
use crate::{Error, Kind};

/// One parameter: its value and PostgreSQL type.
pub(crate) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A connection.
pub(crate) struct PgConn {
    /// Always `Some` until dropped (see the `Drop` impl).
    runtime: Option<tokio::runtime::Runtime>,
    client: tokio_postgres::Client,
    /// The URL without its password, for messages.
    location: String,
}

/// Whether an error met inside a write transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Within {
    /// Outside any transaction, or in a read.
    Read,
    /// In a write transaction: a key another transaction inserted first is a conflict.
    Write,
}

/// A PostgreSQL error as the layer's.
///
/// A serialization failure (SQLSTATE 40001) or a deadlock (40P01) is [`Kind::Busy`], and so
/// is a unique violation (23505) inside a write transaction: every store reads a key before
/// it inserts it in the same serializable transaction, so the key can only have come from
/// a transaction that committed after this one's snapshot (PostgreSQL reports some of these
/// as 23505 rather than 40001, and its manual advises retrying them alike). Data or index
/// corruption (XX001, XX002) is [`Kind::Corrupt`].
pub(crate) fn failure(location: &str, e: &tokio_postgres::Error, within: Within) -> Error {
    use tokio_postgres::error::SqlState;
    let kind = match e.code() {
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
            Kind::Busy
        }
        Some(c) if *c == SqlState::UNIQUE_VIOLATION && within == Within::Write => Kind::Busy,
        Some(c) if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => Kind::Corrupt,
        _ => Kind::Failed,
    };
    let reason = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None if e.is_closed() => "the connection to the database closed (a restart or a failover); \
                                  the next request connects again"
            .to_owned(),
        None => {
            // The client's own message is terse ("error performing TLS handshake"); its
            // sources say what failed.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            text
        }
    };
    Error::new(kind, location, reason)
}

impl PgConn {
    /// Connects to `url` (TLS as its `sslmode` says).
    pub(crate) fn connect(url: &PgUrl) -> Result<Self, Error> {
        let location = url.to_string();
        let settings = tls::settings(url)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::failed(&location, format!("starting the database client: {e}")))?;
        let mode = settings.mode;
        let (client, connection) = runtime.block_on(settings.config.connect(settings.tls)).map_err(|e| {
            let error = failure(&location, &e, Within::Read);
            Error::new(
                error.kind(),
                &location,
                format!("{} (connecting with sslmode={mode})", error.reason()),
            )
        })?;
        // The connection's task runs whenever the runtime runs a request (`block_on`).
        runtime.spawn(async move {
            let _ = connection.await;
        });
        Ok(Self { runtime: Some(runtime), client, location })
    }

    /// Runs a request to completion on the connection's runtime.
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match &self.runtime {
            Some(runtime) => runtime.block_on(future),
            None => unreachable!("the runtime is taken only by drop"),
        }
    }

    /// The URL without its password.
    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    /// Whether the server closed the connection.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Statements without parameters or results (`BEGIN …`, `COMMIT`), in one round trip.
    pub(crate) fn batch(&self, sql: &str, within: Within) -> Result<(), Error> {
        self.block_on(self.client.batch_execute(sql)).map_err(|e| failure(&self.location, &e, within))
    }

    /// The rows of a statement.
    pub(crate) fn query(
        &self,
        sql: &str,
        params: &[Param<'_>],
        within: Within,
    ) -> Result<Vec<tokio_postgres::Row>, Error> {
        self.block_on(self.client.query_typed(sql, params)).map_err(|e| failure(&self.location, &e, within))
    }

    /// Runs a statement; the number of rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &[Param<'_>], within: Within) -> Result<u64, Error> {
        self.block_on(self.client.execute_typed(sql, params)).map_err(|e| failure(&self.location, &e, within))
    }

    /// A read in a transaction of its own: `begin` (statements that open it), the query and
    /// `COMMIT`, sent together and answered in one round trip.
    pub(crate) fn query_in(
        &self,
        begin: &str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<tokio_postgres::Row>, Error> {
        let fail = |e: tokio_postgres::Error| failure(&self.location, &e, Within::Read);
        self.block_on(async {
            // Each request is queued when first polled, in this order.
            let (opened, rows, committed) = tokio::join!(
                self.client.batch_execute(begin),
                self.client.query_typed(sql, params),
                self.client.batch_execute("COMMIT"),
            );
            opened.map_err(fail)?;
            let rows = rows.map_err(fail)?;
            committed.map_err(fail)?;
            Ok(rows)
        })
    }

    /// Writes rows into `target` (`table (columns)`) with `COPY … FROM STDIN BINARY`, the
    /// fastest way PostgreSQL takes rows.
    pub(crate) fn copy_in(
        &self,
        target: &str,
        types: &[Type],
        rows: &[Vec<Param<'_>>],
    ) -> Result<u64, Error> {
        let fail = |e: tokio_postgres::Error| failure(&self.location, &e, Within::Write);
        self.block_on(async {
            let sink =
                self.client.copy_in(&format!("COPY {target} FROM STDIN BINARY")).await.map_err(fail)?;
            let mut writer = pin!(tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, types));
            for row in rows {
                let values: Vec<&(dyn ToSql + Sync)> = row.iter().map(|(value, _)| *value).collect();
                writer.as_mut().write(&values).await.map_err(fail)?;
            }
            writer.as_mut().finish().await.map_err(fail)
        })
    }
}

impl Drop for PgConn {
    /// Stops the runtime without waiting for it, which is allowed anywhere, a tokio worker
    /// thread of the service included: dropping a runtime there the ordinary way panics
    /// ("Cannot drop a runtime in a context where blocking is not allowed"), which is how
    /// a PostgreSQL-backed `escx serve` used to abort on SIGTERM. The connection's task goes
    /// with it; the server sees the socket close, as with a terminated client.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
