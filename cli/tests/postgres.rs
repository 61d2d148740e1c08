//! The settlement commands and `escx serve --ledger` on a PostgreSQL URL, against a
//! throwaway cluster (settlement.md §5.5): concurrent `settle run` processes on one
//! database give one linear, verifying chain; two service nodes serve the same statements.
//! Ignored by `cargo test`, which needs nothing installed; `.ci/run` runs them with
//! `--ignored` after installing PostgreSQL when it is missing.

mod common;
#[path = "../../settlement/tests/pg/mod.rs"]
mod pg;

use std::io::{BufRead, BufReader, Read, Write};
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
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests/thermal.toml"), common::METERED_MANIFEST).unwrap();
    escx(dir).args(["key", "generate", "--out", "op", "--unencrypted"]).assert().success();
    run(dir, &["settle", "init", &url, "--platform-bps", "1500"]);
    // A second init on the same database is refused: nothing is overwritten.
    let out = escx(dir).args(["settle", "init", &url, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));

    // Three operators' processes settle their own events into the one ledger at once.
    for w in 0..3 {
        std::fs::write(dir.join(format!("events-{w}.json")), events(&format!("w{w}"), 12)).unwrap();
    }
    let children: Vec<_> = (0..3)
        .map(|w| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("escx"))
                .current_dir(dir)
                .args(["settle", "run", &url, "--events", &format!("events-{w}.json")])
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
    let nodes: Vec<(std::process::Child, String)> = (0..2)
        .map(|_| {
            let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("escx"))
                .current_dir(dir)
                .args(["serve", "--ledger", &url, "--listen", "127.0.0.1:0"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            let addr = line
                .strip_prefix("listening on http://")
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            (child, addr)
        })
        .collect();
    let exported = std::fs::read(dir.join("statements/statement-18.cbor")).unwrap();
    for (_, addr) in &nodes {
        assert_eq!(get(addr, "/v1/statements/18"), exported);
    }
    for (mut child, _) in nodes {
        let _ = child.kill();
        let _ = child.wait();
    }
}
