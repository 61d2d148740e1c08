//! `escx settle` through the real binary.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

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
party = "referrer"
share_of_remaining_bps = 1000
[[revenue.step]]
party = "studio"
fixed = "10.00"
[[revenue.step]]
party = "investor"
recoup_cap = "5000.00"
[[revenue.step]]
residual_weights = { acme = 3, partner = 1 }
"#;

const SOLUTION: &str = r#"[package]
name = "acme/suite"
version = "1.0.0"

[solution]
packages = { "acme/thermal" = "^1" }

[solution.tier]
party = "suite"
share_of_gross_bps = 2000
"#;

fn escx(dir: &std::path::Path) -> Command {
    let mut command = Command::cargo_bin("escx").unwrap();
    command.current_dir(dir);
    command
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

#[test]
fn preview_prints_the_split_and_its_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("manifest.toml"), MANIFEST).unwrap();
    let out = escx(dir)
        .args(["settle", "preview", "--manifest", "manifest.toml", "--gross", "1234.56"])
        .args(["--recouped", "investor=4950", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let value = json(&out.stdout);
    assert_eq!(value["gross_micros"], 1_234_560_000u64);
    let payouts: Vec<(String, u64)> = value["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["party"].as_str().unwrap().to_owned(), p["micros"].as_u64().unwrap()))
        .collect();
    let expected = [
        ("platform", 185_184_000),
        ("referrer", 104_937_600),
        ("studio", 10_000_000),
        ("investor", 50_000_000),
        ("acme", 663_328_800),
        ("partner", 221_109_600),
    ];
    assert_eq!(payouts, expected.map(|(p, m)| (p.to_owned(), m)));
    assert_eq!(value["trace"].as_array().unwrap().len(), 7);

    escx(dir)
        .args(["settle", "preview", "--manifest", ".", "--gross", "1234.56"])
        .assert()
        .success()
        .stdout(predicate::str::contains("share_of_remaining_bps").and(predicate::str::contains("104.9376")));
}

#[test]
fn preview_chains_platform_and_solution_tiers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("suite")).unwrap();
    std::fs::write(dir.join("manifest.toml"), MANIFEST).unwrap();
    std::fs::write(dir.join("suite/manifest.toml"), SOLUTION).unwrap();
    let out = escx(dir)
        .args(["settle", "preview", "--manifest", ".", "--gross", "100", "--solution", "suite"])
        .args(["--platform-bps", "1000", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let value = json(&out.stdout);
    let payouts: Vec<(&str, u64)> = value["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["party"].as_str().unwrap(), p["micros"].as_u64().unwrap()))
        .collect();
    // 10 % of 100 to the platform tier; 20 % of the 90 left to the suite; the package's
    // waterfall on the 72 that reach it (its own platform step adds 10.80 to the platform).
    let expected = [
        ("platform", 20_800_000),
        ("suite", 18_000_000),
        ("referrer", 6_120_000),
        ("studio", 10_000_000),
        ("investor", 45_080_000),
        ("acme", 0),
        ("partner", 0),
    ];
    assert_eq!(payouts, expected);
    let total: u64 = value["payouts"].as_array().unwrap().iter().map(|p| p["micros"].as_u64().unwrap()).sum();
    assert_eq!(total, 100_000_000);
}

#[test]
fn preview_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("manifest.toml"), MANIFEST).unwrap();
    escx(dir)
        .args(["settle", "preview", "--manifest", ".", "--gross", "12.3456789"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--gross"));
    let out = escx(dir)
        .args(["settle", "preview", "--manifest", ".", "--gross", "1", "--at", "2025-06-01", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out.stdout)["error"]["code"], "revenue-not-in-force");
    std::fs::write(dir.join("manifest.toml"), "[package]\nname = \"a/b\"\nversion = \"1.0.0\"\n").unwrap();
    escx(dir)
        .args(["settle", "preview", "--manifest", ".", "--gross", "1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no [revenue]"));
}
