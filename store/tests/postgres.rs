//! The storage layer against a real PostgreSQL (ignored by the plain test command; `.ci/run`
//! runs them): TLS as `sslmode` says, and correctness behind PgBouncer in transaction
//! pooling, where every transaction may land on another server connection.

use std::sync::Arc;

use escx_store::test_util::{Cluster, unrelated_ca};
use escx_store::{Arg, Db, Kind, Location, Mark, Migrations, Mode, Schema, Sql};

/// A store with its own PostgreSQL schema, as the issuer's and the operator's.
static NAMED: Schema = Schema {
    what: "test store",
    pg_schema: Some("escx_test"),
    lock: "escx v1 test store lock",
    sqlite: Migrations {
        steps: &["CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"],
        mark: Mark::Meta,
    },
    postgres: Migrations {
        steps: &["CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                  CREATE TABLE counter (n BIGINT NOT NULL); INSERT INTO counter VALUES (0)"],
        mark: Mark::Meta,
    },
};

/// A store in the connection's default schema, with a table of the same name as the other
/// store's, as the ledger's `meta` beside the issuer's.
static DEFAULT: Schema = Schema {
    what: "other store",
    pg_schema: None,
    lock: "escx v1 other store lock",
    sqlite: Migrations { steps: &[], mark: Mark::VersionTable },
    postgres: Migrations {
        steps: &["CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                  CREATE TABLE counter (n BIGINT NOT NULL); INSERT INTO counter VALUES (0)"],
        mark: Mark::VersionTable,
    },
};

fn open(url: &str, schema: &'static Schema) -> Db {
    Db::open(&Location::parse(url), schema, Mode::OpenOrCreate, |tx| {
        tx.exec("INSERT INTO meta (key, value) VALUES ('who', ?1)", &[Arg::Text(schema.what)]).map(drop)
    })
    .unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn encrypted(db: &Db) -> bool {
    db.one("SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .unwrap()
        .int(0)
        .unwrap()
        == 1
}

#[test]
#[ignore = "needs PostgreSQL's server binaries; run with --ignored"]
fn tls_follows_sslmode() {
    let cluster = Cluster::start_tls();
    let ca = cluster.ca().display().to_string();
    // require: encrypted, the certificate not checked.
    let db = open(&cluster.tcp_database("127.0.0.1", "sslmode=require"), &NAMED);
    assert!(encrypted(&db));
    // verify-full: the chain to the CA and the name, by host name and by address.
    for host in ["localhost", "127.0.0.1"] {
        let db = open(&cluster.tcp_database(host, &format!("sslmode=verify-full&sslrootcert={ca}")), &NAMED);
        assert!(encrypted(&db), "{host}");
    }
    let db = open(&cluster.tcp_database("localhost", &format!("sslmode=verify-ca&sslrootcert={ca}")), &NAMED);
    assert!(encrypted(&db));
    // Loopback without sslmode is libpq's prefer: TLS, since the server offers it.
    let db = open(&cluster.tcp_database("127.0.0.1", ""), &NAMED);
    assert!(encrypted(&db));

    // A certificate from another CA is refused, and says why.
    let dir = tempfile::tempdir().unwrap();
    let other = unrelated_ca(dir.path()).display().to_string();
    for mode in ["verify-full", "verify-ca"] {
        let url = cluster.tcp_database("localhost", &format!("sslmode={mode}&sslrootcert={other}"));
        let error = Db::open(&Location::parse(&url), &NAMED, Mode::OpenOrCreate, |_| Ok(())).err().unwrap();
        assert_eq!(error.kind(), Kind::Failed);
        let text = error.to_string();
        assert!(text.contains("UnknownIssuer") && text.contains(&format!("sslmode={mode}")), "{text}");
    }
    // A server that requires TLS refuses a plain connection.
    let url = cluster.tcp_database("127.0.0.1", "sslmode=disable");
    let error = Db::open(&Location::parse(&url), &NAMED, Mode::OpenOrCreate, |_| Ok(())).err().unwrap();
    assert!(error.to_string().contains("no encryption"), "{error}");
}

/// Adds one to a store's counter in `rounds` write transactions, each from a fresh read.
fn count(db: &Db, rounds: u64, exclusive: bool) {
    for _ in 0..rounds {
        escx_store::retry::while_busy(escx_store::Error::is_busy, || {
            let tx = if exclusive { db.begin_exclusive()? } else { db.begin()? };
            let n = tx.one("SELECT n FROM counter", &[])?.int(0)?;
            tx.exec("UPDATE counter SET n = ?1", &[Arg::Int(n + 1)])?;
            tx.commit()
        })
        .unwrap();
    }
}

#[test]
#[ignore = "needs PostgreSQL's and PgBouncer's binaries; run with --ignored"]
fn transaction_pooling_carries_every_store() {
    let cluster = Cluster::start();
    let database = cluster.database();
    // One server connection for every client: each transaction of each client may run on
    // the connection another client used last.
    let pooler = cluster.pgbouncer(1);
    let url = pooler.url(&database);
    let named = open(&url, &NAMED);
    let default = open(&url, &DEFAULT);
    // Each store reads its own `meta`, whoever used the server connection before.
    for _ in 0..20 {
        assert_eq!(
            named.one("SELECT value FROM meta WHERE key = 'who'", &[]).unwrap().text(0).unwrap(),
            "test store"
        );
        assert_eq!(
            default.one("SELECT value FROM meta WHERE key = 'who'", &[]).unwrap().text(0).unwrap(),
            "other store"
        );
    }
    // Writers on several clients: serializable ones retried, exclusive ones taking turns
    // under the transaction lock; no increment is lost.
    let url = Arc::new(url);
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let (schema, exclusive) = if i % 2 == 0 { (&NAMED, false) } else { (&DEFAULT, true) };
                count(&open(&url, schema), 25, exclusive);
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(named.one("SELECT n FROM counter", &[]).unwrap().int(0).unwrap(), 50);
    assert_eq!(default.one("SELECT n FROM counter", &[]).unwrap().int(0).unwrap(), 50);
    // Bulk inserts go through too.
    let tx = named.begin().unwrap();
    tx.exec("CREATE TABLE bulk (a BIGINT, b BYTEA, c TEXT)", &[]).unwrap();
    tx.insert_rows("bulk", &["a", "b", "c"], &vec![vec![Arg::Int(1), Arg::Bytes(b"x"), Arg::Text("y")]; 100])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(named.one("SELECT count(*) FROM bulk", &[]).unwrap().int(0).unwrap(), 100);
}
