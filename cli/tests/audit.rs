//! The auditor's tools through the real binary: statement proofs, a publisher's revenue
//! and threshold proofs, and an auditor holding only public files.

mod common;

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

const MANIFEST: &str = include_str!("../../test-vectors/settlement/worked-example.toml");

fn escx(dir: &Path) -> Command {
    let mut command = Command::cargo_bin("escx").unwrap();
    command.current_dir(dir).env_remove("ESCX_PASSPHRASE");
    command
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

#[test]
fn operator_publisher_and_auditor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests/thermal.toml"), MANIFEST).unwrap();
    escx(dir).args(["key", "generate", "--out", "op", "--unencrypted"]).assert().success();
    escx(dir).args(["settle", "init", "l.db", "--platform-bps", "1000"]).assert().success();
    for (name, events) in [
        (
            "e1.json",
            r#"[{"id": "s1", "time": "2026-11-01T10:00:00Z", "package": "acme/thermal", "tier": "standard", "kind": "sale", "gross": "1234.56", "currency": "USD"},
                       {"id": "s2", "time": "2026-11-02T10:00:00Z", "package": "acme/thermal", "tier": "standard", "kind": "sale", "gross": "49.00", "currency": "USD"}]"#,
        ),
        (
            "e2.json",
            r#"[{"id": "s3", "time": "2026-11-03T10:00:00Z", "package": "acme/thermal", "tier": "standard", "kind": "sale", "gross": "300.00", "currency": "USD"}]"#,
        ),
    ] {
        std::fs::write(dir.join(name), events).unwrap();
        escx(dir)
            .args([
                "settle",
                "run",
                "l.db",
                "--events",
                name,
                "--manifests",
                "manifests",
                "--operator-key",
                "op.key",
                "--at",
                "2026-11-05T10:00:00Z",
            ])
            .assert()
            .success();
    }
    let run = |args: &[&str]| escx(dir).args(args).assert().success();
    // November is closed by the first statement after it (proofs.md §3.1).
    let out = escx(dir)
        .args(["statement", "close-period", "l.db", "--period", "2026-11", "--operator-key", "op.key"])
        .args(["--at", "2026-11-30T10:00:00Z", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out.stdout)["error"]["code"], "period-open");
    let out = escx(dir)
        .args([
            "statement",
            "close-period",
            "l.db",
            "--period",
            "2026-11",
            "--operator-key",
            "op.key",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        (json(&out.stdout)["seq"].as_u64(), json(&out.stdout)["signed"].as_bool()),
        (Some(3), Some(true))
    );
    run(&["statement", "export", "l.db", "--dir", "statements"]);
    run(&["statement", "prove", "l.db", "--operator-pub", "op.pub", "--dir", "proofs"]);
    run(&["statement", "openings", "l.db", "--party", "referrer", "--dir", "pub-openings"]);
    let period = "2026-11".to_string();
    let common = [
        "--statements",
        "statements",
        "--openings",
        "pub-openings",
        "--party",
        "referrer",
        "--period",
        &period,
        "--operator-pub",
        "op.pub",
    ];
    let out = escx(dir)
        .args(["proof", "revenue"])
        .args(common)
        .args(["-o", "rev.proof", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let proves = json(&out.stdout)["proves"].as_str().unwrap().to_owned();
    assert!(proves.contains("referrer's payouts in") && proves.contains("over statements 1..2"), "{proves}");
    run(&[
        "proof",
        "threshold",
        common[0],
        common[1],
        common[2],
        common[3],
        common[4],
        common[5],
        common[6],
        common[7],
        common[8],
        common[9],
        "--at-least",
        "100.00",
        "-o",
        "thr.proof",
    ]);
    // Above the total: no proof, exit 1.
    let out = escx(dir)
        .args(["proof", "threshold"])
        .args(common)
        .args(["--at-least", "1000000.00", "-o", "big.proof", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out.stdout)["error"]["code"], "proof-refused");
    assert!(!dir.join("big.proof").exists());

    // The auditor: an empty directory with public files only.
    let audit = tmp.path().join("auditor");
    common::copy_dir(&dir.join("statements"), &audit.join("statements"));
    common::copy_dir(&dir.join("proofs"), &audit.join("proofs"));
    for file in ["op.pub", "rev.proof", "thr.proof"] {
        std::fs::copy(dir.join(file), audit.join(file)).unwrap();
    }
    let a = |args: &[&str]| escx(&audit).args(args).output().unwrap();
    let out =
        a(&["audit", "statements", "statements", "--operator-pub", "op.pub", "--proofs", "proofs", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let report = json(&out.stdout);
    assert_eq!((report["statements"].as_u64(), report["range_proofs"].as_bool()), (Some(3), Some(true)));
    // Under another key every statement fails, each named by the number it carries
    // (issue 27, 15: they were called "statement 0").
    escx(&audit).args(["key", "generate", "--out", "other", "--unencrypted"]).assert().success();
    let out = a(&["audit", "statements", "statements", "--operator-pub", "other.pub"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    let named = (1..=3).any(|n| text.contains(&format!("statement-{n}.cbor: statement {n}:")));
    assert!(named && !text.contains("statement 0"), "{text}");
    assert!(report["payouts_proven"].as_u64().unwrap() >= 6);
    // The referrer's share of what remains carries a signed rule in each of the 3 entries;
    // the platform is paid by two steps (the ledger's fee and the manifest's), merged into
    // one payout, which has none.
    assert_eq!(report["splits_proven"].as_u64(), Some(3), "{report}");
    let out = a(&[
        "audit",
        "verify",
        "rev.proof",
        "--statements",
        "statements",
        "--operator-pub",
        "op.pub",
        "--json",
    ]);
    assert!(out.status.success());
    assert_eq!(json(&out.stdout)["proves"].as_str().unwrap(), proves);
    let out = a(&["audit", "verify", "thr.proof", "--statements", "statements", "--operator-pub", "op.pub"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("are at least 100.00 USD"));

    // A forged threshold (the bound raised in the file), and a tampered range proof.
    let mut bytes = std::fs::read(audit.join("thr.proof")).unwrap();
    let at = bytes.windows(6).position(|w| w == b"amount").unwrap() + 6;
    bytes[at + 1] ^= 0x01;
    std::fs::write(audit.join("forged.proof"), bytes).unwrap();
    let out = a(&[
        "audit",
        "verify",
        "forged.proof",
        "--statements",
        "statements",
        "--operator-pub",
        "op.pub",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        ["proof-invalid", "proof-malformed"].contains(&json(&out.stdout)["error"]["code"].as_str().unwrap())
    );
    let mut proofs = std::fs::read(audit.join("proofs/statement-1.proofs")).unwrap();
    let n = proofs.len();
    proofs[n - 40] ^= 0x20;
    std::fs::write(audit.join("proofs/statement-1.proofs"), proofs).unwrap();
    let audit_proofs = || {
        a(&["audit", "statements", "statements", "--operator-pub", "op.pub", "--proofs", "proofs", "--json"])
    };
    let out = audit_proofs();
    assert_eq!(out.status.code(), Some(1));
    let tampered = json(&out.stdout)["error"].clone();
    assert!(tampered["message"].as_str().unwrap().contains("statement-1.proofs"), "{tampered}");
    // A later statement's proofs file missing as well: the first failure by statement
    // number decides, not whichever file the verifier happened to read first.
    let later = std::fs::read(audit.join("proofs/statement-3.proofs")).unwrap();
    std::fs::remove_file(audit.join("proofs/statement-3.proofs")).unwrap();
    let out = audit_proofs();
    assert_eq!(json(&out.stdout)["error"], tampered);
    std::fs::write(audit.join("proofs/statement-3.proofs"), later).unwrap();
    // The statement after November withheld from the auditor: the month is not shown to be
    // complete, so the proof is refused (before, a prover could leave out the month's last
    // statements this way).
    let verify = |a: &dyn Fn(&[&str]) -> std::process::Output| {
        let out = a(&[
            "audit",
            "verify",
            "rev.proof",
            "--statements",
            "statements",
            "--operator-pub",
            "op.pub",
            "--json",
        ]);
        (out.status.code(), json(&out.stdout)["error"]["code"].as_str().unwrap_or_default().to_owned())
    };
    let closing = std::fs::read(audit.join("statements/statement-3.cbor")).unwrap();
    std::fs::remove_file(audit.join("statements/statement-3.cbor")).unwrap();
    assert_eq!(verify(&a), (Some(1), "proof-period-open".to_owned()));
    std::fs::write(audit.join("statements/statement-3.cbor"), closing).unwrap();
    // A statement missing inside the set: the chain is broken.
    std::fs::remove_file(audit.join("statements/statement-2.cbor")).unwrap();
    assert_eq!(verify(&a), (Some(1), "statement-chain".to_owned()));
}
