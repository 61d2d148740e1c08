//! The ledger's tables on SQLite and PostgreSQL, version by version (settlement.md §5.4).

use escx_store::{Mark, Migrations, Schema};

/// SQLite version 1: the tables of the first release.
const SQLITE_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    UNIQUE (name, currency)
);
CREATE TABLE settlements (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    content BLOB NOT NULL,
    kind TEXT NOT NULL,
    package TEXT NOT NULL,
    tier TEXT NOT NULL,
    gross INTEGER NOT NULL CHECK (gross >= 0),
    currency TEXT NOT NULL,
    at INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'SETTLED', 'CANCELLED', 'DISPUTED')),
    refund_of TEXT REFERENCES settlements (id),
    batch INTEGER NOT NULL
);
CREATE INDEX settlements_at ON settlements (at);
CREATE TABLE transfers (
    id INTEGER PRIMARY KEY,
    settlement TEXT NOT NULL REFERENCES settlements (id),
    debit INTEGER NOT NULL REFERENCES accounts (id),
    credit INTEGER NOT NULL REFERENCES accounts (id),
    amount INTEGER NOT NULL CHECK (amount > 0),
    CHECK (debit <> credit)
);
CREATE INDEX transfers_settlement ON transfers (settlement);
CREATE INDEX transfers_debit ON transfers (debit);
CREATE INDEX transfers_credit ON transfers (credit);
CREATE TABLE recoupment (
    party TEXT NOT NULL,
    currency TEXT NOT NULL,
    total INTEGER NOT NULL CHECK (total >= 0),
    PRIMARY KEY (party, currency)
);
CREATE TABLE settlement_recoup (
    settlement TEXT NOT NULL REFERENCES settlements (id),
    party TEXT NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (settlement, party)
);
CREATE TABLE statements (
    seq INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    issued_at INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    bytes BLOB NOT NULL
);
CREATE TABLE statement_openings (
    seq INTEGER NOT NULL REFERENCES statements (seq),
    entry INTEGER NOT NULL,
    party TEXT,
    amount INTEGER NOT NULL,
    blinding BLOB NOT NULL
);
CREATE INDEX statement_openings_party ON statement_openings (seq, party);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

/// SQLite version 2: two-phase budget holds and disputes.
const SQLITE_V2: &str = "
CREATE TABLE holds (
    settlement TEXT PRIMARY KEY REFERENCES settlements (id),
    event BLOB NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    placed_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'CAPTURED', 'VOIDED')),
    captured INTEGER,
    closed_at INTEGER
);
CREATE TABLE disputes (
    id INTEGER PRIMARY KEY,
    settlement TEXT NOT NULL REFERENCES settlements (id),
    opened_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    resolved_at INTEGER,
    outcome TEXT CHECK (outcome IN ('upheld', 'reversed')),
    resolution TEXT
);
CREATE UNIQUE INDEX disputes_open ON disputes (settlement) WHERE resolved_at IS NULL;
";

/// PostgreSQL version 1: the tables of SQLite version 1, in PostgreSQL's types. Settlement
/// ids sort bytewise (`COLLATE "C"`), as SQLite's do, so a range on them is a prefix scan.
const POSTGRES_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE accounts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    currency TEXT NOT NULL,
    UNIQUE (name, currency)
);
CREATE TABLE settlements (
    id TEXT PRIMARY KEY COLLATE \"C\",
    event_id TEXT NOT NULL UNIQUE,
    content BYTEA NOT NULL,
    kind TEXT NOT NULL,
    package TEXT NOT NULL,
    tier TEXT NOT NULL,
    gross BIGINT NOT NULL CHECK (gross >= 0),
    currency TEXT NOT NULL,
    at BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'SETTLED', 'CANCELLED', 'DISPUTED')),
    refund_of TEXT REFERENCES settlements (id),
    batch BIGINT NOT NULL
);
CREATE INDEX settlements_at ON settlements (at);
CREATE INDEX settlements_refund_of ON settlements (refund_of);
CREATE TABLE transfers (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    settlement TEXT NOT NULL REFERENCES settlements (id),
    debit BIGINT NOT NULL REFERENCES accounts (id),
    credit BIGINT NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL CHECK (amount > 0),
    CHECK (debit <> credit)
);
CREATE INDEX transfers_settlement ON transfers (settlement);
CREATE INDEX transfers_debit ON transfers (debit);
CREATE INDEX transfers_credit ON transfers (credit);
CREATE TABLE recoupment (
    party TEXT NOT NULL,
    currency TEXT NOT NULL,
    total BIGINT NOT NULL CHECK (total >= 0),
    PRIMARY KEY (party, currency)
);
CREATE TABLE settlement_recoup (
    settlement TEXT NOT NULL REFERENCES settlements (id),
    party TEXT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (settlement, party)
);
CREATE TABLE statements (
    seq BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL UNIQUE,
    issued_at BIGINT NOT NULL,
    entries BIGINT NOT NULL,
    bytes BYTEA NOT NULL
);
CREATE TABLE statement_openings (
    seq BIGINT NOT NULL REFERENCES statements (seq),
    entry BIGINT NOT NULL,
    party TEXT,
    amount BIGINT NOT NULL,
    blinding BYTEA NOT NULL
);
CREATE INDEX statement_openings_party ON statement_openings (seq, party);
CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

/// PostgreSQL version 2: two-phase budget holds and disputes.
const POSTGRES_V2: &str = "
CREATE TABLE holds (
    settlement TEXT PRIMARY KEY REFERENCES settlements (id),
    event BYTEA NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    placed_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('PENDING', 'CAPTURED', 'VOIDED')),
    captured BIGINT,
    closed_at BIGINT
);
CREATE TABLE disputes (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    settlement TEXT NOT NULL REFERENCES settlements (id),
    opened_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    resolved_at BIGINT,
    outcome TEXT CHECK (outcome IN ('upheld', 'reversed')),
    resolution TEXT
);
CREATE UNIQUE INDEX disputes_open ON disputes (settlement) WHERE resolved_at IS NULL;
";

const SQLITE_STEPS: &[&str] = &[SQLITE_V1, SQLITE_V2];

/// The schema version this build writes (the same number on both engines).
#[allow(clippy::cast_possible_wrap)] // a handful of steps, known at compile time
pub const SCHEMA_VERSION: i64 = SQLITE_STEPS.len() as i64;

/// The ledger's tables on either engine: the version in SQLite's `user_version`, or in the
/// table `escx_schema` of the database's default schema (or the one the URL's
/// `options=-csearch_path=…` names).
pub(super) static SCHEMA: Schema = Schema {
    what: "ledger",
    pg_schema: None,
    lock: "escx v1 ledger writer lock",
    sqlite: Migrations { steps: SQLITE_STEPS, mark: Mark::UserVersion },
    postgres: Migrations { steps: &[POSTGRES_V1, POSTGRES_V2], mark: Mark::VersionTable },
};
