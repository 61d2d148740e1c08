//! `escx serve` through the real binary on loopback (spec: service.md): the whole flow and
//! the customer commands over HTTP, 50 concurrent redemptions of one token, hostile bodies beside a good
//! client, a slow client cut off, and SIGTERM. Every server is started by its test on a
//! free port and stopped by it; every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, http};

use assert_cmd::Command;
use serde_json::Value;

fn escx(dir: &Path) -> Command {
    let mut command = Command::cargo_bin("escx").unwrap();
    command.current_dir(dir).env_remove("ESCX_PASSPHRASE").env_remove("ESCX_ACCOUNT_TOKEN");
    command
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// An issuer in `issuer/` selling `acme/thermal` (tier "standard"), with a CRL signed and a
/// purchase account; returns the account's token.
fn issuer(dir: &Path) -> String {
    escx(dir).args(["key", "generate", "--out", "acme", "--unencrypted"]).assert().success();
    std::fs::create_dir_all(dir.join("pkg")).unwrap();
    std::fs::write(dir.join("pkg/manifest.toml"), common::PAID_MANIFEST).unwrap();
    for args in [
        &["package", "pack", "pkg", "-o", "p.escx", "--key", "acme.key"][..],
        &["issuer", "init", "issuer", "--unencrypted"],
        &["issuer", "publish", "issuer", "-o", "issuer.pub"],
        &["issuer", "register-package", "issuer", "p.escx", "--pubkey", "acme.pub"],
        &["issuer", "crl", "issuer", "-o", "crl.cbor"],
    ] {
        escx(dir).args(args).assert().success();
    }
    let out = escx(dir).args(["issuer", "account", "add", "issuer", "alice", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    json(&out.stdout)["token"].as_str().unwrap().to_owned()
}

fn error_code(body: &[u8]) -> String {
    json(body)["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn buy_redeem_verify_and_crl_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = issuer(dir);
    let server = Server::start(dir, &["--issuer", "issuer"]);
    let url = server.url();
    let buy = |wallet: &str, token: &str| {
        escx(dir)
            .args(["license", "buy", "--server", &url, "--package", "acme/thermal", "--tier", "standard"])
            .args(["--count", "2", "--wallet", wallet, "--account-token", token, "--json"])
            .output()
            .unwrap()
    };
    let out = buy("w", &token);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&out.stdout)["tokens"], 2);
    assert!(!dir.join("w/outbox").read_dir().unwrap().any(|_| true), "the answered purchase left the outbox");
    // Without a known account token: 401, exit 1, nothing sold.
    let out = buy("w2", &"0".repeat(64));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(error_code(&out.stdout), "unauthorized");
    // Issue 27 (13): the help line says what to pass.
    let help = json(&out.stdout)["error"]["help"].as_str().unwrap().to_owned();
    assert!(help.contains("--account-token") && help.contains("escx issuer account add"), "{help}");

    let out = escx(dir)
        .args(["license", "redeem", "--server", &url, "--wallet", "w", "--package", "acme/thermal", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // Offline, with no server: the installed license verifies.
    escx(dir)
        .args(["license", "verify", "--issuer", "issuer.pub", "--wallet", "w", "--package", "acme/thermal"])
        .assert()
        .success();
    escx(dir).args(["license", "crl", "--server", &url, "--wallet", "w"]).assert().success();

    // Issue 27 (5): a licensed release registered after the license was issued: its key
    // comes over POST /v1/content-key without another token, and the file extracts.
    std::fs::create_dir_all(dir.join("next")).unwrap();
    std::fs::write(dir.join("next/manifest.toml"), common::PAID_MANIFEST.replace("1.0.0", "1.1.0")).unwrap();
    std::fs::write(dir.join("next/model.py"), "print('1.1')\n").unwrap();
    for args in [
        &["package", "pack", "next", "-o", "next.escx", "--key", "acme.key", "--encrypt-for", "issuer.pub"][..],
        &["issuer", "register-package", "issuer", "next.escx", "--pubkey", "acme.pub"],
    ] {
        escx(dir).args(args).assert().success();
    }
    let extract = || {
        escx(dir)
            .args([
                "package",
                "extract",
                "next.escx",
                "-o",
                "next-out",
                "--pubkey",
                "acme.pub",
                "--wallet",
                "w",
            ])
            .arg("--json")
            .output()
            .unwrap()
    };
    assert_eq!(error_code(&extract().stdout), "content-key-required");
    let out = escx(dir)
        .args(["license", "key", "--server", &url, "--wallet", "w", "--package-file", "next.escx", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&out.stdout)["license_id"].as_str().unwrap().len(), 32);
    let out = extract();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(std::fs::read_to_string(dir.join("next-out/model.py")).unwrap(), "print('1.1')\n");

    // The bundle chain is cacheable: its ETag answers 304.
    let (status, head, chain) = http(&server.addr, "GET", "/.well-known/escx/issuer", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(chain, std::fs::read(dir.join("issuer.pub")).unwrap(), "the published chain, byte for byte");
    let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().to_owned();
    let (status, _, body) =
        http(&server.addr, "GET", "/.well-known/escx/issuer", &[("If-None-Match", &etag)], b"");
    assert_eq!((status, body.len()), (304, 0));
    // Unserved parts and unknown paths are JSON errors with their codes.
    let (status, _, body) = http(&server.addr, "GET", "/v1/statements", &[], b"");
    assert_eq!((status, error_code(&body).as_str()), (404, "not-served"));
    let (status, _, body) = http(&server.addr, "GET", "/nothing", &[], b"");
    assert_eq!((status, error_code(&body).as_str()), (404, "not-found"));
    let (status, _, body) = http(&server.addr, "GET", "/v1/redeem", &[], b"");
    assert_eq!((status, error_code(&body).as_str()), (405, "method-not-allowed"));

    // Without --metrics-token-file, /metrics is not served.
    let (status, _, body) = http(&server.addr, "GET", "/metrics", &[], b"");
    assert_eq!((status, error_code(&body).as_str()), (404, "not-served"));

    assert!(server.stop().success(), "SIGTERM stops the service with status 0");
    // The sale over the service is recorded with its account.
    let db = rusqlite::Connection::open(dir.join("issuer/issuer.sqlite")).unwrap();
    let account: String = db.query_row("SELECT account FROM sale_accounts", [], |r| r.get(0)).unwrap();
    assert_eq!(account, "alice");
}

#[test]
fn fifty_concurrent_redemptions_of_one_token_give_one_license() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = issuer(dir);
    let server =
        Server::start(dir, &["--issuer", "issuer", "--redeem-rate", "1000", "--max-in-flight", "256"]);
    escx(dir)
        .args([
            "license",
            "buy",
            "--server",
            &server.url(),
            "--package",
            "acme/thermal",
            "--tier",
            "standard",
        ])
        .args(["--wallet", "w", "--account-token", &token])
        .assert()
        .success();
    // Fifty copies of the wallet each spend the one token with their own holder keys.
    let requests: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            let copy = format!("w{i}");
            common::copy_dir(&dir.join("w"), &dir.join(&copy));
            let out = format!("r{i}.sealed");
            escx(dir)
                .args(["license", "redeem", "--wallet", &copy, "--package", "acme/thermal", "-o", &out])
                .assert()
                .success();
            std::fs::read(dir.join(out)).unwrap()
        })
        .collect();
    let addr = server.addr.clone();
    let handles: Vec<_> = requests
        .into_iter()
        .map(|body| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let (status, _, answer) = http(&addr, "POST", "/v1/redeem", &[], &body);
                (status, if status == 200 { String::new() } else { error_code(&answer) })
            })
        })
        .collect();
    let outcomes: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let licensed = outcomes.iter().filter(|(status, _)| *status == 200).count();
    let spent = outcomes.iter().filter(|(status, code)| *status == 409 && code == "token-spent").count();
    assert_eq!((licensed, spent), (1, 49), "{outcomes:?}");
    assert!(server.stop().success());
}

#[test]
fn hostile_bodies_get_json_errors_while_a_good_client_keeps_going() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = issuer(dir);
    let server = Server::start(dir, &["--issuer", "issuer", "--redeem-rate", "1000"]);
    let addr = server.addr.clone();
    let good = std::thread::spawn(move || {
        (0..40)
            .map(|_| http(&addr, "GET", "/.well-known/escx/issuer", &[], b"").0)
            .filter(|status| *status == 200)
            .count()
    });
    let bearer = format!("Bearer {token}");
    let garbage: Vec<u8> = (0..5000u32).map(|i| u8::try_from(i * 7 % 251).unwrap()).collect();
    // (path, headers, body, status, code)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("/v1/redeem", vec![], garbage.clone(), 400, "sealed-box-invalid"),
        ("/v1/redeem", vec![], vec![0u8; 100 * 1024], 413, "body-too-large"),
        ("/v1/purchase", vec![("Authorization", &bearer)], garbage.clone(), 400, "message-invalid"),
        (
            "/v1/purchase",
            vec![("Authorization", &bearer)],
            b"{\"json\": true}".to_vec(),
            400,
            "message-invalid",
        ),
        ("/v1/purchase", vec![], b"x".to_vec(), 401, "unauthorized"),
        ("/v1/purchase", vec![("Authorization", "Bearer nope")], b"x".to_vec(), 401, "unauthorized"),
    ];
    for (path, headers, body, status, code) in &cases {
        let (got, _, answer) = http(&server.addr, "POST", path, headers, body);
        assert_eq!(
            (got, error_code(&answer).as_str()),
            (*status, *code),
            "{path} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    // A truncated but otherwise real purchase is refused, and a real one then succeeds.
    escx(dir)
        .args([
            "license",
            "request",
            "--issuer",
            "issuer.pub",
            "--package",
            "acme/thermal",
            "--tier",
            "standard",
        ])
        .args(["--wallet", "w", "-o", "req.cbor"])
        .assert()
        .success();
    let request = std::fs::read(dir.join("req.cbor")).unwrap();
    let (status, _, _) = http(
        &server.addr,
        "POST",
        "/v1/purchase",
        &[("Authorization", &bearer)],
        &request[..request.len() / 2],
    );
    assert_eq!(status, 400);
    let (status, _, answer) =
        http(&server.addr, "POST", "/v1/purchase", &[("Authorization", &bearer)], &request);
    assert_eq!(status, 200);
    // A retried purchase gets the stored answer, byte for byte.
    let (_, _, again) = http(&server.addr, "POST", "/v1/purchase", &[("Authorization", &bearer)], &request);
    assert_eq!(answer, again);
    assert_eq!(good.join().unwrap(), 40, "every request of the good client succeeded");
    assert!(server.stop().success());
    let db = rusqlite::Connection::open(dir.join("issuer/issuer.sqlite")).unwrap();
    let sales: i64 = db.query_row("SELECT COUNT(*) FROM sales", [], |r| r.get(0)).unwrap();
    assert_eq!(sales, 1, "one sale for the purchase and its retry, none for the hostile requests");
}

#[test]
fn a_slow_client_is_cut_off_by_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    issuer(dir);
    let server = Server::start(dir, &["--issuer", "issuer", "--timeout-secs", "1"]);
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Announces 1000 bytes, sends 10, then stalls.
    stream
        .write_all(b"POST /v1/redeem HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "cut off after {waited:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"timeout\""), "{text}");
    // A client that trickles its headers (slowloris) is cut off as well: the head is
    // bounded by the same limit, before any handler runs.
    let mut slow_head = TcpStream::connect(&server.addr).unwrap();
    slow_head.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut closed = false;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow_head.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !closed {
        let mut rest = Vec::new();
        let _ = slow_head.read_to_end(&mut rest);
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(8), "a trickled head held the connection for {waited:?}");
    // The service still answers others.
    assert_eq!(http(&server.addr, "GET", "/healthz", &[], b"").0, 200);
    assert!(server.stop().success());
}

#[test]
fn statements_registry_and_reports_are_served_from_the_operators_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    escx(dir).args(["demo", "--dir", "d"]).assert().success();
    let server = Server::start(
        dir,
        &[
            "--ledger",
            "d/settlement/ledger.db",
            "--registry",
            "d/registry",
            "--operator",
            "d/operator",
            "--proofs",
            "d/public/proofs",
        ],
    );
    let (status, _, body) = http(&server.addr, "GET", "/v1/statements", &[], b"");
    assert_eq!(status, 200);
    let list = json(&body);
    assert!(list["statements"].as_array().unwrap().len() >= 2, "{list}");
    let (status, _, statement) = http(&server.addr, "GET", "/v1/statements/1", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(statement, std::fs::read(dir.join("d/public/statements/statement-1.cbor")).unwrap());
    // The statement's range and split proofs, beside it.
    let (status, _, proofs) = http(&server.addr, "GET", "/v1/statements/1/proofs", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(proofs, std::fs::read(dir.join("d/public/proofs/statement-1.proofs")).unwrap());
    let (status, _, body) = http(&server.addr, "GET", "/v1/statements/999/proofs", &[], b"");
    assert_eq!((status, error_code(&body).as_str()), (404, "no-proofs"));
    for missing in ["/v1/statements/999", "/v1/statements/x"] {
        let (status, _, body) = http(&server.addr, "GET", missing, &[], b"");
        assert_eq!((status, error_code(&body).as_str()), (404, "unknown-statement"), "{missing}");
    }
    let (status, head, index) = http(&server.addr, "GET", "/registry/index.signed", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(index, std::fs::read(dir.join("d/registry/index.signed")).unwrap());
    let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().to_owned();
    assert_eq!(http(&server.addr, "GET", "/registry/index.signed", &[("If-None-Match", &etag)], b"").0, 304);
    let (status, _, package) = http(&server.addr, "GET", "/registry/packages/demo/plot/1.0.0.escx", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(package, std::fs::read(dir.join("d/registry/packages/demo/plot/1.0.0.escx")).unwrap());
    // Streamed with its length, tagged by its hash (computed once), 304 when held.
    let (_, head, _) = http(&server.addr, "GET", "/registry/packages/demo/plot/1.0.0.escx", &[], b"");
    assert!(head.contains(&format!("content-length: {}", package.len())), "{head}");
    let tag = head.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().to_owned();
    assert_eq!(tag, format!("\"{}\"", &blake3::hash(&package).to_hex()[..32]));
    let (status, _, body) =
        http(&server.addr, "GET", "/registry/packages/demo/plot/1.0.0.escx", &[("If-None-Match", &tag)], b"");
    assert_eq!((status, body.len()), (304, 0));
    // Only a valid name and version make a path: nothing outside the registry is served.
    for path in [
        "/registry/packages/../../trust.toml",
        "/registry/packages/demo/plot/1.0.0.escx.bak",
        "/registry/packages/demo/Plot/1.0.0.escx",
        "/registry/packages/demo/plot/01.0.0.escx",
    ] {
        let (status, _, body) = http(&server.addr, "GET", path, &[], b"");
        assert_eq!((status, error_code(&body).as_str()), (404, "not-found"), "{path}");
    }
    // An auditor checks the served statements and their served proofs with the
    // operator's public key alone (issue 27, 8: --proofs URL read a file path).
    let out = escx(dir)
        .args(["audit", "statements", &format!("{}/v1/statements", server.url())])
        .args(["--operator-pub", "d/public/operator.pub", "--proofs", &server.url(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let audited = json(&out.stdout);
    assert_eq!(audited["range_proofs"].as_bool(), Some(true), "{audited}");
    assert!(audited["payouts_proven"].as_u64().unwrap() > 0, "{audited}");
    // The operator hands the ledger to a new key (issue 27, 1), which signs the next
    // statement; the service publishes the rotation, and the auditor holding the first
    // key follows it over HTTP.
    escx(dir).args(["key", "generate", "--out", "op2", "--unencrypted"]).assert().success();
    escx(dir)
        .args([
            "ledger",
            "rotate-key",
            "d/settlement/ledger.db",
            "--operator-key",
            "d/settlement/operator.key",
        ])
        .args(["--new-pub", "op2.pub"])
        .assert()
        .success();
    escx(dir)
        .args(["statement", "close-period", "d/settlement/ledger.db", "--period", "2098-12"])
        .args(["--operator-key", "op2.key", "--at", "2099-01-01T00:00:00Z"])
        .assert()
        .success();
    let (status, _, body) = http(&server.addr, "GET", "/v1/rotations", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["rotations"].as_array().unwrap().len(), 1);
    let audit = |pubkey: &str| {
        escx(dir)
            .args(["audit", "statements", &server.url(), "--operator-pub", pubkey, "--json"])
            .output()
            .unwrap()
    };
    let out = audit("d/public/operator.pub");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let statements = list["statements"].as_array().unwrap().len() as u64;
    assert_eq!(json(&out.stdout)["statements"].as_u64(), Some(statements + 1));
    // The new key alone does not vouch for what the old one signed.
    assert_eq!(json(&audit("op2.pub").stdout)["error"]["code"], "statement-invalid");
    // Install from the served registry: the index and the packages over HTTP, checked
    // exactly as a registry directory's.
    let registry = format!("{}/registry", server.url());
    let out = escx(dir)
        .args(["install", "--registry", &registry, "--root", "d/app"])
        .args(["--registry-key", "d/keys/registry.pub", "--pubkey", "d/keys/publisher.pub"])
        .args(["--state-dir", "state", "--into", "served-packages", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let installed = json(&out.stdout)["installed"].as_array().unwrap().len();
    assert!(installed >= 2, "{}", String::from_utf8_lossy(&out.stdout));
    let lock = std::fs::read_to_string(dir.join("d/app/escx.lock")).unwrap();
    assert!(lock.contains(&format!("registry+{registry}")), "the lockfile names the URL:\n{lock}");
    // A report that is not one is refused with the operator's own code.
    let (status, _, body) = http(&server.addr, "POST", "/v1/reports", &[], b"not a report");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "report-invalid"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = http(&server.addr, "POST", "/v1/redeem", &[], b"x");
    assert_eq!((status, error_code(&body).as_str()), (404, "not-served"));
    assert!(server.stop().success());
}

/// `count` purchase requests of one token each, from wallet `w`.
fn purchase_requests(dir: &Path, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let out = format!("req{i}.cbor");
            escx(dir)
                .args(["license", "request", "--issuer", "issuer.pub", "--package", "acme/thermal"])
                .args(["--tier", "standard", "--wallet", "w", "-o", &out])
                .assert()
                .success();
            std::fs::read(dir.join(out)).unwrap()
        })
        .collect()
}

/// Sends every request from its own thread; the answer bytes of those answered 200.
fn burst(addr: &str, token: &str, requests: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    let handles: Vec<_> = requests
        .iter()
        .cloned()
        .map(|body| {
            let addr = addr.to_owned();
            let bearer = format!("Bearer {token}");
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&addr).ok()?;
                stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
                let mut stream = stream;
                let head = format!(
                    "POST /v1/purchase HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {bearer}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).ok()?;
                stream.write_all(&body).ok()?;
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).ok()?;
                let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
                answer.starts_with(b"HTTP/1.1 200").then(|| answer[split + 4..].to_vec())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn sales(dir: &Path) -> i64 {
    let db = rusqlite::Connection::open(dir.join("issuer/issuer.sqlite")).unwrap();
    db.query_row("SELECT COUNT(*) FROM sales", [], |r| r.get(0)).unwrap()
}

#[test]
fn a_stop_or_a_kill_during_a_burst_loses_nothing_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = issuer(dir);
    let requests = purchase_requests(dir, 24);
    for signal in ["-TERM", "-KILL"] {
        let mut server = Server::start(dir, &["--issuer", "issuer", "--max-in-flight", "256"]);
        let addr = server.addr.clone();
        let sending = {
            let token = token.clone();
            let requests = requests.clone();
            std::thread::spawn(move || burst(&addr, &token, &requests))
        };
        std::thread::sleep(Duration::from_millis(30));
        let pid = server.child.id().to_string();
        assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
        let status = server.child.wait().unwrap();
        let answered = sending.join().unwrap();
        if signal == "-TERM" {
            assert!(status.success(), "SIGTERM exits 0 after the requests in flight");
        }
        // Every purchase answered was committed: its sale is in the store.
        let ok = answered.iter().filter(|a| a.is_some()).count();
        assert!(sales(dir) >= i64::try_from(ok).unwrap(), "{signal}: {ok} answered, {} sales", sales(dir));
    }
    // After both, every request is re-sent to a fresh server: each gets its stored answer (or
    // is answered now), and there is exactly one sale per request, never two.
    let server = Server::start(dir, &["--issuer", "issuer", "--max-in-flight", "256"]);
    let first = burst(&server.addr, &token, &requests);
    assert!(first.iter().all(Option::is_some), "every retry answered");
    let again = burst(&server.addr, &token, &requests);
    assert_eq!(first, again, "the same answers, byte for byte");
    assert_eq!(sales(dir), i64::try_from(requests.len()).unwrap());
    assert!(server.stop().success());
}

#[test]
fn tls_terminates_in_the_service_and_the_client_checks_the_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = issuer(dir);
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    let server =
        Server::start(dir, &["--issuer", "issuer", "--tls-cert", "cert.pem", "--tls-key", "key.pem"]);
    let url = format!("https://{}", server.addr);
    let buy = |ca: Option<&str>| {
        let mut command = escx(dir);
        command
            .args(["license", "buy", "--server", &url, "--package", "acme/thermal", "--tier", "standard"])
            .args(["--wallet", "w", "--account-token", &token, "--json"]);
        if let Some(ca) = ca {
            command.env("ESCX_CA", ca);
        }
        command.output().unwrap()
    };
    // Without the CA the self-signed certificate is refused: a network error, exit 3.
    let out = buy(None);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(error_code(&out.stdout), "network");
    // Issue 27 (13): what is wrong with the certificate, in words, and ESCX_CA named.
    let error = &json(&out.stdout)["error"];
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("signed by an authority this client does not trust"), "{message}");
    assert!(error["help"].as_str().unwrap().contains("ESCX_CA"), "{error}");
    let out = buy(Some("cert.pem"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    escx(dir)
        .env("ESCX_CA", "cert.pem")
        .args(["license", "redeem", "--server", &url, "--wallet", "w", "--package", "acme/thermal"])
        .assert()
        .success();
    // Plain HTTP to the TLS port gets no answer it could take for one.
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
    assert!(server.stop().success());
}

#[test]
fn rate_limits_and_load_shedding_answer_with_retry_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = issuer(dir);
    let server = Server::start(
        dir,
        &["--issuer", "issuer", "--redeem-rate", "1", "--max-in-flight", "1", "--timeout-secs", "5"],
    );
    // One address, redemptions faster than 1 per second (burst 2): the rest are 429.
    let statuses: Vec<(u16, String)> = (0..6)
        .map(|_| {
            let (status, head, _) = http(&server.addr, "POST", "/v1/redeem", &[], b"x");
            (status, head)
        })
        .collect();
    let limited: Vec<&(u16, String)> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(limited.len() >= 3, "{statuses:?}");
    assert!(limited.iter().all(|(_, head)| head.contains("retry-after: ")), "{limited:?}");
    // A request stalled in its body holds the one slot; another is shed with 503.
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    let head = format!(
        "POST /v1/purchase HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n"
    );
    stalled.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (status, head, body) = http(&server.addr, "GET", "/healthz", &[], b"");
    assert_eq!((status, error_code(&body).as_str()), (503, "overloaded"));
    assert!(head.contains("retry-after: 1"), "{head}");
    drop(stalled);
    assert!(server.stop().success());
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    issuer(dir);
    let server =
        Server::start(dir, &["--issuer", "issuer", "--redeem-rate", "1", "--trusted-proxy", "127.0.0.1"]);
    let redeem = |from: &str| http(&server.addr, "POST", "/v1/redeem", &[("X-Forwarded-For", from)], b"x").0;
    // One client behind the proxy spends its burst of 2 and is limited...
    let first: Vec<u16> = (0..4).map(|_| redeem("203.0.113.7")).collect();
    assert_eq!(first.iter().filter(|s| **s == 429).count(), 2, "{first:?}");
    // ...while another client behind the same proxy is not, and a client cannot dodge
    // its own limit by forging an entry left of the one the proxy appended.
    assert_ne!(redeem("198.51.100.9"), 429);
    assert_eq!(redeem("192.0.2.1, 203.0.113.7"), 429);
    assert!(server.stop().success());
}

/// The same behind a dual-stack listener (`--listen [::]:0`), where the proxy 127.0.0.1
/// connects as `::ffff:127.0.0.1`: it is still recognised, so the clients behind it have
/// their own budgets (before, it was not, and they all shared the proxy's). IPv6 clients
/// are counted per /64.
#[test]
fn behind_a_dual_stack_listener_the_trusted_proxy_is_still_recognised() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    issuer(dir);
    let server = Server::start_on(
        dir,
        "[::]:0",
        &["--issuer", "issuer", "--redeem-rate", "1", "--trusted-proxy", "127.0.0.1"],
    );
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let addr = format!("127.0.0.1:{port}");
    let redeem = |from: &str| http(&addr, "POST", "/v1/redeem", &[("X-Forwarded-For", from)], b"x").0;
    let first: Vec<u16> = (0..4).map(|_| redeem("203.0.113.7")).collect();
    assert_eq!(first.iter().filter(|s| **s == 429).count(), 2, "{first:?}");
    assert_ne!(redeem("198.51.100.9"), 429, "another client behind the proxy has its own budget");
    // Two addresses of one /64 share a budget; another /64 has its own.
    let v6: Vec<u16> =
        ["2001:db8:0:7::1", "2001:db8:0:7::2", "2001:db8:0:7::3"].iter().map(|a| redeem(a)).collect();
    assert_eq!(v6[2], 429, "{v6:?}");
    assert_ne!(redeem("2001:db8:0:8::1"), 429);
    assert!(server.stop().success());
}

/// The whole flow against one running service, each customer step over HTTP and each
/// operator step a CLI command on the operator's machine: buy, redeem, verify offline,
/// report, close, bill, settle, fetch and audit the statement, install from the served
/// registry.
#[test]
fn the_whole_flow_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("thermal")).unwrap();
    std::fs::write(dir.join("thermal/manifest.toml"), common::METERED_MANIFEST).unwrap();
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests/thermal.toml"), common::METERED_MANIFEST).unwrap();
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(
        dir.join("app/manifest.toml"),
        "[package]\nname = \"acme/app\"\nversion = \"0.1.0\"\n\n[dependencies]\n\"acme/thermal\" = \"^1.0\"\n",
    )
    .unwrap();
    for args in [
        &["key", "generate", "--out", "acme", "--unencrypted"][..],
        &["key", "generate", "--out", "registry", "--unencrypted"],
        &["key", "generate", "--out", "op", "--unencrypted"],
        &["package", "pack", "thermal", "-o", "thermal.escx", "--key", "acme.key"],
        &["registry", "init", "reg", "--key", "registry.key", "--publisher", "acme.pub"],
        &["registry", "publish", "reg", "thermal.escx", "--key", "registry.key"],
        &["issuer", "init", "issuer", "--unencrypted"],
        &["issuer", "publish", "issuer", "-o", "issuer.pub"],
        &["issuer", "register-package", "issuer", "thermal.escx", "--pubkey", "acme.pub"],
        &["issuer", "crl", "issuer", "-o", "crl.cbor"],
        &["operator", "init", "op", "--issuer", "issuer.pub"],
        &["operator", "package", "op", "thermal.escx", "--pubkey", "acme.pub"],
        &["operator", "crl", "op", "crl.cbor"],
        &["settle", "init", "ledger.db", "--platform-bps", "1500", "--payout-threshold", "1.00"],
    ] {
        escx(dir).args(args).assert().success();
    }
    let out = escx(dir).args(["issuer", "account", "add", "issuer", "carol", "--json"]).output().unwrap();
    let token = json(&out.stdout)["token"].as_str().unwrap().to_owned();
    // The operator part judges time four hours ahead, so the hour used now has ended for it.
    let ahead = 4 * 3600;
    let server = Server::start(
        dir,
        &[
            "--issuer",
            "issuer",
            "--operator",
            "op",
            "--ledger",
            "ledger.db",
            "--registry",
            "reg",
            "--operator-clock-ahead",
            &ahead.to_string(),
        ],
    );
    let url = server.url();
    let run = |args: &[&str]| -> Value {
        let out = escx(dir).args(args).arg("--json").output().unwrap();
        assert!(
            out.status.success(),
            "escx {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        json(&out.stdout)
    };
    let wallet = ["--wallet", "w", "--package", "acme/thermal"];
    run(&[
        "license",
        "buy",
        "--server",
        &url,
        "--tier",
        "metered",
        "--account-token",
        &token,
        wallet[0],
        wallet[1],
        wallet[2],
        wallet[3],
    ]);
    run(&[&["license", "redeem", "--server", &url][..], &wallet].concat());
    run(&["license", "crl", "--server", &url, "--wallet", "w"]);
    let verified = run(&[&["license", "verify", "--issuer", "issuer.pub"][..], &wallet].concat());
    assert_eq!(verified["ok"], true, "{verified}");

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let used = format!("@{now}");
    let later = format!("@{}", now + ahead);
    run(&[
        &["meter", "record", "--issuer", "issuer.pub"][..],
        &wallet,
        &["--unit", "invocations", "--amount", "7", "--at", &used],
    ]
    .concat());
    let report =
        [&["meter", "report"][..], &wallet, &["--hour", &used, "--at", &later, "--server", &url]].concat();
    // The same report from eight clients at once (the service ingests on several store
    // handles): stored once, seven duplicates; then the command's own re-send.
    run(&[&["meter", "report"][..], &wallet, &["--hour", &used, "--at", &later, "-o", "report.cbor"]]
        .concat());
    let file = std::fs::read(dir.join("report.cbor")).unwrap();
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let (addr, file) = (server.addr.clone(), file.clone());
            std::thread::spawn(move || {
                let (status, _, body) = http(&addr, "POST", "/v1/reports", &[], &file);
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                json(&body)["outcome"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut outcomes: Vec<String> = sends.into_iter().map(|t| t.join().unwrap()).collect();
    outcomes.sort();
    assert_eq!(outcomes, [&["duplicate"; 7][..], &["stored"]].concat(), "one report, stored once");
    assert_eq!(run(&report)["outcome"], "duplicate", "a re-sent report is stored once");
    let close =
        [&["meter", "close"][..], &wallet, &["--period", &used, "--early", "--at", &later, "--server", &url]]
            .concat();
    let closed = run(&close);
    assert_eq!(
        (closed["outcome"].as_str(), closed["totals"]["invocations"].as_u64()),
        (Some("stored"), Some(7))
    );
    assert_eq!(run(&close)["outcome"], "duplicate", "a re-sent close is kept once");

    // The operator bills the closed period and settles it into the served ledger.
    run(&["operator", "billing", "op", "--period", &used, "-o", "usage.json"]);
    let settle = [
        "settle",
        "run",
        "ledger.db",
        "--events",
        "usage.json",
        "--manifests",
        "manifests",
        "--operator-key",
        "op.key",
    ];
    run(&settle);
    let (status, _, body) = http(&server.addr, "GET", "/v1/statements", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["statements"].as_array().map(Vec::len), Some(1), "one batch, one statement");
    let (status, _, served) = http(&server.addr, "GET", "/v1/statements/1", &[], b"");
    assert_eq!(status, 200);
    run(&["statement", "export", "ledger.db", "--seq", "1", "-o", "s1.cbor"]);
    assert_eq!(served, std::fs::read(dir.join("s1.cbor")).unwrap(), "the served statement is the ledger's");
    run(&["audit", "statements", &format!("{url}/v1/statements"), "--operator-pub", "op.pub"]);
    // Usage in one minute at 1.20 USD an hour: 0.02 USD gross, 15 % to the platform, 10 %
    // of the rest to the referrer, the residual to acme, and nothing lost.
    let balances = run(&["ledger", "balances", "ledger.db"]);
    let micros = |account: &str| {
        balances["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["account"] == account)
            .map(|b| b["micros"].as_i64())
    };
    assert_eq!(
        [micros("@customers"), micros("platform"), micros("referrer"), micros("acme")],
        [Some(Some(-20_000)), Some(Some(3_000)), Some(Some(1_700)), Some(Some(15_300))],
        "{balances}"
    );
    run(&["ledger", "audit", "ledger.db"]);

    let installed = run(&[
        "install",
        "--registry",
        &format!("{url}/registry"),
        "--root",
        "app",
        "--registry-key",
        "registry.pub",
        "--pubkey",
        "acme.pub",
        "--into",
        "app/escx_packages",
        "--state-dir",
        "state",
    ]);
    assert_eq!(installed["installed"].as_array().map(Vec::len), Some(1), "{installed}");
    assert!(dir.join("app/escx_packages/acme/thermal/1.0.0/manifest.toml").is_file());
    assert!(server.stop().success());
}

/// A TCP connection to `addr` from the loopback address `source` (127.0.0.0/8 is all
/// local on Linux), as a blocking std stream.
fn connect_from(source: &str, addr: &str) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(addr.parse().unwrap()).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// Whether the service closed `stream` (end of file or a reset) within `limit`, having
/// sent nothing on it.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// Whether the service has already closed `stream` (checked without waiting).
fn closed_now(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

fn healthz_from(source: &str, addr: &str) -> u16 {
    let mut stream = connect_from(source, addr);
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Review 2 (Medium 6): connections that never send a byte were never closed (the
/// HTTP/1–HTTP/2 sniff has no timer), and enough of them starved the service. Now a
/// connection without a request is closed after --timeout-secs, one client address holds
/// at most --max-connections-per-client and all clients --max-connections; past a cap a
/// connection is closed as it is accepted, and others are still answered.
#[test]
fn idle_connections_are_closed_and_capped_while_others_are_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    issuer(dir);
    let server = Server::start(
        dir,
        &[
            "--issuer",
            "issuer",
            "--timeout-secs",
            "2",
            "--max-connections",
            "12",
            "--max-connections-per-client",
            "5",
        ],
    );
    let addr = server.addr.clone();
    let opened = Instant::now();
    // Six from one client: connections are admitted in whatever order their tasks run,
    // so exactly one of the six (not necessarily the last) is closed at once.
    let mut streams: Vec<TcpStream> = (0..6).map(|_| connect_from("127.0.0.1", &addr)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let (closed, open): (Vec<_>, Vec<_>) = streams.drain(..).partition(closed_now);
    assert_eq!(closed.len(), 1, "one client held {} connections with a cap of 5", open.len());
    // Another client is still answered.
    assert_eq!(healthz_from("127.0.0.2", &addr), 200);
    // Twelve in all: of thirteen open at once, exactly one is closed at once.
    let mut silent = open;
    let mut more: Vec<TcpStream> = (0..5).map(|_| connect_from("127.0.0.2", &addr)).collect();
    more.extend((0..2).map(|_| connect_from("127.0.0.3", &addr)));
    more.push(connect_from("127.0.0.4", &addr));
    std::thread::sleep(Duration::from_millis(500));
    let (closed, open): (Vec<_>, Vec<_>) = more.drain(..).partition(closed_now);
    assert_eq!(closed.len(), 1, "{} connections open with a cap of 12", silent.len() + open.len());
    silent.extend(open);
    assert!(opened.elapsed() < Duration::from_secs(2), "the checks above ran past the timeout");
    // Every silent connection is closed by the service once the timeout has passed.
    for (index, stream) in silent.iter_mut().enumerate() {
        let left = Duration::from_secs(8).saturating_sub(opened.elapsed()).max(Duration::from_millis(100));
        assert!(closed_within(stream, left), "silent connection {index} was never closed");
    }
    assert!(opened.elapsed() >= Duration::from_secs(2), "closed before the timeout");
    // Their places are given back.
    assert_eq!(healthz_from("127.0.0.1", &addr), 200);
    assert_eq!(healthz_from("127.0.0.4", &addr), 200);
    assert!(server.stop().success());
}

/// Review 2 (low): the discrete-Laplace sampler's running time reveals |noise| to within
/// one scale unit (privacy.md §3.1), so no network route may run it: aggregation stays a
/// local operator command. Every method on the paths a release could be asked for is
/// refused as unknown.
#[test]
fn no_service_route_runs_the_privacy_sampler() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    issuer(dir);
    let server = Server::start(dir, &["--issuer", "issuer"]);
    for path in ["/v1/aggregate", "/v1/aggregates", "/v1/releases", "/v1/release", "/v1/telemetry"] {
        for method in ["GET", "POST"] {
            let (status, _, body) = http(&server.addr, method, path, &[], b"");
            assert_eq!(status, 404, "{method} {path}");
            assert_eq!(error_code(&body), "not-found", "{method} {path}");
        }
    }
    assert!(server.stop().success());
}

/// Review 2 (low): `/metrics` was public and showed each purchase and redemption as it
/// happened, so anyone could time them and link a purchase to the redemption after it.
/// Now it is served only to the bearer of `--metrics-token-file`'s token, purchases and
/// redemptions are neither counted per request nor timed, and their counters move in
/// steps of 16.
#[test]
fn metrics_need_a_token_and_do_not_time_purchases_or_redemptions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = issuer(dir);
    std::fs::write(dir.join("metrics.token"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let server = Server::start(dir, &["--issuer", "issuer", "--metrics-token-file", "metrics.token"]);
    let scrape = |bearer: Option<&str>| {
        let header = bearer.map(|b| format!("Bearer {b}"));
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", h.as_str())).collect();
        let (status, _, body) = http(&server.addr, "GET", "/metrics", &headers, b"");
        (status, String::from_utf8(body).unwrap())
    };
    assert_eq!(scrape(None).0, 401);
    assert_eq!(scrape(Some("0123456789abcdef0123456789abcdee")).0, 401);
    let good = Some("0123456789abcdef0123456789abcdef");
    let (status, before) = scrape(good);
    assert_eq!(status, 200, "{before}");

    // 15 purchases: nothing a scrape shows moves.
    let requests = purchase_requests(dir, 16);
    let answers = burst(&server.addr, &token, &requests[..15]);
    assert!(answers.iter().all(Option::is_some));
    let (_, after) = scrape(good);
    for line in
        after.lines().filter(|l| l.contains("purchase") || l.contains("redeem") || l.contains("redemption"))
    {
        assert!(before.contains(line), "a scrape shows {line:?} after purchases");
    }
    assert!(after.contains("escx_purchases_total 0"), "{after}");
    assert!(!after.contains("endpoint=\"/v1/purchase\""), "{after}");
    // The 16th moves the counter by 16.
    assert!(burst(&server.addr, &token, &requests[15..]).iter().all(Option::is_some));
    assert!(scrape(good).1.contains("escx_purchases_total 16"));
    assert!(server.stop().success());
}

/// Issue 27 (10): `--listen localhost:0` was refused as "invalid socket address syntax";
/// a host name with a port is resolved, and a name that does not resolve is a usage error.
#[test]
fn listen_takes_a_host_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    issuer(dir);
    let server = Server::start_on(dir, "localhost:0", &["--issuer", "issuer"]);
    assert_eq!(http(&server.addr, "GET", "/healthz", &[], b"").0, 200);
    assert!(server.stop().success());
    let out = escx(dir)
        .args(["serve", "--issuer", "issuer", "--listen", "no-such-host.invalid:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 27 (3): after a purchase refused with 401, `license buy --count 2` "resent the
/// unanswered purchase" and bought 1 token. A definite refusal sold nothing, so it leaves
/// the outbox; the next purchase is the one asked for.
#[test]
fn a_refused_purchase_is_not_resent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = issuer(dir);
    let server = Server::start(dir, &["--issuer", "issuer"]);
    let url = server.url();
    let buy = |count: &str, token: &str| {
        escx(dir)
            .args(["license", "buy", "--server", &url, "--package", "acme/thermal", "--tier", "standard"])
            .args(["--count", count, "--wallet", "w", "--account-token", token, "--json"])
            .output()
            .unwrap()
    };
    let refused = buy("1", &"0".repeat(64));
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(json(&refused.stdout)["error"]["code"], "unauthorized");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("will not be resent"));
    let bought = buy("2", &token);
    assert!(bought.status.success(), "{}", String::from_utf8_lossy(&bought.stderr));
    let answer = json(&bought.stdout);
    assert_eq!((answer["tokens"].as_u64(), answer["resent"].as_bool()), (Some(2), Some(false)), "{answer}");
    assert!(std::fs::read_dir(dir.join("w/outbox")).unwrap().next().is_none(), "the outbox is empty");
    assert!(std::fs::read_dir(dir.join("w/pending")).unwrap().next().is_none(), "no purchase is pending");
    assert!(server.stop().success());
}

/// Issue 27 (9): `escx issuer account` had only `add`, so a leaked token could be neither
/// listed nor revoked. `list` names the accounts; `revoke` makes the token buy nothing from
/// the next purchase on, at the running service too.
#[test]
fn a_revoked_account_buys_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = issuer(dir);
    let listed =
        json(&escx(dir).args(["issuer", "account", "list", "issuer", "--json"]).output().unwrap().stdout);
    assert_eq!(listed["accounts"], serde_json::json!(["alice"]));
    let server = Server::start(dir, &["--issuer", "issuer"]);
    let url = server.url();
    let buy = || {
        escx(dir)
            .args(["license", "buy", "--server", &url, "--package", "acme/thermal", "--tier", "standard"])
            .args(["--wallet", "w", "--account-token", &token, "--json"])
            .output()
            .unwrap()
    };
    assert!(buy().status.success());
    escx(dir).args(["issuer", "account", "revoke", "issuer", "alice"]).assert().success();
    let refused = buy();
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(json(&refused.stdout)["error"]["code"], "unauthorized");
    let out = escx(dir).args(["issuer", "account", "revoke", "issuer", "alice", "--json"]).output().unwrap();
    assert_eq!(
        (out.status.code(), json(&out.stdout)["error"]["code"].as_str()),
        (Some(1), Some("unknown-account"))
    );
    let listed =
        json(&escx(dir).args(["issuer", "account", "list", "issuer", "--json"]).output().unwrap().stdout);
    assert_eq!(listed["accounts"], serde_json::json!([]));
    assert!(server.stop().success());
}

/// Issue 27 (7): `escx serve` logs its start, each request (method, route, status,
/// duration, the id it answered in `X-Request-Id`, an error's code) and its stop, as text
/// or JSON, and never a client address; `--quiet` keeps only failures on its side.
#[test]
fn the_service_logs_requests_without_client_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("proofs")).unwrap();
    let server = Server::start(dir, &["--proofs", "proofs", "--log-format", "json"]);
    let (status, headers, _) = http(&server.addr, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
    let id = headers
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("every answer names its request id")
        .trim()
        .to_owned();
    assert_eq!(id.len(), 16);
    let (status, _, _) = http(&server.addr, "GET", "/v1/statements/7", &[], b"");
    assert_eq!(status, 404);
    let (exit, log) = server.stop_with_log();
    assert!(exit.success());
    let events: Vec<Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["start", "request", "request", "stop"], "{log}");
    assert!(events[0]["listening"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    assert_eq!(
        (events[1]["method"].as_str(), events[1]["route"].as_str(), events[1]["status"].as_u64()),
        (Some("GET"), Some("/healthz"), Some(200))
    );
    assert_eq!(events[1]["request_id"].as_str(), Some(id.as_str()));
    assert!(events[1]["ms"].as_f64().is_some());
    // The route, not the raw path; the error's code.
    assert_eq!(events[2]["route"].as_str(), Some("/v1/statements/{seq}"), "{log}");
    assert_eq!(events[2]["code"].as_str(), Some("not-served"));
    assert_eq!(events[3]["requests"].as_u64(), Some(2));
    // No client address anywhere but the service's own listening URL.
    assert_eq!(log.matches("127.0.0.1").count(), 1, "{log}");
    // A redemption (even a refused one) is never a line: its time would link it to its
    // purchase; it still answers with a request id.
    let server = Server::start(dir, &["--proofs", "proofs", "--log-format", "json"]);
    let (status, headers, _) = http(&server.addr, "POST", "/v1/redeem", &[], b"not a request");
    assert!(status >= 400 && headers.contains("x-request-id: "), "{status} {headers}");
    let (_, log) = server.stop_with_log();
    assert!(!log.contains("redeem") && log.lines().count() == 2, "{log}");

    // Text, quiet: nothing for answers the service gave correctly.
    let server = Server::start(dir, &["--proofs", "proofs", "--quiet"]);
    assert_eq!(http(&server.addr, "GET", "/healthz", &[], b"").0, 200);
    assert_eq!(http(&server.addr, "GET", "/v1/statements/7", &[], b"").0, 404);
    let (exit, log) = server.stop_with_log();
    assert!(exit.success());
    assert_eq!(log, "", "quiet logs only 5xx");
    let server = Server::start(dir, &["--proofs", "proofs"]);
    assert_eq!(http(&server.addr, "GET", "/healthz", &[], b"").0, 200);
    let (_, log) = server.stop_with_log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines[1].contains(" request method=GET route=/healthz status=200 ms="), "{log}");
    assert!(lines[2].ends_with(" stop requests=1"), "{log}");
}
