//! The operator store's connection: one set of SQL statements run on SQLite (the
//! embedded default, `operator.sqlite`) or on PostgreSQL (several service nodes on one
//! database; metering.md §6.4).
//!
//! The statements are written in the subset both engines read alike: `?N` parameters
//! (sent to PostgreSQL as `$N`), `ON CONFLICT` upserts, `RETURNING`, integers as
//! BIGINT, and casts where PostgreSQL would widen (`sum` of BIGINT is NUMERIC there).
//! Only the schemas differ, in their type names. No crate offers one synchronous
//! interface over rusqlite and postgres (sqlx's `Any` driver is async and links its own
//! SQLite, which cannot live beside rusqlite's), hence this small one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use postgres::types::{ToSql, Type};
use postgres::{Client, Statement};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::Error;
use crate::pg::failure;
use crate::sqlite::{Gated, sql as sql_error};

/// One statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Bytes(&'a [u8]),
    Text(&'a str),
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Int(v) => rusqlite::ToSql::to_sql(v),
            Arg::OptInt(v) => rusqlite::ToSql::to_sql(v),
            Arg::Bytes(v) => rusqlite::ToSql::to_sql(v),
            Arg::Text(v) => rusqlite::ToSql::to_sql(v),
        }
    }
}

impl Arg<'_> {
    fn pg(&self) -> &(dyn ToSql + Sync) {
        match self {
            Arg::Int(v) => v,
            Arg::OptInt(v) => v,
            Arg::Bytes(v) => v,
            Arg::Text(v) => v,
        }
    }
}

/// An integer parameter; values beyond BIGINT (none the operator writes: times, counts,
/// micro-units below 2^63) are refused rather than wrapped.
pub(crate) fn int(value: impl Into<u64>) -> Result<Arg<'static>, Error> {
    let value = value.into();
    i64::try_from(value)
        .map(Arg::Int)
        .map_err(|_| Error::Store(format!("{value} is beyond the store's 64-bit signed integers")))
}

/// [`int`] of a value that may be absent (NULL).
pub(crate) fn opt_int(value: Option<u64>) -> Result<Arg<'static>, Error> {
    match value {
        None => Ok(Arg::OptInt(None)),
        Some(value) => int(value),
    }
}

#[derive(Debug)]
enum Cell {
    Null,
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
}

/// One result row.
#[derive(Debug)]
pub(crate) struct Row(Vec<Cell>);

fn corrupt(index: usize, wanted: &str) -> Error {
    Error::Store(format!("the operator store returned something other than {wanted} in column {index}"))
}

impl Row {
    fn cell(&self, index: usize) -> Result<&Cell, Error> {
        self.0.get(index).ok_or_else(|| corrupt(index, "a value"))
    }

    pub(crate) fn int(&self, index: usize) -> Result<i64, Error> {
        self.opt_int(index)?.ok_or_else(|| corrupt(index, "an integer"))
    }

    /// An integer that is never negative (times, sequence numbers, amounts).
    pub(crate) fn uint(&self, index: usize) -> Result<u64, Error> {
        u64::try_from(self.int(index)?).map_err(|_| corrupt(index, "a non-negative integer"))
    }

    pub(crate) fn opt_int(&self, index: usize) -> Result<Option<i64>, Error> {
        match self.cell(index)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(*v)),
            _ => Err(corrupt(index, "an integer")),
        }
    }

    pub(crate) fn opt_uint(&self, index: usize) -> Result<Option<u64>, Error> {
        self.opt_int(index)?
            .map(|v| u64::try_from(v).map_err(|_| corrupt(index, "a non-negative integer")))
            .transpose()
    }

    pub(crate) fn bytes(&self, index: usize) -> Result<&[u8], Error> {
        match self.cell(index)? {
            Cell::Bytes(v) => Ok(v),
            _ => Err(corrupt(index, "bytes")),
        }
    }

    pub(crate) fn text(&self, index: usize) -> Result<&str, Error> {
        match self.cell(index)? {
            Cell::Text(v) => Ok(v),
            _ => Err(corrupt(index, "text")),
        }
    }
}

/// Statements run on a connection, in a transaction or not.
pub(crate) trait Sql {
    fn rows(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<Row>, Error>;

    /// Runs a statement; the number of rows it changed.
    fn exec(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, Error>;

    fn row(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<Option<Row>, Error> {
        Ok(self.rows(sql, args)?.into_iter().next())
    }

    /// The first row, which the statement always returns (an aggregate).
    fn one(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<Row, Error> {
        self.row(sql, args)?.ok_or_else(|| Error::Store("the operator store returned no row".into()))
    }
}

/// A PostgreSQL connection with its prepared statements.
pub(crate) struct Pg {
    client: RefCell<Client>,
    statements: RefCell<HashMap<&'static str, Statement>>,
    /// To connect again when the server closed the connection (a restart, a failover).
    url: String,
    schema: &'static str,
}

/// The store's connection.
pub(crate) enum Db {
    /// SQLite, with the process-wide write gate of its file (`crate::sqlite::write_gate`).
    Sqlite {
        conn: Connection,
        gate: Arc<Mutex<()>>,
    },
    Postgres(Box<Pg>),
}

/// A write transaction: `BEGIN IMMEDIATE` under the file's gate on SQLite,
/// `SERIALIZABLE` on PostgreSQL (a conflict is [`Error::Busy`]). Rolled back if dropped
/// before [`Tx::commit`].
pub(crate) enum Tx<'a> {
    Sqlite(Gated<'a>),
    Postgres(PgTx<'a>),
}

pub(crate) struct PgTx<'a> {
    pg: &'a Pg,
    done: bool,
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.pg.client.borrow_mut().batch_execute("ROLLBACK");
        }
    }
}

impl Pg {
    pub(crate) fn new(client: Client, url: &str, schema: &'static str) -> Self {
        Self {
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
            url: url.to_owned(),
            schema,
        }
    }

    /// Connects again if the server has closed the connection (a restart, a failover):
    /// the request that met the closed connection failed; the next one reconnects. Called
    /// where no transaction is open.
    fn revive(&self) {
        if self.client.borrow().is_closed()
            && let Ok(client) = crate::pg::reconnect(&self.url, self.schema)
        {
            *self.client.borrow_mut() = client;
            self.statements.borrow_mut().clear();
        }
    }

    /// The prepared form of `sql`, its `?N` parameters written `$N`.
    fn statement(&self, sql: &'static str) -> Result<Statement, Error> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.borrow_mut().prepare(&dollars(sql)).map_err(|e| failure(&e))?;
        self.statements.borrow_mut().insert(sql, statement.clone());
        Ok(statement)
    }

    fn rows(
        &self,
        sql: &'static str,
        args: &[Arg<'_>],
        errors: Errors<Vec<postgres::Row>>,
    ) -> Result<Vec<Row>, Error> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(Arg::pg).collect();
        let rows = errors(self.client.borrow_mut().query(&statement, &params))?;
        rows.iter().map(pg_row).collect()
    }

    fn exec(&self, sql: &'static str, args: &[Arg<'_>], errors: Errors<u64>) -> Result<u64, Error> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(Arg::pg).collect();
        errors(self.client.borrow_mut().execute(&statement, &params))
    }
}

/// How a statement's PostgreSQL errors become this crate's.
type Errors<T> = fn(Result<T, postgres::Error>) -> Result<T, Error>;

fn plain<T>(result: Result<T, postgres::Error>) -> Result<T, Error> {
    result.map_err(|e| failure(&e))
}

/// `?N` → `$N`. The statements hold no `?` inside string literals.
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn pg_row(row: &postgres::Row) -> Result<Row, Error> {
    let mut cells = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let get = |e: postgres::Error| failure(&e);
        let cell = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(index).map_err(get)?.map(Cell::Int),
            Type::INT4 => row.try_get::<_, Option<i32>>(index).map_err(get)?.map(|v| Cell::Int(v.into())),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(index).map_err(get)?.map(Cell::Bytes),
            Type::TEXT | Type::VARCHAR => {
                row.try_get::<_, Option<String>>(index).map_err(get)?.map(Cell::Text)
            }
            ref other => {
                return Err(Error::Store(format!(
                    "the operator store returned a {other} in column {}; expected BIGINT, BYTEA or TEXT",
                    column.name()
                )));
            }
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Row(cells))
}

fn sqlite_rows(conn: &Connection, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, Error> {
    let mut statement = conn.prepare_cached(sql).map_err(sql_error)?;
    let columns = statement.column_count();
    let mut rows = statement.query(rusqlite::params_from_iter(args.iter())).map_err(sql_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        let mut cells = Vec::with_capacity(columns);
        for index in 0..columns {
            cells.push(match row.get_ref(index).map_err(sql_error)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Blob(v) => Cell::Bytes(v.to_vec()),
                ValueRef::Text(v) => {
                    Cell::Text(String::from_utf8(v.to_vec()).map_err(|_| corrupt(index, "UTF-8 text"))?)
                }
                ValueRef::Real(_) => return Err(corrupt(index, "an integer, bytes or text")),
            });
        }
        out.push(Row(cells));
    }
    Ok(out)
}

fn sqlite_exec(conn: &Connection, sql: &str, args: &[Arg<'_>]) -> Result<u64, Error> {
    let changed = conn
        .prepare_cached(sql)
        .map_err(sql_error)?
        .execute(rusqlite::params_from_iter(args.iter()))
        .map_err(sql_error)?;
    Ok(changed as u64)
}

impl Db {
    /// Begins a write transaction.
    pub(crate) fn begin(&self) -> Result<Tx<'_>, Error> {
        match self {
            Db::Sqlite { conn, gate } => Ok(Tx::Sqlite(Gated::begin(conn, gate)?)),
            Db::Postgres(pg) => {
                let pg: &Pg = pg;
                pg.revive();
                pg.client
                    .borrow_mut()
                    .batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                    .map_err(|e| failure(&e))?;
                Ok(Tx::Postgres(PgTx { pg, done: false }))
            }
        }
    }

    /// Runs `body` in a write transaction, again (a fresh transaction, everything re-read)
    /// while the database reports a conflict with a concurrent one. `body` commits the
    /// transaction itself where it succeeds; one it drops is rolled back.
    pub(crate) fn writing<T>(&self, mut body: impl FnMut(Tx<'_>) -> Result<T, Error>) -> Result<T, Error> {
        escx::retry::while_busy(|e| matches!(e, Error::Busy(_)), || body(self.begin()?))
    }
}

impl Tx<'_> {
    pub(crate) fn commit(self) -> Result<(), Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit(),
            Tx::Postgres(mut tx) => {
                let result = tx.pg.client.borrow_mut().batch_execute("COMMIT").map_err(|e| failure(&e));
                tx.done = true;
                result
            }
        }
    }
}

impl Sql for Db {
    fn rows(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<Row>, Error> {
        match self {
            Db::Sqlite { conn, .. } => sqlite_rows(conn, sql, args),
            Db::Postgres(pg) => {
                pg.revive();
                pg.rows(sql, args, plain)
            }
        }
    }

    fn exec(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, Error> {
        match self {
            Db::Sqlite { conn, .. } => sqlite_exec(conn, sql, args),
            Db::Postgres(pg) => {
                pg.revive();
                pg.exec(sql, args, plain)
            }
        }
    }
}

/// A unique violation (SQLSTATE 23505) inside a write transaction is a conflict with a
/// concurrent one, run again like a serialization failure. Every insert of the operator
/// store follows a read of the same key in the same transaction that found nothing, so
/// the key can only have come from a transaction that committed after this one's
/// snapshot; PostgreSQL reports some of these as 23505 rather than 40001, and its manual
/// advises retrying them alike. The retry reads the row and takes the duplicate path.
fn concurrent<T>(result: Result<T, postgres::Error>) -> Result<T, Error> {
    result.map_err(|e| match e.code() {
        Some(code) if *code == postgres::error::SqlState::UNIQUE_VIOLATION => match failure(&e) {
            Error::Store(reason) => Error::Busy(reason),
            other => other,
        },
        _ => failure(&e),
    })
}

impl Sql for Tx<'_> {
    fn rows(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<Vec<Row>, Error> {
        match self {
            Tx::Sqlite(tx) => sqlite_rows(tx, sql, args),
            Tx::Postgres(tx) => tx.pg.rows(sql, args, concurrent),
        }
    }

    fn exec(&self, sql: &'static str, args: &[Arg<'_>]) -> Result<u64, Error> {
        match self {
            Tx::Sqlite(tx) => sqlite_exec(tx, sql, args),
            Tx::Postgres(tx) => tx.pg.exec(sql, args, concurrent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_renumbered_for_postgresql() {
        assert_eq!(
            dollars("SELECT a FROM t WHERE b = ?1 AND c IN (?2, ?10) AND d = '?'"),
            "SELECT a FROM t WHERE b = $1 AND c IN ($2, $10) AND d = '?'"
        );
    }

    #[test]
    fn sqlite_rows_read_back_as_written() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a INTEGER, b BLOB, c TEXT, d INTEGER)").unwrap();
        let db = Db::Sqlite { conn, gate: Arc::new(Mutex::new(())) };
        let tx = db.begin().unwrap();
        assert_eq!(
            tx.exec(
                "INSERT INTO t (a, b, c, d) VALUES (?1, ?2, ?3, ?4)",
                &[Arg::Int(7), Arg::Bytes(b"xy"), Arg::Text("z"), Arg::OptInt(None)]
            )
            .unwrap(),
            1
        );
        tx.commit().unwrap();
        let row = db.one("SELECT a, b, c, d FROM t", &[]).unwrap();
        assert_eq!(row.uint(0).unwrap(), 7);
        assert_eq!(row.bytes(1).unwrap(), b"xy");
        assert_eq!(row.text(2).unwrap(), "z");
        assert_eq!(row.opt_int(3).unwrap(), None);
        assert!(row.int(3).is_err(), "a NULL is not an integer");
        assert!(row.bytes(0).is_err(), "an integer is not bytes");
        assert!(int(u64::MAX).is_err(), "beyond BIGINT is refused, not wrapped");
    }
}
