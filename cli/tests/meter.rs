//! Metering through the real binary: the meter, the operator, billing into settlement, and
//! a meter killed with SIGKILL over and over.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

fn escx(dir: &Path) -> Command {
    let mut command = Command::cargo_bin("escx").unwrap();
    command.current_dir(dir).env_remove("ESCX_PASSPHRASE");
    command
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

const MANIFEST: &str = "[package]\nname = \"acme/thermal\"\nversion = \"1.0.0\"\n\
    [pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n\
    [[pricing.tier]]\nname = \"metered\"\nprice = \"6.00\"\nunit = \"hour\"\ntelemetry = \"private\"\n\
    [telemetry]\nmetrics = [\"invocations\"]\nwindow = \"24h\"\ncohort_min_size = 50\nepsilon = 1.0\n\
    [revenue]\ncurrency = \"USD\"\nresidual = \"publisher\"\neffective_from = \"2026-01-01\"\n\
    [[revenue.step]]\nparty = \"referrer\"\nshare_of_gross_bps = 1000\n";

/// An issuer selling the metered tier, an operator store, and a wallet `w` holding one
/// license; returns the start of the first whole hour of the license.
fn setup(dir: &Path) -> u64 {
    escx(dir).args(["key", "generate", "--out", "acme", "--unencrypted"]).assert().success();
    std::fs::create_dir_all(dir.join("pkg")).unwrap();
    std::fs::write(dir.join("pkg/manifest.toml"), MANIFEST).unwrap();
    for args in [
        &["package", "pack", "pkg", "-o", "p.escx", "--key", "acme.key"][..],
        &["issuer", "init", "issuer", "--unencrypted"],
        &["issuer", "publish", "issuer", "-o", "issuer.pub"],
        &["issuer", "register-package", "issuer", "p.escx", "--pubkey", "acme.pub"],
        &["license", "request", "--issuer", "issuer.pub", "--package", "acme/thermal", "--tier", "metered"],
        &["issuer", "issue", "issuer", "req.cbor", "-o", "resp.cbor"],
        &["license", "finalize", "resp.cbor", "--wallet", "w"],
        &["license", "redeem", "--wallet", "w", "--package", "acme/thermal", "-o", "redeem.sealed"],
        &["issuer", "redeem", "issuer", "redeem.sealed", "-o", "license.sealed"],
        &["license", "install", "license.sealed", "--wallet", "w"],
        &["operator", "init", "op", "--issuer", "issuer.pub"],
        &["operator", "package", "op", "p.escx", "--pubkey", "acme.pub"],
    ] {
        let mut command = escx(dir);
        command.args(args);
        if args[1] == "request" {
            command.args(["--wallet", "w", "-o", "req.cbor"]);
        }
        command.assert().success();
    }
    let now = escx::now_unix();
    (now.floor(3600) + 3600).0
}

fn at(seconds: u64) -> String {
    format!("@{seconds}")
}

fn hour(seconds: u64) -> String {
    escx_metering::format_hour(escx::UnixSeconds(seconds))
}

#[test]
fn record_report_ingest_close_bill_and_settle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let h1 = setup(dir);
    let h2 = h1 + 3600;
    for (t, n) in [(h1 + 65, "2"), (h1 + 70, "1"), (h2 + 600, "5")] {
        escx(dir)
            .args([
                "meter",
                "record",
                "--issuer",
                "issuer.pub",
                "--wallet",
                "w",
                "--package",
                "acme/thermal",
                "--unit",
                "invocations",
            ])
            .args(["--amount", n, "--at", &at(t)])
            .assert()
            .success();
    }
    // Issue 27 (4): a unit the package does not meter is refused at record, before a
    // report the operator would refuse could be made; a mode other than the tier's at report.
    let out = escx(dir)
        .args(["meter", "record", "--issuer", "issuer.pub", "--wallet", "w", "--package", "acme/thermal"])
        .args(["--unit", "custom:foo", "--at", &at(h2 + 700), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out.stdout)["error"]["code"], "unit-undeclared");
    let out = escx(dir)
        .args(["meter", "report", "--wallet", "w", "--package", "acme/thermal", "--hour", &hour(h1)])
        .args(["--telemetry", "share", "-o", "wrong.cbor", "--at", &at(h2 + 3600 + 60), "--json"])
        .output()
        .unwrap();
    assert_eq!(json(&out.stdout)["error"]["code"], "report-tier-mismatch");
    assert!(!dir.join("wrong.cbor").exists());
    // Too early: the hour has not ended at the real now.
    let out = escx(dir)
        .args([
            "meter",
            "report",
            "--wallet",
            "w",
            "--package",
            "acme/thermal",
            "--hour",
            &hour(h1),
            "-o",
            "r1.cbor",
        ])
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out.stdout)["error"]["code"], "report-too-early");
    let later = at(h2 + 3600 + 60);
    for (h, file) in [(h1, "r1.cbor"), (h2, "r2.cbor")] {
        escx(dir)
            .args([
                "meter",
                "report",
                "--wallet",
                "w",
                "--package",
                "acme/thermal",
                "--hour",
                &hour(h),
                "-o",
                file,
            ])
            .args(["--at", &later, "--json"])
            .assert()
            .success()
            .stdout(predicates::str::contains("\"telemetry\": \"private\""));
    }
    // A retry writes the same report over the same file; another file is never replaced.
    escx(dir)
        .args([
            "meter",
            "report",
            "--wallet",
            "w",
            "--package",
            "acme/thermal",
            "--hour",
            &hour(h1),
            "-o",
            "r1.cbor",
        ])
        .args(["--at", &later])
        .assert()
        .success();
    escx(dir)
        .args([
            "meter",
            "report",
            "--wallet",
            "w",
            "--package",
            "acme/thermal",
            "--hour",
            &hour(h1),
            "-o",
            "r2.cbor",
        ])
        .args(["--at", &later])
        .assert()
        .code(3);
    // Recording into a reported hour is refused.
    escx(dir)
        .args([
            "meter",
            "record",
            "--issuer",
            "issuer.pub",
            "--wallet",
            "w",
            "--package",
            "acme/thermal",
            "--unit",
            "invocations",
        ])
        .args(["--at", &at(h2 + 700), "--json"])
        .assert()
        .code(1)
        .stdout(predicates::str::contains("hour-reported"));

    // A damaged report is listed with its code, and the command exits 1.
    let mut damaged = std::fs::read(dir.join("r2.cbor")).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(dir.join("bad.cbor"), damaged).unwrap();
    let out = escx(dir)
        .args(["operator", "ingest", "op", "r1.cbor", "bad.cbor", "--at", &later, "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let result = json(&out.stdout);
    assert_eq!((result["stored"].as_u64(), result["refused"].as_u64()), (Some(1), Some(1)));
    assert_eq!(result["reports"][1]["code"], "report-signature-invalid");
    // The same reports again: duplicates, exit 0.
    std::fs::create_dir_all(dir.join("reports")).unwrap();
    std::fs::copy(dir.join("r2.cbor"), dir.join("reports/r2.cbor")).unwrap();
    let out = escx(dir)
        .args(["operator", "ingest", "op", "r1.cbor", "--dir", "reports", "--at", &later, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let result = json(&out.stdout);
    assert_eq!((result["stored"].as_u64(), result["duplicates"].as_u64()), (Some(1), Some(1)));

    // A dispute over minute 1 of hour 1 (3 invocations).
    escx(dir)
        .args(["meter", "open", "--wallet", "w", "--package", "acme/thermal", "--hour", &hour(h1)])
        .args(["--minute", "1", "--unit", "invocations", "-o", "o.cbor"])
        .assert()
        .success();
    let out = escx(dir).args(["operator", "check-opening", "op", "o.cbor", "--json"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(json(&out.stdout)["values"]["invocations"], 3);

    // The period: close, bill, settle.
    let period = escx_metering::Period::of(escx::UnixSeconds(h1));
    let end = at((period.end() + 60).0);
    let period = period.to_string();
    escx(dir)
        .args([
            "meter",
            "close",
            "--wallet",
            "w",
            "--package",
            "acme/thermal",
            "--period",
            &period,
            "-o",
            "p.cbor",
        ])
        .args(["--at", &end])
        .assert()
        .success();
    let out = escx(dir).args(["operator", "close", "op", "p.cbor", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let closed = json(&out.stdout);
    assert_eq!(closed["totals"]["invocations"], 8);
    assert_eq!(closed["totals"]["minutes"], 2);
    escx(dir).args(["operator", "billing", "op", "--period", &period, "-o", "usage.json"]).assert().success();
    let events = json(&std::fs::read(dir.join("usage.json")).unwrap());
    assert_eq!(events[0]["kind"], "usage");
    assert_eq!(events[0]["gross"], "0.20");
    // A close the store holds with more minutes than the month has (written by hand): that
    // license is named and not billed, the command still writes the others' events and
    // exits 0 (metering.md §7.2).
    {
        let db = rusqlite::Connection::open(dir.join("op/operator.sqlite")).unwrap();
        db.execute("UPDATE close_totals SET total = ?1 WHERE unit = 'minutes'", [1i64 << 62]).unwrap();
        let out = escx(dir)
            .args(["operator", "billing", "op", "--period", &period, "-o", "usage-bad.json", "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let answer = json(&out.stdout);
        assert_eq!(answer["refused"][0]["code"], "usage-impossible", "{answer}");
        assert_eq!(answer["events"], 0);
        assert!(String::from_utf8_lossy(&out.stderr).contains("is not billed"));
        assert_eq!(json(&std::fs::read(dir.join("usage-bad.json")).unwrap()), serde_json::json!([]));
        db.execute("UPDATE close_totals SET total = 2 WHERE unit = 'minutes'", []).unwrap();
    }
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests/thermal.toml"), MANIFEST).unwrap();
    escx(dir).args(["key", "generate", "--out", "opkey", "--unencrypted"]).assert().success();
    escx(dir).args(["settle", "init", "l.db"]).assert().success();
    let out = escx(dir)
        .args([
            "settle",
            "run",
            "l.db",
            "--events",
            "usage.json",
            "--manifests",
            "manifests",
            "--operator-key",
            "opkey.key",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&out.stdout)["report"]["settled"], 1);

    // Aggregation of a cohort of one is suppressed; evidence is empty.
    let day = h1 - h1 % 86_400;
    let window = format!("{}/{}", hour(day), hour(day + 86_400));
    let out = escx(dir)
        .args([
            "operator",
            "aggregate",
            "op",
            "--package",
            "acme/thermal",
            "--window",
            &window,
            "--clip",
            "10",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(json(&out.stdout)["released"], false);
    let out = escx(dir).args(["operator", "evidence", "op", "--json"]).output().unwrap();
    assert_eq!(json(&out.stdout)["evidence"].as_array().unwrap().len(), 0);
    // Usage errors exit 2, with --json too.
    let out = escx(dir)
        .args([
            "operator",
            "aggregate",
            "op",
            "--package",
            "acme/thermal",
            "--window",
            "x",
            "--clip",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json(&out.stdout)["error"]["code"], "usage");

    // Issue 27 (21): the closed period is compacted once it ended long enough ago; billing
    // writes the same events after it.
    let month_end = escx_metering::Period::of(escx::UnixSeconds(h1)).end().0;
    let compact = |keep: &str, at_secs: u64| {
        escx(dir)
            .args(["operator", "compact", "op", "--keep-days", keep, "--at", &at(at_secs), "--json"])
            .output()
            .unwrap()
    };
    assert_eq!(compact("10", month_end + 40 * 86_400).status.code(), Some(1), "under 35 days is refused");
    assert_eq!(json(&compact("180", month_end + 40 * 86_400).stdout)["reports"], 0);
    let out = compact("35", month_end + 40 * 86_400);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&out.stdout)["reports"], 2);
    escx(dir)
        .args(["operator", "billing", "op", "--period", &period, "-o", "usage-after.json"])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(dir.join("usage-after.json")).unwrap(),
        std::fs::read(dir.join("usage.json")).unwrap()
    );
}

#[cfg(unix)]
#[test]
fn a_meter_killed_mid_record_never_corrupts() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let h1 = setup(dir);
    let binary = assert_cmd::cargo::cargo_bin("escx");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut spawned, mut succeeded) = (0u64, 0u64);
    for round in 0..40u64 {
        if Instant::now() > deadline {
            break;
        }
        let mut child = std::process::Command::new(&binary)
            .current_dir(dir)
            .args([
                "meter",
                "record",
                "--issuer",
                "issuer.pub",
                "--wallet",
                "w",
                "--package",
                "acme/thermal",
                "--unit",
                "invocations",
            ])
            .args(["--at", &at(h1 + 30)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        spawned += 1;
        // From at once (killed while starting) to about when a record commits.
        std::thread::sleep(Duration::from_micros((round * 1_300) % 14_000));
        // SIGKILL: no destructor, no flush, no chance to finish a write.
        let _ = child.kill();
        if child.wait().unwrap().success() {
            succeeded += 1;
        }
    }
    let db = rusqlite::Connection::open(dir.join("w/meter.sqlite")).unwrap();
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let value: i64 = db
        .query_row("SELECT coalesce(sum(value), 0) FROM counters WHERE unit = 'invocations'", [], |r| {
            r.get(0)
        })
        .unwrap_or(0);
    // Some were killed; every record that reported success is there, none twice.
    assert!(succeeded < spawned, "no run was killed");
    assert!(value as u64 >= succeeded && value as u64 <= spawned, "{value} of {succeeded}..{spawned}");
    drop(db);
    // The meter still works and counts on from there.
    let out = escx(dir)
        .args([
            "meter",
            "record",
            "--issuer",
            "issuer.pub",
            "--wallet",
            "w",
            "--package",
            "acme/thermal",
            "--unit",
            "invocations",
        ])
        .args(["--at", &at(h1 + 30), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&out.stdout)["value"].as_u64().unwrap(), value as u64 + 1);
}
