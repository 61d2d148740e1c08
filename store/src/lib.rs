//! Where escx keeps its data (spec: settlement.md §5.4–5.5, licensing.md §4, metering.md
//! §6.3–6.4, service.md §4).
//!
//! Every store of the escx crates (the ledger, the issuer, the operator, the customer's
//! meter) keeps its own schema and rules and writes its SQL once, for both engines; this
//! crate is everything beneath that:
//!
//! - [`Location`]: where a database is, a SQLite path or a PostgreSQL URL, parsed once and
//!   printed without its password; [`Location::of_dir`] for the directories that name their
//!   database in `database.url`.
//! - [`Db::open`]: SQLite files created 0600 (in 0700 directories) without ever opening
//!   a file SQLite may hold, WAL, `synchronous=FULL`, a busy timeout; PostgreSQL over TLS as
//!   `sslmode` says ([`pg::tls`]), with no state kept in the server session, so a pooler in
//!   transaction mode may sit in front; migrations in one transaction under a lock, a newer
//!   schema refused ([`migrate`]).
//! - [`Db::begin`], [`Tx`], [`Sql`]: one statement text for both engines, write
//!   transactions at serializable isolation, bulk inserts ([`Tx::insert_rows`]).
//! - [`retry::while_busy`]: the one rule for running a refused transaction again.
//! - [`Error`]: one error, [`Kind::Busy`], [`Kind::Failed`], [`Kind::Corrupt`] or
//!   [`Kind::Schema`], with the codes `store-busy`, `store-failed`, `store-corrupt`,
//!   `store-schema`.
//!
//! With the feature `test-util`, the module `test_util` starts throwaway PostgreSQL clusters (with
//! TLS, and PgBouncer in front) and reads every stored cell of a store.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod db;
mod error;
mod location;
pub mod migrate;
pub mod pg;
pub mod retry;
mod sqlite;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use db::{Arg, Cell, Db, IN_LIST_MAX, Row, Sql, Tx};
pub use error::{Error, Kind};
pub use location::{DATABASE_URL_FILE, Location, PgUrl, create_empty_dir, redact, write_database_url};
pub use migrate::{Mark, Migrations, Mode, Schema};
pub use retry::Retryable;
pub use sqlite::{BUSY_TIMEOUT_SECS, connect as sqlite_connection};
