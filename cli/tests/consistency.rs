//! Consistency across processes on the SQLite stores (spec: service.md §4, settlement.md
//! §5.4): `escx serve` holds the issuer, operator and ledger databases open while the
//! commands that read and write them run beside it, as the README's way of working has
//! them. Every command must see every write committed before it started, the service must
//! see the commands' writes (the newest CRL, a new account, a new statement), no process
//! may delete a write-ahead log another still has open, and every database must pass
//! `PRAGMA integrity_check` at the end. The same holds with two services on one directory.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::{Server, http};
use serde_json::Value;

/// Rounds of the interleaving test; each runs a dozen operations.
const ROUNDS: u64 = 20;
/// The operator part of the services judges time this far ahead, so every hour reported
/// has ended for it.
const AHEAD_SECS: u64 = (ROUNDS + 3) * 3600;

fn escx(dir: &Path) -> Command {
    let mut command = Command::cargo_bin("escx").unwrap();
    command.current_dir(dir).env_remove("ESCX_PASSPHRASE").env_remove("ESCX_ACCOUNT_TOKEN");
    command
}

/// Runs `escx ARGS --json`, which must succeed; its output. Counts the operation.
fn run(dir: &Path, ops: &mut u64, args: &[&str]) -> Value {
    *ops += 1;
    let out = escx(dir).args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "escx {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("escx {args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// `GET path` on `server`, which must answer 200; the body. Counts the operation.
fn get(server: &Server, ops: &mut u64, path: &str) -> Vec<u8> {
    *ops += 1;
    let (status, _, body) = http(&server.addr, "GET", path, &[], b"");
    assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
    body
}

/// An issuer, an operator and a ledger in `dir`, as the README sets them up, with a
/// wallet `w` holding a metered license; the first purchase account's token.
fn setup(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("thermal")).unwrap();
    std::fs::write(dir.join("thermal/manifest.toml"), common::METERED_MANIFEST).unwrap();
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests/thermal.toml"), common::METERED_MANIFEST).unwrap();
    for args in [
        &["key", "generate", "--out", "acme", "--unencrypted"][..],
        &["key", "generate", "--out", "op", "--unencrypted"],
        &["package", "pack", "thermal", "-o", "thermal.escx", "--key", "acme.key"],
        &["issuer", "init", "issuer", "--unencrypted"],
        &["issuer", "publish", "issuer", "-o", "issuer.pub"],
        &["issuer", "register-package", "issuer", "thermal.escx", "--pubkey", "acme.pub"],
        &["issuer", "crl", "issuer", "-o", "crl.cbor"],
        &["operator", "init", "op", "--issuer", "issuer.pub"],
        &["operator", "package", "op", "thermal.escx", "--pubkey", "acme.pub"],
        &["operator", "crl", "op", "crl.cbor"],
        &["settle", "init", "ledger.db", "--platform-bps", "1500"],
    ] {
        escx(dir).args(args).assert().success();
    }
    let mut ops = 0;
    let token = run(dir, &mut ops, &["issuer", "account", "add", "issuer", "setup"])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let wallet = ["--wallet", "w", "--package", "acme/thermal"];
    let tier = ["--tier", "metered", "--count", "1", "--issuer", "issuer.pub", "-o", "req.cbor"];
    for args in [
        &[&["license", "request"][..], &wallet, &tier].concat()[..],
        &["issuer", "issue", "issuer", "req.cbor", "-o", "resp.cbor"],
        &["license", "finalize", "resp.cbor", "--wallet", "w"],
        &[&["license", "redeem"][..], &wallet, &["-o", "redeem.sealed"]].concat(),
        &["issuer", "redeem", "issuer", "redeem.sealed", "-o", "lic.sealed"],
        &["license", "install", "lic.sealed", "--wallet", "w"],
    ] {
        escx(dir).args(args).assert().success();
    }
    token
}

/// The database files of `dir`'s stores.
fn databases(dir: &Path) -> [PathBuf; 3] {
    [dir.join("issuer/issuer.sqlite"), dir.join("op/operator.sqlite"), dir.join("ledger.db")]
}

/// Fails if process `pid` holds a database file or write-ahead log that has been deleted:
/// another process removed it while this one still had it open.
fn assert_no_deleted_database(pid: u32) {
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let target = target.display().to_string();
        assert!(
            !(target.ends_with(" (deleted)")
                && (target.contains(".sqlite") || target.contains(".db") || target.contains("-wal"))),
            "process {pid} holds {target}: another process deleted it under an open connection"
        );
    }
}

/// The inode of each database's write-ahead log: while a service holds a connection it
/// must never change (a new inode means the log was deleted and made again).
fn wal_inodes(dir: &Path) -> HashMap<PathBuf, u64> {
    databases(dir)
        .iter()
        .map(|db| {
            let wal = PathBuf::from(format!("{}-wal", db.display()));
            let inode = std::fs::metadata(&wal)
                .unwrap_or_else(|e| panic!("{}: {e} (a service holds the database open)", wal.display()))
                .ino();
            (wal, inode)
        })
        .collect()
}

fn assert_integrity(dir: &Path) {
    for db in databases(dir) {
        let connection = rusqlite::Connection::open(&db).unwrap();
        let verdict: String = connection.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(verdict, "ok", "{}", db.display());
    }
}

/// `ROUNDS` rounds of purchases, CRLs, accounts, reports, evidence, settlement and audits,
/// alternating between `servers` (one or two services on the same directories) and the
/// commands; checks after every step that each side sees the other's writes. The number
/// of operations run.
fn interleave(dir: &Path, servers: &[Server], first_token: String) -> u64 {
    let mut ops = 0;
    let now = escx::now_unix().0;
    // Usage from the hour after next on, as the README records it.
    let start_hour = now - now % 3600 + 2 * 3600;
    let later = format!("@{}", now + AHEAD_SECS);
    let inodes = wal_inodes(dir);
    let mut token = first_token;
    for round in 0..ROUNDS {
        let server = &servers[usize::try_from(round).unwrap() % servers.len()];
        let url = server.url();
        // A purchase through the service, with the account a command added last round: the
        // command then lists every sale.
        run(
            dir,
            &mut ops,
            &["license", "buy", "--server", &url, "--package", "acme/thermal", "--tier", "standard"]
                .into_iter()
                .chain(["--wallet", "buyer", "--account-token", &token, "--count", "1"])
                .collect::<Vec<_>>(),
        );
        let sales = run(dir, &mut ops, &["issuer", "sales", "issuer"]);
        // Setup sold one metered token.
        assert_eq!(
            sales["sales"].as_array().map(Vec::len),
            Some(usize::try_from(round).unwrap() + 2),
            "round {round}: `issuer sales` misses a sale the service committed: {sales}"
        );
        // A CRL signed by a command is the one every service serves.
        let out = format!("crl-{round}.cbor");
        run(dir, &mut ops, &["issuer", "crl", "issuer", "-o", &out]);
        for other in servers {
            let served = get(other, &mut ops, "/v1/crl");
            assert_eq!(
                served,
                std::fs::read(dir.join(&out)).unwrap(),
                "round {round}: a service serves an older CRL than the newest signed"
            );
        }
        // An account added by a command; the next round's purchase uses it.
        token = run(dir, &mut ops, &["issuer", "account", "add", "issuer", &format!("user{round}")])["token"]
            .as_str()
            .unwrap()
            .to_owned();
        // An hour of metered usage, reported once to a service and once by a command (in
        // turns): the second copy is a duplicate, so each side saw the other's write.
        let hour = format!("@{}", start_hour + round * 3600 + 600);
        let wallet = ["--wallet", "w", "--package", "acme/thermal"];
        run(
            dir,
            &mut ops,
            &[
                &["meter", "record", "--issuer", "issuer.pub"][..],
                &wallet,
                &["--unit", "invocations", "--at", &hour],
            ]
            .concat(),
        );
        let file = format!("report-{round}.cbor");
        run(
            dir,
            &mut ops,
            &[&["meter", "report"][..], &wallet, &["--hour", &hour, "--at", &later, "-o", &file]].concat(),
        );
        let body = std::fs::read(dir.join(&file)).unwrap();
        let ingest = |ops: &mut u64| run(dir, ops, &["operator", "ingest", "op", &file, "--at", &later]);
        let post = |ops: &mut u64| {
            *ops += 1;
            let (status, _, answer) = http(&server.addr, "POST", "/v1/reports", &[], &body);
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
            json(&answer)["outcome"].as_str().unwrap().to_owned()
        };
        if round % 2 == 0 {
            assert_eq!(post(&mut ops), "stored");
            let again = ingest(&mut ops);
            assert_eq!(again["duplicates"], 1, "round {round}: {again}");
        } else {
            let first = ingest(&mut ops);
            assert_eq!(first["stored"], 1, "round {round}: {first}");
            assert_eq!(post(&mut ops), "duplicate", "round {round}: the service misses a stored report");
        }
        let evidence = run(dir, &mut ops, &["operator", "evidence", "op"]);
        assert_eq!(evidence["evidence"].as_array().map(Vec::len), Some(0), "{evidence}");
        // Every sale so far settled by a command; the services serve its new statement.
        let events = escx(dir).args(["issuer", "sales", "issuer", "--events"]).output().unwrap();
        ops += 1;
        assert!(events.status.success());
        std::fs::write(dir.join("events.json"), &events.stdout).unwrap();
        run(
            dir,
            &mut ops,
            &["settle", "run", "ledger.db", "--events", "events.json", "--manifests", "manifests"]
                .into_iter()
                .chain(["--operator-key", "op.key"])
                .collect::<Vec<_>>(),
        );
        for other in servers {
            let listed = json(&get(other, &mut ops, "/v1/statements"));
            assert_eq!(
                listed["statements"].as_array().map(Vec::len),
                Some(usize::try_from(round).unwrap() + 1),
                "round {round}: a service misses a statement a command committed: {listed}"
            );
        }
        let audit = run(dir, &mut ops, &["ledger", "audit", "ledger.db"]);
        assert_eq!(audit["ok"], true, "{audit}");
        for server in servers {
            assert_no_deleted_database(server.child.id());
        }
        assert_eq!(wal_inodes(dir), inodes, "round {round}: a write-ahead log was deleted and made again");
    }
    ops
}

#[test]
fn commands_and_the_service_see_each_others_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = setup(dir);
    let server = Server::start(
        dir,
        &["--issuer", "issuer", "--operator", "op", "--ledger", "ledger.db"]
            .into_iter()
            .chain(["--operator-clock-ahead", &AHEAD_SECS.to_string()])
            .collect::<Vec<_>>(),
    );
    let ops = interleave(dir, std::slice::from_ref(&server), token);
    assert!(ops >= 200, "{ops} operations");
    assert!(server.stop().success(), "SIGTERM stops the service with status 0");
    assert_integrity(dir);
}

#[test]
fn two_services_on_one_directory_and_the_commands_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = setup(dir);
    let args: Vec<String> = ["--issuer", "issuer", "--operator", "op", "--ledger", "ledger.db"]
        .into_iter()
        .map(str::to_owned)
        .chain(["--operator-clock-ahead".to_owned(), AHEAD_SECS.to_string()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let servers = [Server::start(dir, &args), Server::start(dir, &args)];
    let ops = interleave(dir, &servers, token);
    assert!(ops >= 200, "{ops} operations");
    for server in servers {
        assert!(server.stop().success(), "SIGTERM stops each service with status 0");
    }
    assert_integrity(dir);
}
