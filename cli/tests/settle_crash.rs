//! Crash consistency (settlement.md §3.3): `escx settle run` killed with SIGKILL at random
//! moments, hundreds of times, then re-run. Every settlement must be present exactly once,
//! double entry must balance, every settlement must conserve its gross, and the balances
//! must equal those of one uninterrupted run.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const MANIFEST: &str = r#"[package]
name = "acme/thermal"
version = "1.0.0"

[revenue]
currency = "USD"
residual = "acme"
effective_from = "2026-01-01"

[[revenue.step]]
party = "platform"
share_of_gross_bps = 1500
[[revenue.step]]
party = "investor"
recoup_cap = "5000.00"
[[revenue.step]]
residual_weights = { acme = 3, partner = 1 }
"#;

/// SplitMix64, so every run of the test kills at the same moments.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn events(count: usize, mix: &mut Mix) -> String {
    let records: Vec<String> = (0..count)
        .map(|i| {
            let cents = 1 + mix.next() % 20_000;
            format!(
                r#"{{"id": "e{i}", "time": {}, "package": "acme/thermal", "tier": "standard", "kind": "sale", "gross": "{}.{:02}", "currency": "USD"}}"#,
                1_790_000_000 + i as u64 * 60,
                cents / 100,
                cents % 100
            )
        })
        .collect();
    format!("[{}]", records.join(",\n"))
}

fn escx(args: &[&str], dir: &Path) -> Command {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("escx"));
    command
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

fn statement_count(db: &rusqlite::Connection) -> i64 {
    db.query_row("SELECT COUNT(*) FROM statements", [], |r| r.get(0)).unwrap()
}

fn balances(dir: &Path, ledger: &str) -> serde_json::Value {
    let out = escx(&["ledger", "balances", ledger, "--json"], dir)
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["balances"].clone()
}

#[test]
fn settle_run_survives_sigkill_at_random_moments() {
    const ROUNDS: usize = 200;
    const PER_ROUND: usize = 10;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests/thermal.toml"), MANIFEST).unwrap();
    let mut mix = Mix(7);
    let all = events(ROUNDS * PER_ROUND, &mut mix);
    let parsed: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    assert!(escx(&["key", "generate", "--out", "op", "--unencrypted"], dir).status().unwrap().success());
    assert!(escx(&["settle", "init", "ledger.db", "--platform-bps", "300"], dir).status().unwrap().success());

    // Every tenth round runs to completion and measures how long a run takes; the others
    // are killed at a random moment within that time.
    let mut typical = Duration::from_millis(50);
    let mut killed = 0;
    let mut between_commits = 0;
    let settled = || -> i64 {
        let db = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
        db.query_row("SELECT COUNT(*) FROM settlements", [], |r| r.get(0)).unwrap()
    };
    for round in 0..ROUNDS {
        let upto = &parsed[..(round + 1) * PER_ROUND];
        std::fs::write(dir.join("events.json"), serde_json::to_string(upto).unwrap()).unwrap();
        let args = [
            "settle",
            "run",
            "ledger.db",
            "--events",
            "events.json",
            "--manifests",
            "manifests",
            "--batch-size",
            "3",
            "--operator-key",
            "op.key",
        ];
        let before = settled();
        let started = Instant::now();
        let mut child = escx(&args, dir).spawn().unwrap();
        if round % 10 == 0 {
            assert!(child.wait().unwrap().success(), "round {round}: run failed");
            typical = started.elapsed();
            continue;
        }
        std::thread::sleep(Duration::from_micros(mix.next() % (typical.as_micros() as u64 + 1)));
        match child.try_wait().unwrap() {
            Some(status) => assert!(status.success(), "round {round}: run failed with {status}"),
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
                // Whole batches of 3 or nothing: never a torn settlement.
                let after = settled();
                let target = upto.len() as i64;
                if after > before && after < target {
                    between_commits += 1;
                }
            }
        }
    }
    assert!(killed >= ROUNDS / 4, "only {killed} of {ROUNDS} runs were killed mid-way");
    assert!(between_commits >= 10, "only {between_commits} kills landed between two commits of a run");

    // Finish, then compare with one uninterrupted run over the same events.
    std::fs::write(dir.join("events.json"), &all).unwrap();
    let finish = [
        "settle",
        "run",
        "ledger.db",
        "--events",
        "events.json",
        "--manifests",
        "manifests",
        "--operator-key",
        "op.key",
    ];
    assert!(escx(&finish, dir).status().unwrap().success());
    assert!(escx(&["ledger", "audit", "ledger.db"], dir).status().unwrap().success());
    assert!(escx(&["settle", "init", "clean.db", "--platform-bps", "300"], dir).status().unwrap().success());
    let clean = [
        "settle",
        "run",
        "clean.db",
        "--events",
        "events.json",
        "--manifests",
        "manifests",
        "--operator-key",
        "op.key",
    ];
    assert!(escx(&clean, dir).status().unwrap().success());
    assert_eq!(balances(dir, "ledger.db"), balances(dir, "clean.db"));

    let db = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
    let (settlements, distinct): (i64, i64) = db
        .query_row("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM settlements", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((settlements, distinct), ((ROUNDS * PER_ROUND) as i64, (ROUNDS * PER_ROUND) as i64));

    // Every batch closed with its statement, and the statements form one unbroken chain.
    let exported: Vec<String> = (1..=statement_count(&db))
        .map(|seq| {
            let name = format!("s{seq}.cbor");
            let args = ["statement", "export", "ledger.db", "--seq", &seq.to_string(), "-o", &name];
            assert!(escx(&args, dir).status().unwrap().success());
            name
        })
        .collect();
    let mut verify = vec!["statement", "verify", "--operator-pub", "op.pub"];
    verify.extend(exported.iter().map(String::as_str));
    assert!(escx(&verify, dir).status().unwrap().success(), "the statement chain does not verify");
    let unstated: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM settlements WHERE batch NOT IN (SELECT seq FROM statements)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unstated, 0, "settlements without a statement");
    eprintln!("{killed} of {ROUNDS} runs killed with SIGKILL, {between_commits} of them between two commits");
}
