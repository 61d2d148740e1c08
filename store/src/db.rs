//! One set of SQL statements run on either engine: a store's connection ([`Db`]), its
//! write transactions ([`Tx`]), statement parameters ([`Arg`]) and result rows ([`Row`]).
//!
//! Statements are written in the subset SQLite and PostgreSQL read alike: `?N` parameters
//! (sent to PostgreSQL as `$N`), `ON CONFLICT` upserts, `RETURNING`, integers as `BIGINT`,
//! `NULLS FIRST`, and casts where PostgreSQL would widen (`sum` of `BIGINT` is `NUMERIC`
//! there). Only the schemas differ, in their type names and collations. No kept crate offers
//! one synchronous interface over rusqlite and tokio-postgres (sqlx's `Any` driver is
//! asynchronous and links its own SQLite, which cannot live beside rusqlite's), hence this
//! small one.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use tokio_postgres::types::{ToSql, Type};

use crate::Error;
use crate::location::{Location, PgUrl};
use crate::migrate::{Mode, Schema};
use crate::pg::{Param, PgConn, Within};
use crate::retry::Retryable;
use crate::sqlite::Gated;

/// One statement parameter.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    /// A 64-bit signed integer.
    Int(i64),
    /// An integer or NULL.
    OptInt(Option<i64>),
    /// Bytes.
    Bytes(&'a [u8]),
    /// Bytes or NULL.
    OptBytes(Option<&'a [u8]>),
    /// UTF-8 text.
    Text(&'a str),
    /// Text or NULL.
    OptText(Option<&'a str>),
}

impl Arg<'static> {
    /// An unsigned integer (a time, a count, an amount in micro-units); a value beyond the
    /// engines' signed 64-bit integers is refused rather than wrapped.
    pub fn uint(value: impl Into<u64>) -> Result<Self, Error> {
        let value = value.into();
        i64::try_from(value)
            .map(Arg::Int)
            .map_err(|_| Error::failed("", format!("{value} is beyond the store's 64-bit signed integers")))
    }

    /// [`Arg::uint`] of a value that may be absent (NULL).
    pub fn opt_uint(value: Option<u64>) -> Result<Self, Error> {
        match value {
            None => Ok(Arg::OptInt(None)),
            Some(value) => Self::uint(value),
        }
    }
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Int(v) => rusqlite::ToSql::to_sql(v),
            Arg::OptInt(v) => rusqlite::ToSql::to_sql(v),
            Arg::Bytes(v) => rusqlite::ToSql::to_sql(v),
            Arg::OptBytes(v) => rusqlite::ToSql::to_sql(v),
            Arg::Text(v) => rusqlite::ToSql::to_sql(v),
            Arg::OptText(v) => rusqlite::ToSql::to_sql(v),
        }
    }
}

impl Arg<'_> {
    fn pg(&self) -> Param<'_> {
        match self {
            Arg::Int(v) => (v as &(dyn ToSql + Sync), Type::INT8),
            Arg::OptInt(v) => (v, Type::INT8),
            Arg::Bytes(v) => (v, Type::BYTEA),
            Arg::OptBytes(v) => (v, Type::BYTEA),
            Arg::Text(v) => (v, Type::TEXT),
            Arg::OptText(v) => (v, Type::TEXT),
        }
    }
}

/// One value of a result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Bytes.
    Bytes(Vec<u8>),
    /// Text.
    Text(String),
}

/// One result row.
#[derive(Debug)]
pub struct Row {
    cells: Vec<Cell>,
    location: Arc<str>,
}

impl Row {
    fn corrupt(&self, index: usize, wanted: &str) -> Error {
        Error::corrupt(&*self.location, format!("column {index} of a stored row is not {wanted}"))
    }

    fn cell(&self, index: usize) -> Result<&Cell, Error> {
        self.cells.get(index).ok_or_else(|| self.corrupt(index, "there"))
    }

    /// Every value, in order.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// An integer.
    pub fn int(&self, index: usize) -> Result<i64, Error> {
        self.opt_int(index)?.ok_or_else(|| self.corrupt(index, "an integer"))
    }

    /// An integer that is never negative (times, sequence numbers, amounts).
    pub fn uint(&self, index: usize) -> Result<u64, Error> {
        u64::try_from(self.int(index)?).map_err(|_| self.corrupt(index, "a non-negative integer"))
    }

    /// An integer of a narrower type (an epoch, a count).
    pub fn narrow<T: TryFrom<i64>>(&self, index: usize) -> Result<T, Error> {
        T::try_from(self.int(index)?).map_err(|_| self.corrupt(index, "in range"))
    }

    /// An integer or NULL.
    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, Error> {
        match self.cell(index)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(*v)),
            _ => Err(self.corrupt(index, "an integer")),
        }
    }

    /// A non-negative integer or NULL.
    pub fn opt_uint(&self, index: usize) -> Result<Option<u64>, Error> {
        self.opt_int(index)?
            .map(|v| u64::try_from(v).map_err(|_| self.corrupt(index, "a non-negative integer")))
            .transpose()
    }

    /// Bytes.
    pub fn bytes(&self, index: usize) -> Result<&[u8], Error> {
        self.opt_bytes(index)?.ok_or_else(|| self.corrupt(index, "bytes"))
    }

    /// Bytes or NULL.
    pub fn opt_bytes(&self, index: usize) -> Result<Option<&[u8]>, Error> {
        match self.cell(index)? {
            Cell::Null => Ok(None),
            Cell::Bytes(v) => Ok(Some(v)),
            _ => Err(self.corrupt(index, "bytes")),
        }
    }

    /// Exactly `N` bytes (a hash, an id).
    pub fn array<const N: usize>(&self, index: usize) -> Result<[u8; N], Error> {
        self.bytes(index)?.try_into().map_err(|_| self.corrupt(index, &format!("{N} bytes")))
    }

    /// Text.
    pub fn text(&self, index: usize) -> Result<&str, Error> {
        self.opt_text(index)?.ok_or_else(|| self.corrupt(index, "text"))
    }

    /// Text or NULL.
    pub fn opt_text(&self, index: usize) -> Result<Option<&str>, Error> {
        match self.cell(index)? {
            Cell::Null => Ok(None),
            Cell::Text(v) => Ok(Some(v)),
            _ => Err(self.corrupt(index, "text")),
        }
    }

    /// A value parsed from its stored text (a name of a closed set, a package name).
    pub fn parsed<T>(&self, index: usize, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, Error> {
        let text = self.text(index)?;
        parse(text).ok_or_else(|| Error::corrupt(&*self.location, format!("unknown stored value {text:?}")))
    }
}

/// Statements on a store, in a write transaction or not.
pub trait Sql {
    /// The rows a statement returns.
    fn rows(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, Error>;

    /// Runs a statement; the number of rows it changed.
    fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, Error>;

    /// The first row, if any.
    fn row(&self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Row>, Error> {
        Ok(self.rows(sql, args)?.into_iter().next())
    }

    /// The first row, which the statement always returns (an aggregate).
    fn one(&self, sql: &str, args: &[Arg<'_>]) -> Result<Row, Error> {
        self.row(sql, args)?
            .ok_or_else(|| Error::corrupt("", "a statement that always returns a row returned none"))
    }

    /// The rows of `select` (a statement with one `IN (…)` whose parentheses hold `{}`)
    /// for every key of `keys`, asked in chunks of at most [`IN_LIST_MAX`] keys. The keys
    /// are the statement's only parameters.
    fn rows_in(&self, select: &str, keys: &[&str]) -> Result<Vec<Row>, Error> {
        let mut rows = Vec::new();
        for chunk in keys.chunks(IN_LIST_MAX) {
            let marks: Vec<String> = (1..=chunk.len()).map(|n| format!("?{n}")).collect();
            let sql = select.replacen("{}", &marks.join(", "), 1);
            let args: Vec<Arg<'_>> = chunk.iter().map(|key| Arg::Text(key)).collect();
            rows.extend(self.rows(&sql, &args)?);
        }
        Ok(rows)
    }
}

/// Most keys in one `IN (…)` list of [`Sql::rows_in`].
pub const IN_LIST_MAX: usize = 500;

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

fn pg_params<'a>(args: &'a [Arg<'_>]) -> Vec<Param<'a>> {
    args.iter().map(Arg::pg).collect()
}

fn pg_rows(rows: &[tokio_postgres::Row], location: &Arc<str>) -> Result<Vec<Row>, Error> {
    rows.iter().map(|row| pg_row(row, location)).collect()
}

fn pg_row(row: &tokio_postgres::Row, location: &Arc<str>) -> Result<Row, Error> {
    let mut cells = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let get =
            |e: tokio_postgres::Error| Error::corrupt(&**location, format!("column {}: {e}", column.name()));
        let cell = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(index).map_err(get)?.map(Cell::Int),
            Type::INT4 => row.try_get::<_, Option<i32>>(index).map_err(get)?.map(|v| Cell::Int(v.into())),
            Type::INT2 => row.try_get::<_, Option<i16>>(index).map_err(get)?.map(|v| Cell::Int(v.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(index).map_err(get)?.map(|v| Cell::Int(v.into())),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(index).map_err(get)?.map(Cell::Bytes),
            Type::TEXT | Type::VARCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(index).map_err(get)?.map(Cell::Text)
            }
            ref other => {
                return Err(Error::corrupt(
                    &**location,
                    format!("column {} is a {other}; the stores keep BIGINT, BYTEA and TEXT", column.name()),
                ));
            }
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Row { cells, location: location.clone() })
}

fn sqlite_rows(
    conn: &Connection,
    sql: &str,
    args: &[Arg<'_>],
    location: &Arc<str>,
) -> Result<Vec<Row>, Error> {
    let fail = |e: rusqlite::Error| crate::sqlite::failure(std::path::Path::new(&**location), &e);
    let mut statement = conn.prepare_cached(sql).map_err(fail)?;
    let columns = statement.column_count();
    let mut rows = statement.query(rusqlite::params_from_iter(args.iter())).map_err(fail)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(fail)? {
        let mut cells = Vec::with_capacity(columns);
        for index in 0..columns {
            cells.push(match row.get_ref(index).map_err(fail)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Blob(v) => Cell::Bytes(v.to_vec()),
                ValueRef::Text(v) => {
                    Cell::Text(String::from_utf8(v.to_vec()).map_err(|_| {
                        Error::corrupt(&**location, format!("column {index} is not UTF-8 text"))
                    })?)
                }
                ValueRef::Real(_) => {
                    return Err(Error::corrupt(&**location, format!("column {index} holds a real number")));
                }
            });
        }
        out.push(Row { cells, location: location.clone() });
    }
    Ok(out)
}

fn sqlite_exec(conn: &Connection, sql: &str, args: &[Arg<'_>], location: &Arc<str>) -> Result<u64, Error> {
    let fail = |e: rusqlite::Error| crate::sqlite::failure(std::path::Path::new(&**location), &e);
    let changed = conn
        .prepare_cached(sql)
        .map_err(fail)?
        .execute(rusqlite::params_from_iter(args.iter()))
        .map_err(fail)?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

enum Engine {
    Sqlite {
        conn: Connection,
        /// The process-wide write gate of the file (`crate::sqlite::write_gate`).
        gate: Arc<Mutex<()>>,
    },
    Postgres {
        url: PgUrl,
        conn: RefCell<PgConn>,
    },
}

/// A store's connection: a SQLite file or a PostgreSQL database, its schema brought up to
/// date when it was opened.
pub struct Db {
    engine: Engine,
    /// The file, or the URL without its password.
    location: Arc<str>,
    schema: &'static Schema,
}

impl Db {
    /// Opens (or, as `mode` says, creates) the store `schema` describes at `location`,
    /// bringing its schema up to date in one transaction (`crate::migrate`). On creation,
    /// `init` writes the store's first rows in that same transaction.
    pub fn open(
        location: &Location,
        schema: &'static Schema,
        mode: Mode,
        init: impl FnOnce(&Tx<'_>) -> Result<(), Error>,
    ) -> Result<Self, Error> {
        let db = match location {
            Location::Sqlite(path) => {
                if mode == Mode::Create && path.exists() {
                    return Err(Error::failed(
                        path.display().to_string(),
                        format!("exists already; open the {} instead", schema.what),
                    ));
                }
                let conn = crate::sqlite::open(path, mode != Mode::Open, schema.what)?;
                let gate = crate::sqlite::write_gate(path);
                Self {
                    engine: Engine::Sqlite { conn, gate },
                    location: path.display().to_string().into(),
                    schema,
                }
            }
            Location::Postgres(url) => {
                let conn = PgConn::connect(url)?;
                Self {
                    location: conn.location().into(),
                    engine: Engine::Postgres { url: url.clone(), conn: RefCell::new(conn) },
                    schema,
                }
            }
        };
        crate::migrate::run(&db, mode, init)?;
        Ok(db)
    }

    /// The file, or the URL without its password, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// What the store declared about its tables.
    pub(crate) fn schema(&self) -> &'static Schema {
        self.schema
    }

    /// Whether the store is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self.engine, Engine::Postgres { .. })
    }

    /// The SQLite file, when it is one.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        matches!(self.engine, Engine::Sqlite { .. }).then(|| PathBuf::from(&*self.location))
    }

    /// The connection, opened again first if the server has closed it (a restart, a
    /// failover): the request that met the closed connection failed; the next one
    /// reconnects. A failed reconnect keeps the closed connection, whose error the request
    /// then reports.
    fn pg(&self) -> Option<std::cell::Ref<'_, PgConn>> {
        let Engine::Postgres { url, conn } = &self.engine else { return None };
        if conn.borrow().is_closed()
            && let Ok(mut held) = conn.try_borrow_mut()
            && let Ok(fresh) = PgConn::connect(url)
        {
            *held = fresh;
        }
        Some(conn.borrow())
    }

    /// The statements that open a transaction on PostgreSQL: `begin`, then the schema the
    /// store's tables live in, named for this transaction only.
    fn pg_begin(&self, begin: &str) -> String {
        match self.schema.pg_schema {
            Some(schema) => format!("{begin}; SET LOCAL search_path TO {schema}"),
            None => begin.to_owned(),
        }
    }

    /// Begins a write transaction: `BEGIN IMMEDIATE` under the file's write gate on SQLite
    /// (one writer at a time), `SERIALIZABLE` on PostgreSQL (a conflict with a concurrent
    /// transaction is [`crate::Kind::Busy`]). Rolled back if dropped before [`Tx::commit`].
    pub fn begin(&self) -> Result<Tx<'_>, Error> {
        self.begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE", None)
    }

    /// Begins a write transaction that excludes every other one taken this way on the same
    /// store: on PostgreSQL, `READ COMMITTED` under the transaction advisory lock of the
    /// store's lock context (`crate::migrate::lock_key`), taken by the transaction's first
    /// statement; on SQLite, as [`Db::begin`]. The lock makes such writers take turns, and
    /// since a lock holder's every statement sees what the previous holder committed, they
    /// never conflict (the ledger's writers, settlement.md §5.5).
    pub fn begin_exclusive(&self) -> Result<Tx<'_>, Error> {
        let lock = crate::migrate::lock_key(self.schema.lock);
        self.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED", Some(lock))
    }

    /// Runs `body` in a write transaction ([`Db::begin`]), again in a fresh one (everything
    /// re-read) while it fails busy ([`crate::retry::while_busy`]). `body` commits the
    /// transaction where it succeeds; one it drops is rolled back.
    pub fn writing<T, E: Retryable>(&self, mut body: impl FnMut(Tx<'_>) -> Result<T, E>) -> Result<T, E> {
        crate::retry::while_busy(E::is_busy, || body(self.begin()?))
    }

    /// [`Db::writing`] with [`Db::begin_exclusive`] transactions.
    pub fn writing_exclusive<T, E: Retryable>(
        &self,
        mut body: impl FnMut(Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        crate::retry::while_busy(E::is_busy, || body(self.begin_exclusive()?))
    }

    fn begin_with(&self, begin: &str, lock: Option<i64>) -> Result<Tx<'_>, Error> {
        match &self.engine {
            Engine::Sqlite { conn, gate } => {
                let gated = Gated::begin(conn, gate, std::path::Path::new(&*self.location))?;
                Ok(Tx { db: self, inner: TxInner::Sqlite(gated) })
            }
            Engine::Postgres { .. } => {
                let conn = self.pg().ok_or_else(|| Error::failed(&*self.location, "not PostgreSQL"))?;
                let mut sql = self.pg_begin(begin);
                if let Some(key) = lock {
                    sql = format!("{sql}; SELECT pg_advisory_xact_lock({key})");
                }
                conn.batch(&sql, Within::Write)?;
                Ok(Tx { db: self, inner: TxInner::Postgres(PgTx { conn, done: false }) })
            }
        }
    }
}

impl Sql for Db {
    fn rows(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, Error> {
        match &self.engine {
            Engine::Sqlite { conn, .. } => sqlite_rows(conn, sql, args, &self.location),
            Engine::Postgres { .. } => {
                let conn = self.pg().ok_or_else(|| Error::failed(&*self.location, "not PostgreSQL"))?;
                let params = pg_params(args);
                let rows = if self.schema.pg_schema.is_some() {
                    conn.query_in(&self.pg_begin("BEGIN READ ONLY"), &dollars(sql), &params)?
                } else {
                    conn.query(&dollars(sql), &params, Within::Read)?
                };
                pg_rows(&rows, &self.location)
            }
        }
    }

    fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, Error> {
        match &self.engine {
            Engine::Sqlite { conn, .. } => sqlite_exec(conn, sql, args, &self.location),
            Engine::Postgres { .. } => {
                // A statement that changes rows runs in a write transaction of its own.
                let tx = self.begin()?;
                let changed = tx.exec(sql, args)?;
                tx.commit()?;
                Ok(changed)
            }
        }
    }
}

enum TxInner<'a> {
    Sqlite(Gated<'a>),
    Postgres(PgTx<'a>),
}

/// A PostgreSQL transaction: rolled back when dropped unless it ended.
struct PgTx<'a> {
    conn: std::cell::Ref<'a, PgConn>,
    done: bool,
}

impl PgTx<'_> {
    fn commit(mut self) -> Result<(), Error> {
        // Committed or not, the transaction is over.
        self.done = true;
        self.conn.batch("COMMIT", Within::Write)
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.batch("ROLLBACK", Within::Read);
        }
    }
}

/// A write transaction. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx<'a> {
    db: &'a Db,
    inner: TxInner<'a>,
}

impl Tx<'_> {
    /// The store's file, or URL without its password.
    pub fn location(&self) -> &str {
        &self.db.location
    }

    /// Statements without parameters or results (a schema step).
    pub(crate) fn batch(&self, sql: &str) -> Result<(), Error> {
        match &self.inner {
            TxInner::Sqlite(gated) => gated
                .tx
                .execute_batch(sql)
                .map_err(|e| crate::sqlite::failure(std::path::Path::new(&*self.db.location), &e)),
            TxInner::Postgres(tx) => tx.conn.batch(sql, Within::Write),
        }
    }

    /// Makes every write of the transaction durable at once.
    pub fn commit(self) -> Result<(), Error> {
        match self.inner {
            TxInner::Sqlite(gated) => gated
                .tx
                .commit()
                .map_err(|e| crate::sqlite::failure(std::path::Path::new(&*self.db.location), &e)),
            TxInner::Postgres(tx) => tx.commit(),
        }
    }

    /// Inserts `rows` into `table (columns)`: one `COPY … FROM STDIN BINARY` on PostgreSQL,
    /// a prepared `INSERT` per row on SQLite. Every row has one value per column, of the
    /// same kind in every row.
    pub fn insert_rows(&self, table: &str, columns: &[&str], rows: &[Vec<Arg<'_>>]) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        if rows.iter().any(|row| row.len() != columns.len()) {
            return Err(Error::failed(
                &*self.db.location,
                format!("a row for {table} has the wrong number of values"),
            ));
        }
        match &self.inner {
            TxInner::Sqlite(gated) => {
                let marks: Vec<String> = (1..=columns.len()).map(|n| format!("?{n}")).collect();
                let sql =
                    format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), marks.join(", "));
                for row in rows {
                    sqlite_exec(&gated.tx, &sql, row, &self.db.location)?;
                }
                Ok(())
            }
            TxInner::Postgres(tx) => {
                let types: Vec<Type> = rows[0].iter().map(|arg| arg.pg().1).collect();
                let rows: Vec<Vec<Param<'_>>> = rows.iter().map(|row| pg_params(row)).collect();
                tx.conn.copy_in(&format!("{table} ({})", columns.join(", ")), &types, &rows)?;
                Ok(())
            }
        }
    }
}

impl Sql for Tx<'_> {
    fn rows(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, Error> {
        match &self.inner {
            TxInner::Sqlite(gated) => sqlite_rows(&gated.tx, sql, args, &self.db.location),
            TxInner::Postgres(tx) => {
                pg_rows(&tx.conn.query(&dollars(sql), &pg_params(args), Within::Write)?, &self.db.location)
            }
        }
    }

    fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, Error> {
        match &self.inner {
            TxInner::Sqlite(gated) => sqlite_exec(&gated.tx, sql, args, &self.db.location),
            TxInner::Postgres(tx) => tx.conn.execute(&dollars(sql), &pg_params(args), Within::Write),
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
}
