//! The settlement commands and `escx serve --ledger` on a PostgreSQL URL, against a
//! throwaway cluster (settlement.md §5.5): concurrent `settle run` processes on one
//! database give one linear, verifying chain; two service nodes serve the same statements.
//! Ignored by `cargo test`, which needs nothing installed; `.ci/run` runs them with
//! `--ignored` after installing PostgreSQL when it is missing.

mod common;
use escx_store::test_util as pg;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;

use assert_cmd::Command;
use serde_json::Value;

fn escx(dir: &Path) -> Command {
    let mut command = Command::cargo_bin("escx").unwrap();
    command.current_dir(dir);
    command
}

fn run(dir: &Path, args: &[&str]) -> Value {
    let out = escx(dir).args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "escx {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn events(prefix: &str, count: usize) -> String {
    let records: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"{{"id": "{prefix}-{i}", "time": 1790812800, "package": "acme/thermal", "tier": "standard", "kind": "sale", "gross": "{}.00", "currency": "USD"}}"#,
                10 + i
            )
        })
        .collect();
    format!("[{}]", records.join(","))
}

/// A directory with the manifests and an operator key (`op.key`), after `escx settle init`
/// of the ledger at `url`.
fn ledger_at(url: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests/thermal.toml"), common::METERED_MANIFEST).unwrap();
    escx(dir).args(["key", "generate", "--out", "op", "--unencrypted"]).assert().success();
    run(dir, &["settle", "init", url, "--platform-bps", "1500"]);
    tmp
}

/// Buys one token of acme/thermal `tier` into `wallet` from the issuer directory `issuer`
/// with the file commands (request, issue, finalize).
fn buy_token(dir: &Path, issuer: &str, wallet: &str, tier: &str) {
    escx(dir)
        .args(["license", "request", "--issuer", "issuer.pub", "--package", "acme/thermal", "--tier", tier])
        .args(["--wallet", wallet, "-o", "req.cbor", "--force"])
        .assert()
        .success();
    escx(dir).args(["issuer", "issue", issuer, "req.cbor", "-o", "resp.cbor", "--force"]).assert().success();
    escx(dir).args(["license", "finalize", "resp.cbor", "--wallet", wallet]).assert().success();
}

/// Seals the redemption of a token of `wallet` into `r.sealed`; its bytes.
fn seal_redemption(dir: &Path, wallet: &str) -> Vec<u8> {
    escx(dir)
        .args([
            "license",
            "redeem",
            "--wallet",
            wallet,
            "--package",
            "acme/thermal",
            "-o",
            "r.sealed",
            "--force",
        ])
        .assert()
        .success();
    std::fs::read(dir.join("r.sealed")).unwrap()
}

/// `writers` processes each settle their own `count` events (ids `PREFIX{w}-{i}`) into the
/// ledger at `url` at once, in batches of 2; each must succeed.
fn settle_at_once(dir: &Path, url: &str, prefix: &str, writers: usize, count: usize) {
    for w in 0..writers {
        std::fs::write(dir.join(format!("events-{w}.json")), events(&format!("{prefix}{w}"), count)).unwrap();
    }
    let children: Vec<_> = (0..writers)
        .map(|w| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("escx"))
                .current_dir(dir)
                .args(["settle", "run", url, "--events", &format!("events-{w}.json")])
                .args(["--manifests", "manifests", "--operator-key", "op.key", "--batch-size", "2", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn get(addr: &str, path: &str) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    answer[split + 4..].to_vec()
}

#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn settle_commands_and_two_service_nodes_share_one_postgres_ledger() {
    let cluster = pg::Cluster::start();
    let url = cluster.database();
    let tmp = ledger_at(&url);
    let dir = tmp.path();
    // A second init on the same database is refused: nothing is overwritten.
    let out = escx(dir).args(["settle", "init", &url, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));

    // Three operators' processes settle their own events into the one ledger at once.
    settle_at_once(dir, &url, "w", 3, 12);
    // A re-run settles nothing twice.
    let again = run(
        dir,
        &[
            "settle",
            "run",
            &url,
            "--events",
            "events-0.json",
            "--manifests",
            "manifests",
            "--operator-key",
            "op.key",
        ],
    );
    assert_eq!(
        (again["report"]["settled"].as_u64(), again["report"]["unchanged"].as_u64()),
        (Some(0), Some(12)),
        "{again}"
    );
    run(dir, &["ledger", "audit", &url]);
    let list = run(dir, &["statement", "list", &url]);
    let seqs: Vec<u64> =
        list["statements"].as_array().unwrap().iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=18).collect::<Vec<u64>>(), "18 batches of 2, one linear chain: {list}");
    run(dir, &["statement", "export", &url, "--dir", "statements"]);
    run(dir, &["audit", "statements", "statements", "--operator-pub", "op.pub"]);

    // Two service nodes on the same database serve the same signed statements.
    let nodes: Vec<(std::process::Child, String)> =
        (0..2).map(|_| common::serve(dir, &["--ledger", &url])).collect();
    let exported = std::fs::read(dir.join("statements/statement-18.cbor")).unwrap();
    for (_, addr) in &nodes {
        assert_eq!(get(addr, "/v1/statements/18"), exported);
    }
    for (mut child, _) in nodes {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The ledger's writers and readers through PgBouncer in transaction pooling with one
/// server connection for every client (storage.md §3.2): concurrent `settle run` processes
/// take turns under the ledger's transaction lock and give one linear chain (a session
/// lock there would be held by whichever client last used the shared connection), `ledger
/// audit` and the statement commands work (they failed with `prepared statement "s3"
/// already exists`), and a service node serving the ledger stops cleanly on SIGTERM in the
/// middle of a burst of reads.
#[test]
#[ignore = "needs PostgreSQL's and PgBouncer's binaries; .ci/run runs it"]
fn the_ledger_works_behind_a_transaction_pooler_and_its_node_stops_on_sigterm() {
    let cluster = pg::Cluster::start();
    let pooler = cluster.pgbouncer(1);
    let url = pooler.url(&cluster.database());
    let tmp = ledger_at(&url);
    let dir = tmp.path();
    settle_at_once(dir, &url, "p", 4, 10);
    let audit = run(dir, &["ledger", "audit", &url]);
    assert_eq!(audit["audit"]["settlements"].as_u64(), Some(40), "{audit}");
    let list = run(dir, &["statement", "list", &url]);
    let seqs: Vec<u64> =
        list["statements"].as_array().unwrap().iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>(), "20 batches of 2, one linear chain: {list}");
    run(dir, &["statement", "export", &url, "--dir", "statements"]);
    run(dir, &["audit", "statements", "statements", "--operator-pub", "op.pub"]);
    run(dir, &["ledger", "balances", &url]);

    let log = dir.join("node.log");
    let (node, addr) = common::serve_logging(dir, &["--ledger", &url], logfile(&log));
    let reads: Vec<Vec<u8>> = vec![Vec::new(); 40];
    let answers = terminate_during_burst((node, log), &addr, "/v1/statements", &reads);
    let answered: Vec<_> = answers.into_iter().flatten().filter(|(status, _)| *status != 503).collect();
    assert!(!answered.is_empty());
    for (status, body) in answered {
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let list: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(list["statements"].as_array().map(Vec::len), Some(20));
    }
}

/// Starts `escx serve` with `args`, rate limits out of the way.
fn node(dir: &Path, args: &[&str]) -> (std::process::Child, String) {
    common::serve(dir, &[&["--redeem-rate", "100000"][..], args].concat())
}

/// Sends every body of `bodies` to `path` of the node at `addr` at once (an empty body as a
/// GET) and sends the node
/// SIGTERM as soon as one is answered: the node stops gracefully (exit 0, which a
/// PostgreSQL-backed node did not: it aborted dropping its database client on a runtime
/// thread). The answers, `None` where the stop came first.
fn terminate_during_burst(
    (node, log): (std::process::Child, std::path::PathBuf),
    addr: &str,
    path: &'static str,
    bodies: &[Vec<u8>],
) -> Vec<Answer> {
    let (answered, first) = std::sync::mpsc::channel::<()>();
    let sends: Vec<_> = bodies
        .iter()
        .map(|body| {
            let (addr, body, answered) = (addr.to_owned(), body.clone(), answered.clone());
            std::thread::spawn(move || {
                let answer =
                    if body.is_empty() { request(&addr, "GET", path, &[]) } else { post(&addr, path, &body) };
                if answer.is_some() {
                    let _ = answered.send(());
                }
                answer
            })
        })
        .collect();
    first.recv_timeout(std::time::Duration::from_secs(30)).expect("the node answers");
    let status = std::process::Command::new("kill").args(["-TERM", &node.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = node.wait_with_output().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(output.status.success(), "SIGTERM during a burst: {:?}\n{log}", output.status);
    // A panic on a runtime thread need not change the exit status; the log shows it.
    assert!(!log.contains("panicked"), "the node panicked while stopping:\n{log}");
    sends.into_iter().map(|h| h.join().unwrap()).collect()
}

/// A new file for a node's log.
fn logfile(path: &std::path::Path) -> std::fs::File {
    std::fs::File::create(path).unwrap()
}

/// A status and body, or `None` when the connection failed or broke.
type Answer = Option<(u16, Vec<u8>)>;

/// One POST.
fn post(addr: &str, path: &str, body: &[u8]) -> Answer {
    request(addr, "POST", path, body)
}

/// One request.
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> Answer {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(&answer[9..12]).ok()?.parse().ok()?;
    Some((status, answer[split + 4..].to_vec()))
}

/// A directory holding issuer `name` on the database at `url`, its bundle `issuer.pub`,
/// and acme/thermal (paid) packed as `p.escx` with key `acme` and registered.
fn paid_issuer_at(url: &str, name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("pkg")).unwrap();
    std::fs::write(dir.join("pkg/manifest.toml"), common::PAID_MANIFEST).unwrap();
    for args in [
        &["key", "generate", "--out", "acme", "--unencrypted"][..],
        &["package", "pack", "pkg", "-o", "p.escx", "--key", "acme.key"],
        &["issuer", "init", name, "--unencrypted", "--database", url],
        &["issuer", "publish", name, "-o", "issuer.pub"],
        &["issuer", "register-package", name, "p.escx", "--pubkey", "acme.pub"],
    ] {
        escx(dir).args(args).assert().success();
    }
    tmp
}

#[test]
#[ignore = "needs PostgreSQL's and PgBouncer's binaries; .ci/run runs it"]
fn two_issuer_nodes_on_one_database_spend_each_token_once_even_when_one_is_killed() {
    // Node B reaches the database through PgBouncer; node A directly.
    let cluster = pg::Cluster::start();
    let url = cluster.database();
    let tmp = paid_issuer_at(&url, "issuer-a");
    let dir = tmp.path();
    // The second node holds a copy of the directory: the keys and database.url, which
    // names the same database through PgBouncer in transaction pooling with one server
    // connection for all its clients (storage.md §3.2).
    common::copy_dir(&dir.join("issuer-a"), &dir.join("issuer-b"));
    assert!(!dir.join("issuer-a/issuer.sqlite").exists(), "the store is in PostgreSQL");
    let pooler = cluster.pgbouncer(1);
    std::fs::write(dir.join("issuer-b/database.url"), pooler.url(&url)).unwrap();
    // Ten wallets of one token each (bought from the file commands, on the same store),
    // and ten copies of each that spend it with their own holder keys: 100 redemptions.
    let mut requests: Vec<(usize, Vec<u8>)> = Vec::new();
    for t in 0..10 {
        let wallet = format!("w{t}");
        buy_token(dir, "issuer-b", &wallet, "standard");
        for c in 0..10 {
            let copy = format!("w{t}-{c}");
            common::copy_dir(&dir.join(&wallet), &dir.join(&copy));
            requests.push((t, seal_redemption(dir, &copy)));
        }
    }
    let (mut a, addr_a) = node(dir, &["--issuer", "issuer-a"]);
    let b_log = dir.join("node-b.log");
    let (b, addr_b) =
        common::serve_logging(dir, &["--redeem-rate", "100000", "--issuer", "issuer-b"], logfile(&b_log));
    // All 100 at once, alternating between the nodes; node A is killed as soon as it has
    // answered one of its own, with the rest of its share in flight or queued.
    let (answered, first_answer) = std::sync::mpsc::channel::<()>();
    let handles: Vec<_> = requests
        .iter()
        .enumerate()
        .map(|(i, (t, body))| {
            let to_a = i % 2 == 0;
            let (addr, body, t) = (if to_a { addr_a.clone() } else { addr_b.clone() }, body.clone(), *t);
            let answered = answered.clone();
            std::thread::spawn(move || {
                let outcome = post(&addr, "/v1/redeem", &body);
                if to_a && outcome.is_some() {
                    let _ = answered.send(());
                }
                (t, outcome)
            })
        })
        .collect();
    first_answer.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    a.kill().unwrap();
    a.wait().unwrap();
    let mut outcomes: Vec<(usize, Answer)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let unanswered = outcomes.iter().filter(|(_, o)| o.is_none()).count();
    assert!(unanswered > 0, "the kill landed after node A had answered everything");
    // What node A never answered is sent again to node B, which keeps serving: a
    // redemption A committed gets its stored answer; the others are decided now.
    for (i, (_, outcome)) in outcomes.iter_mut().enumerate() {
        if outcome.is_none() {
            *outcome = post(&addr_b, "/v1/redeem", &requests[i].1);
        }
    }
    let mut licenses_per_token = [0usize; 10];
    for (t, outcome) in &outcomes {
        match outcome {
            Some((200, _)) => licenses_per_token[*t] += 1,
            Some((409, body)) => assert!(String::from_utf8_lossy(body).contains("token-spent")),
            other => panic!("token {t}: {other:?}"),
        }
    }
    assert_eq!(licenses_per_token, [1; 10], "each token gives exactly one license: {licenses_per_token:?}");
    // Node B stops on SIGTERM in the middle of a burst of retries: what it answered is the
    // stored answer (200 for the redemption that spent the token, 409 for the others), or
    // a 503 for a request that came in while it was stopping, which commits nothing.
    let bodies: Vec<Vec<u8>> = requests.iter().map(|(_, body)| body.clone()).collect();
    for (i, answer) in
        terminate_during_burst((b, b_log), &addr_b, "/v1/redeem", &bodies).into_iter().enumerate()
    {
        if let Some((status, _)) = answer.filter(|(status, _)| *status != 503) {
            let before = outcomes[i].1.as_ref().map(|(status, _)| *status);
            assert_eq!(Some(status), before, "request {i}: the same answer again");
        }
    }
    // The database agrees: ten spent tokens, ten licenses.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut count = |table: &str| -> i64 {
        client.query_one(&format!("SELECT count(*) FROM escx_issuer.{table}"), &[]).unwrap().get(0)
    };
    let counts = (count("spent"), count("licenses"));
    assert_eq!(counts, (10, 10));
}

/// Two service nodes over one PostgreSQL operator store (metering.md §6.4): every hourly
/// report of four licenses is sent to both nodes at once; each is stored by exactly one
/// node and found a duplicate by the other; the closes go to the second node and the
/// billing read from the first directory bills each license's minutes once.
#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn two_operator_nodes_on_one_database_store_each_report_once() {
    let cluster = pg::Cluster::start();
    let url = cluster.database();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("pkg")).unwrap();
    std::fs::write(dir.join("pkg/manifest.toml"), common::METERED_MANIFEST).unwrap();
    for args in [
        &["key", "generate", "--out", "acme", "--unencrypted"][..],
        &["package", "pack", "pkg", "-o", "p.escx", "--key", "acme.key"],
        &["issuer", "init", "issuer", "--unencrypted"],
        &["issuer", "publish", "issuer", "-o", "issuer.pub"],
        &["issuer", "register-package", "issuer", "p.escx", "--pubkey", "acme.pub"],
        &["operator", "init", "op-a", "--issuer", "issuer.pub", "--database", &url],
        &["operator", "package", "op-a", "p.escx", "--pubkey", "acme.pub"],
    ] {
        escx(dir).args(args).assert().success();
    }
    assert!(!dir.join("op-a/operator.sqlite").exists(), "the store is in PostgreSQL");
    common::copy_dir(&dir.join("op-a"), &dir.join("op-b"));
    // Four wallets of one metered license each, using it two minutes in each of three hours.
    let hour = (escx::now_unix().0 / 3600 + 2) * 3600;
    let later = format!("@{}", hour + 4 * 3600);
    let mut reports: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
    for w in 0..4 {
        let wallet = format!("w{w}");
        buy_token(dir, "issuer", &wallet, "metered");
        seal_redemption(dir, &wallet);
        escx(dir)
            .args(["issuer", "redeem", "issuer", "r.sealed", "-o", "l.sealed", "--force"])
            .assert()
            .success();
        escx(dir).args(["license", "install", "l.sealed", "--wallet", &wallet]).assert().success();
        for (h, batch) in reports.iter_mut().enumerate() {
            let at = hour + h as u64 * 3600 + 600;
            for minute in [0, 60] {
                escx(dir)
                    .args([
                        "meter",
                        "record",
                        "--issuer",
                        "issuer.pub",
                        "--wallet",
                        &wallet,
                        "--package",
                        "acme/thermal",
                    ])
                    .args(["--unit", "invocations", "--at", &format!("@{}", at + minute)])
                    .assert()
                    .success();
            }
            let out = format!("report-{w}-{h}.cbor");
            escx(dir)
                .args(["meter", "report", "--wallet", &wallet, "--package", "acme/thermal"])
                .args(["--hour", &format!("@{at}"), "--at", &later, "-o", &out])
                .assert()
                .success();
            batch.push(std::fs::read(dir.join(out)).unwrap());
        }
    }
    let ahead = (hour + 4 * 3600 - escx::now_unix().0).to_string();
    let (mut a, addr_a) = common::serve(dir, &["--operator", "op-a", "--operator-clock-ahead", &ahead]);
    let b_log = dir.join("node-b.log");
    let (b, addr_b) = common::serve_logging(
        dir,
        &["--operator", "op-b", "--operator-clock-ahead", &ahead],
        logfile(&b_log),
    );
    // Hour by hour (a license's reports chain in order), each report to both nodes at once.
    for batch in &reports {
        let sends: Vec<_> = batch
            .iter()
            .flat_map(|body| [(addr_a.clone(), body.clone()), (addr_b.clone(), body.clone())])
            .map(|(addr, body)| std::thread::spawn(move || post(&addr, "/v1/reports", &body)))
            .collect();
        let answers: Vec<String> = sends
            .into_iter()
            .map(|h| {
                let (status, body) = h.join().unwrap().expect("both nodes answer");
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                let answer: Value = serde_json::from_slice(&body).unwrap();
                answer["outcome"].as_str().unwrap().to_owned()
            })
            .collect();
        for pair in answers.chunks(2) {
            let mut pair = pair.to_vec();
            pair.sort();
            assert_eq!(pair, ["duplicate", "stored"], "one node stores a report, the other finds it stored");
        }
    }
    for w in 0..4 {
        escx(dir)
            .args(["meter", "close", "--wallet", &format!("w{w}"), "--package", "acme/thermal"])
            .args(["--period", &format!("@{hour}"), "--early", "--at", &later])
            .args(["--server", &format!("http://{addr_b}")])
            .assert()
            .success();
    }
    let _ = a.kill();
    let _ = a.wait();
    // Node B stops on SIGTERM during a burst of the same reports: each answer it gives
    // says the report is stored already (or is a 503 for one that came in while stopping).
    let all: Vec<Vec<u8>> = reports.concat();
    for (status, body) in
        terminate_during_burst((b, b_log), &addr_b, "/v1/reports", &all).into_iter().flatten()
    {
        if status == 503 {
            continue; // arrived while the node was stopping: nothing committed
        }
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["outcome"], "duplicate");
    }
    let billing =
        run(dir, &["operator", "billing", "op-a", "--period", &format!("@{hour}"), "-o", "usage.json"]);
    let minutes: Vec<u64> =
        billing["charges"].as_array().unwrap().iter().map(|c| c["minutes"].as_u64().unwrap()).collect();
    assert_eq!(minutes, [6, 6, 6, 6], "{billing}");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let stored: i64 = client.query_one("SELECT count(*) FROM escx_operator.reports", &[]).unwrap().get(0);
    assert_eq!(stored, 12);
}

/// A PostgreSQL-backed issuer node while its database crashes and comes back, under a
/// steady load of reads (storage.md §3.4): during the outage every redemption gets a 503
/// naming the store, quickly, and commits nothing; once the server is back the node
/// reconnects by itself and redeems each token exactly once; it never panics or exits.
#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn an_issuer_node_rides_out_a_database_restart_under_load() {
    let cluster = pg::Cluster::start_durable();
    let url = cluster.database();
    let tmp = paid_issuer_at(&url, "issuer");
    let dir = tmp.path();
    escx(dir).args(["issuer", "crl", "issuer", "-o", "crl.cbor"]).assert().success();
    // Twelve wallets with one token each, and the sealed redemption of each.
    let requests: Vec<Vec<u8>> = (0..12)
        .map(|t| {
            let wallet = format!("w{t}");
            buy_token(dir, "issuer", &wallet, "standard");
            seal_redemption(dir, &wallet)
        })
        .collect();
    let log = dir.join("node.log");
    let (mut node, addr) = common::serve_logging(dir, &["--issuer", "issuer"], logfile(&log));
    // The load: reads of the CRL (a database read each) for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut answered = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if request(&addr, "GET", "/v1/crl", &[]).is_some() {
                    answered += 1;
                }
            }
            answered
        })
    };
    let redeem = |body: &[u8]| post(&addr, "/v1/redeem", body).expect("the node answers");
    for body in &requests[..4] {
        assert_eq!(redeem(body).0, 200);
    }
    cluster.crash();
    for body in &requests[4..8] {
        let started = std::time::Instant::now();
        let (status, answer) = redeem(body);
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&answer));
        let error: Value = serde_json::from_slice(&answer).unwrap();
        assert!(error["error"]["code"].as_str().is_some_and(|c| c.starts_with("store-")), "{error}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "answered while the database is down"
        );
    }
    cluster.restart();
    for body in &requests[4..] {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (status, answer) = redeem(body);
            if status == 200 {
                break;
            }
            assert_eq!(status, 503, "{}", String::from_utf8_lossy(&answer));
            assert!(attempts < 5, "the node did not reconnect: {}", String::from_utf8_lossy(&answer));
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert!(node.try_wait().unwrap().is_none(), "the node kept running");
    let _ = node.kill();
    let _ = node.wait();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    // Each token spent once, each with its license; nothing of the refused ones.
    assert_eq!(
        pg::query_ints(
            &url,
            "SELECT (SELECT count(*) FROM escx_issuer.spent), (SELECT count(*) FROM escx_issuer.licenses)"
        ),
        [[12, 12]]
    );
}
