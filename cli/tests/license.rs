//! The licensing flow through the real binary: every message is a file.

mod common;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn escx(dir: &std::path::Path) -> Command {
    let mut command = Command::cargo_bin("escx").unwrap();
    command.current_dir(dir).env_remove("ESCX_PASSPHRASE");
    command
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// A publisher key `acme` and a paid package source in `pkg/` (tier "standard", 49.00 USD).
fn paid_package(dir: &std::path::Path) {
    escx(dir).args(["key", "generate", "--out", "acme", "--unencrypted"]).assert().success();
    std::fs::create_dir_all(dir.join("pkg")).unwrap();
    std::fs::write(dir.join("pkg/manifest.toml"), common::PAID_MANIFEST).unwrap();
}

/// [`paid_package`] packed as `p.escx`, and an issuer in `issuer/` (bundle `issuer.pub`)
/// that sells it.
fn issuer_with_package(dir: &std::path::Path) {
    paid_package(dir);
    for args in [
        &["package", "pack", "pkg", "-o", "p.escx", "--key", "acme.key"][..],
        &["issuer", "init", "issuer", "--unencrypted"],
        &["issuer", "publish", "issuer", "-o", "issuer.pub"],
        &["issuer", "register-package", "issuer", "p.escx", "--pubkey", "acme.pub"],
    ] {
        escx(dir).args(args).assert().success();
    }
}

#[test]
fn buy_redeem_verify_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = |args: &[&str]| escx(dir).args(args).assert().success();
    issuer_with_package(dir);
    run(&[
        "license",
        "request",
        "--issuer",
        "issuer.pub",
        "--package",
        "acme/thermal",
        "--tier",
        "standard",
        "--count",
        "2",
        "--wallet",
        "w",
        "-o",
        "req.cbor",
    ]);
    run(&["issuer", "issue", "issuer", "req.cbor", "-o", "resp.cbor"]);
    // A retried purchase (the response was lost): the same answer, no second sale.
    run(&["issuer", "issue", "issuer", "req.cbor", "-o", "resp-again.cbor"]);
    assert_eq!(
        std::fs::read(dir.join("resp.cbor")).unwrap(),
        std::fs::read(dir.join("resp-again.cbor")).unwrap()
    );
    escx(dir)
        .args(["license", "finalize", "resp.cbor", "--wallet", "w"])
        .assert()
        .success()
        .stdout(predicate::str::contains("2 acme/thermal standard tokens"));
    // A copy of the wallet, tokens and all (what a thief or a careless backup has).
    common::copy_dir(&dir.join("w"), &dir.join("w-copy"));
    run(&["license", "redeem", "--wallet", "w", "--package", "acme/thermal", "-o", "redeem.sealed"]);
    run(&["issuer", "redeem", "issuer", "redeem.sealed", "-o", "license.sealed"]);
    run(&["license", "install", "license.sealed", "--wallet", "w"]);

    // A retried redemption: the stored sealed license again, nothing spent twice.
    run(&["issuer", "redeem", "issuer", "redeem.sealed", "-o", "license-again.sealed"]);
    assert_eq!(
        std::fs::read(dir.join("license.sealed")).unwrap(),
        std::fs::read(dir.join("license-again.sealed")).unwrap()
    );
    // Outputs that carry licenses are never overwritten silently.
    let before = std::fs::read(dir.join("license.sealed")).unwrap();
    let out = escx(dir)
        .args(["issuer", "redeem", "issuer", "redeem.sealed", "-o", "license.sealed", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--force"));
    assert_eq!(std::fs::read(dir.join("license.sealed")).unwrap(), before);
    run(&["issuer", "redeem", "issuer", "redeem.sealed", "-o", "license.sealed", "--force"]);
    // Double spend: the same token, other holder keys (from the copied wallet).
    run(&["license", "redeem", "--wallet", "w-copy", "--package", "acme/thermal", "-o", "copy.sealed"]);
    let out =
        escx(dir).args(["issuer", "redeem", "issuer", "copy.sealed", "-o", "x", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out.stdout)["error"]["code"], "token-spent");
    assert!(!dir.join("x").exists());

    let out = escx(dir)
        .args([
            "license",
            "verify",
            "--issuer",
            "issuer.pub",
            "--wallet",
            "w",
            "--package",
            "acme/thermal",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verified = json(&out.stdout);
    let checks: Vec<&str> =
        verified["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        checks,
        ["issuer", "signature", "clock", "window", "revocation", "crl-age", "package", "possession"]
    );
    // A package the wallet holds no license for is no-license (issue 28, 8: it said
    // license-wrong-package, the code of a certificate for another package).
    let out = escx(dir)
        .args([
            "license",
            "verify",
            "--issuer",
            "issuer.pub",
            "--wallet",
            "w",
            "--package",
            "acme/other",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        (out.status.code(), json(&out.stdout)["error"]["code"].as_str()),
        (Some(1), Some("no-license"))
    );

    let challenge = "c0ffee00c0ffee01c0ffee02c0ffee03";
    let state = ["--state-dir", "verifier-state"];
    run(&[
        "license",
        "prove",
        "--wallet",
        "w",
        "--package",
        "acme/thermal",
        "--challenge",
        challenge,
        "-o",
        "proof.cbor",
    ]);
    let check = |challenge: &str, package: &[&str]| {
        let mut args = vec!["license", "check-proof", "proof.cbor", "--issuer", "issuer.pub", "--package"];
        args.push(package.first().copied().unwrap_or("acme/thermal"));
        args.extend_from_slice(&["--challenge", challenge]);
        args.extend_from_slice(&state);
        args.push("--json");
        let out = escx(dir).args(&args).output().unwrap();
        (out.status.code(), json(&out.stdout))
    };
    assert_eq!(check(challenge, &[]).0, Some(0));
    // The same proof again is a replay.
    let (code, replay) = check(challenge, &[]);
    assert_eq!((code, replay["error"]["code"].as_str()), (Some(1), Some("possession-invalid")));
    assert!(replay["error"]["message"].as_str().unwrap().contains("used before"), "{replay}");
    assert_eq!(check("beefbeefbeefbeefbeefbeefbeefbeef", &[]).0, Some(1));
    let (code, short) = check("c0ffee", &[]);
    assert_eq!(code, Some(1));
    assert!(short["error"]["message"].as_str().unwrap().contains("at least 16 bytes"), "{short}");
    let (code, other) = check(challenge, &["acme/other"]);
    assert_eq!((code, other["error"]["code"].as_str()), (Some(1), Some("license-wrong-package")));

    let id = verified["license_id"].as_str().unwrap().to_owned();
    run(&["issuer", "revoke", "issuer", &id, "--reason", "refund"]);
    run(&["issuer", "crl", "issuer", "-o", "crl.cbor"]);
    escx(dir)
        .args([
            "license",
            "verify",
            "--issuer",
            "issuer.pub",
            "--wallet",
            "w",
            "--package",
            "acme/thermal",
            "--crl",
            "crl.cbor",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("revoked by CRL 1 (refund)"));
    // A third party holding the CRL refuses a proof from the revoked license, even for a
    // fresh challenge.
    let fresh = "0123456789abcdef0123456789abcdef";
    run(&[
        "license",
        "prove",
        "--wallet",
        "w",
        "--package",
        "acme/thermal",
        "--challenge",
        fresh,
        "-o",
        "proof.cbor",
        "--force",
    ]);
    let out = escx(dir)
        .args(["license", "check-proof", "proof.cbor", "--issuer", "issuer.pub", "--package", "acme/thermal"])
        .args(["--challenge", fresh, "--crl", "crl.cbor", "--state-dir", "verifier-state", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out.stdout)["error"]["code"], "license-revoked");

    let sales = json(&escx(dir).args(["issuer", "sales", "issuer", "--json"]).output().unwrap().stdout);
    assert_eq!(sales["sales"].as_array().unwrap().len(), 1, "the retried purchase recorded no second sale");
    assert_eq!(sales["sales"][0]["total_micros"], 98_000_000);
}

#[test]
fn licensing_commands_have_help_with_examples() {
    for command in [
        vec!["issuer", "init"],
        vec!["issuer", "publish"],
        vec!["issuer", "register-package"],
        vec!["issuer", "issue"],
        vec!["issuer", "redeem"],
        vec!["issuer", "revoke"],
        vec!["issuer", "crl"],
        vec!["issuer", "sales"],
        vec!["issuer", "epoch"],
        vec!["license", "request"],
        vec!["license", "finalize"],
        vec!["license", "redeem"],
        vec!["license", "install"],
        vec!["license", "verify"],
        vec!["license", "prove"],
        vec!["license", "check-proof"],
        vec!["license", "renew"],
        vec!["license", "receive-key"],
        vec!["license", "transfer"],
        vec!["license", "receive"],
    ] {
        let mut args = command.clone();
        args.push("--help");
        Command::cargo_bin("escx")
            .unwrap()
            .args(&args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:"));
    }
}

/// Licensed content: the payload is encrypted to the issuer at pack time and only a wallet
/// holding a valid license for the package can extract it.
#[test]
fn encrypted_payload_extracts_only_with_a_license() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = |args: &[&str]| escx(dir).args(args).assert().success();
    paid_package(dir);
    std::fs::create_dir_all(dir.join("pkg/docs")).unwrap();
    let model: Vec<u8> = (0..200_000u32).flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()).collect();
    std::fs::write(dir.join("pkg/model.bin"), &model).unwrap();
    std::fs::write(dir.join("pkg/docs/README"), "public docs\n").unwrap();
    run(&["issuer", "init", "issuer", "--unencrypted"]);
    run(&["issuer", "publish", "issuer", "-o", "issuer.pub"]);
    let packed = json(
        &escx(dir)
            .args(["package", "pack", "pkg", "-o", "p.escx", "--key", "acme.key"])
            .args(["--encrypt-for", "issuer.pub", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    let kinds: Vec<(&str, bool)> = packed["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["type"].as_str().unwrap(), s["encrypted"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("manifest", false), ("payload", true), ("docs", false), ("content-key", false)],
        "only the payload is encrypted"
    );
    let package_bytes = std::fs::read(dir.join("p.escx")).unwrap();
    assert!(
        !package_bytes.windows(64).any(|w| w == &model[1000..1064]),
        "plaintext of the payload appears in the package"
    );

    // Anyone can verify the signature and hashes; the content needs a key.
    let verified = json(
        &escx(dir)
            .args(["package", "verify", "p.escx", "--pubkey", "acme.pub", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    let payload = &verified["sections_verified"][1];
    assert_eq!(
        (payload["type"].as_str(), payload["content_checked"].as_bool()),
        (Some("payload"), Some(false))
    );
    let out = escx(dir)
        .args(["package", "extract", "p.escx", "-o", "x", "--pubkey", "acme.pub", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out.stdout)["error"]["code"], "content-key-required");
    assert!(!dir.join("x").exists());

    run(&["issuer", "register-package", "issuer", "p.escx", "--pubkey", "acme.pub"]);
    escx(dir)
        .args(["license", "request", "--issuer", "issuer.pub", "--package", "acme/thermal"])
        .args(["--tier", "standard", "--wallet", "w", "-o", "req.cbor"])
        .assert()
        .success();
    run(&["issuer", "issue", "issuer", "req.cbor", "-o", "resp.cbor"]);
    run(&["license", "finalize", "resp.cbor", "--wallet", "w"]);
    run(&["license", "redeem", "--wallet", "w", "--package", "acme/thermal", "-o", "redeem.sealed"]);
    run(&["issuer", "redeem", "issuer", "redeem.sealed", "-o", "license.sealed"]);
    run(&["license", "install", "license.sealed", "--wallet", "w"]);

    let verified = json(
        &escx(dir)
            .args(["package", "verify", "p.escx", "--pubkey", "acme.pub", "--wallet", "w", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(verified["sections_verified"][1]["content_checked"], true);
    assert_eq!(verified["sections_verified"][1]["archive"]["files"], 1);
    run(&["package", "extract", "p.escx", "-o", "x", "--pubkey", "acme.pub", "--wallet", "w"]);
    assert_eq!(std::fs::read(dir.join("x/model.bin")).unwrap(), model);
    assert_eq!(std::fs::read_to_string(dir.join("x/docs/README")).unwrap(), "public docs\n");

    // A wallet without a license for it gets nothing, and says why.
    run(&["license", "receive-key", "--wallet", "empty", "-o", "empty.receive"]);
    escx(dir)
        .args(["package", "extract", "p.escx", "-o", "y", "--pubkey", "acme.pub", "--wallet", "empty"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no license"));

    // A revoked license no longer opens the content.
    let license = json(
        &escx(dir)
            .args([
                "license",
                "verify",
                "--issuer",
                "issuer.pub",
                "--wallet",
                "w",
                "--package",
                "acme/thermal",
                "--json",
            ])
            .output()
            .unwrap()
            .stdout,
    );
    run(&["issuer", "revoke", "issuer", license["license_id"].as_str().unwrap(), "--reason", "refund"]);
    run(&["issuer", "crl", "issuer", "-o", "crl.cbor"]);
    escx(dir)
        .args([
            "license",
            "verify",
            "--issuer",
            "issuer.pub",
            "--wallet",
            "w",
            "--package",
            "acme/thermal",
            "--crl",
            "crl.cbor",
        ])
        .assert()
        .code(1);
    escx(dir)
        .args(["package", "extract", "p.escx", "-o", "z", "--pubkey", "acme.pub", "--wallet", "w"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("revoked"));
    assert!(!dir.join("z").exists());
}

/// Tokens change hands between wallets without the issuer, and renewals use fresh keys.
#[test]
fn transfer_receive_and_renew() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = |args: &[&str]| escx(dir).args(args).assert().success();
    issuer_with_package(dir);
    escx(dir)
        .args(["license", "request", "--issuer", "issuer.pub", "--package", "acme/thermal"])
        .args(["--tier", "standard", "--count", "3", "--wallet", "alice", "-o", "req.cbor"])
        .assert()
        .success();
    run(&["issuer", "issue", "issuer", "req.cbor", "-o", "resp.cbor"]);
    run(&["license", "finalize", "resp.cbor", "--wallet", "alice"]);

    run(&["license", "receive-key", "--wallet", "bob", "-o", "bob.receive"]);
    let moved = json(
        &escx(dir)
            .args(["license", "transfer", "--wallet", "alice", "--package", "acme/thermal"])
            .args(["--to", "bob.receive", "-o", "gift.sealed", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(moved["tier"], "standard");
    // The output exists: refused (exit 3, io, like every existing output), and Alice keeps
    // her tokens.
    escx(dir)
        .args(["license", "transfer", "--wallet", "alice", "--package", "acme/thermal"])
        .args(["--to", "bob.receive", "-o", "gift.sealed"])
        .assert()
        .code(3);
    escx(dir).args(["license", "receive", "gift.sealed", "--wallet", "alice"]).assert().code(1);
    run(&["license", "receive", "gift.sealed", "--wallet", "bob"]);
    run(&["license", "redeem", "--wallet", "bob", "--package", "acme/thermal", "-o", "bob.redeem"]);
    run(&["issuer", "redeem", "issuer", "bob.redeem", "-o", "bob.license"]);
    run(&["license", "install", "bob.license", "--wallet", "bob"]);
    run(&["license", "verify", "--issuer", "issuer.pub", "--wallet", "bob", "--package", "acme/thermal"]);
    // A signing key where the issuer's chain belongs: said in words (issue 27, 15), not
    // "invalid type: integer -4, expected map".
    let out = escx(dir)
        .args(["license", "verify", "--issuer", "acme.pub", "--wallet", "bob", "--package", "acme/thermal"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("this is an escx public key file") && text.contains("bundle chain is expected"),
        "{text}"
    );

    // Renewal needs a license first, then spends the next token.
    escx(dir)
        .args(["license", "renew", "--wallet", "alice", "--package", "acme/thermal", "-o", "r.sealed"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no license"));
    run(&["license", "redeem", "--wallet", "alice", "--package", "acme/thermal", "-o", "a1.sealed"]);
    run(&["issuer", "redeem", "issuer", "a1.sealed", "-o", "a1.license"]);
    run(&["license", "install", "a1.license", "--wallet", "alice"]);
    let renewed = json(
        &escx(dir)
            .args([
                "license",
                "renew",
                "--wallet",
                "alice",
                "--package",
                "acme/thermal",
                "-o",
                "a2.sealed",
                "--json",
            ])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(renewed["current_seconds_left"].as_u64().unwrap() > 0);
    run(&["issuer", "redeem", "issuer", "a2.sealed", "-o", "a2.license"]);
    run(&["license", "install", "a2.license", "--wallet", "alice"]);
    let sales = json(&escx(dir).args(["issuer", "sales", "issuer", "--json"]).output().unwrap().stdout);
    assert_eq!(sales["sales"].as_array().unwrap().len(), 1, "transfers and renewals are not sales");
}

/// Key consistency through the real binary: the registry publishes the issuer's bundle
/// head, wallets buy only under it, and a forked chain is refused by the registry and by a
/// wallet that saw the published one.
#[test]
fn wallets_buy_only_under_the_published_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = |args: &[&str]| escx(dir).args(args).assert().success();
    issuer_with_package(dir);
    run(&["key", "generate", "--out", "reg", "--unencrypted"]);
    run(&["registry", "init", "reg-dir", "--key", "reg.key"]);
    run(&["registry", "issuer", "reg-dir", "issuer.pub", "--key", "reg.key"]);
    let request = |wallet: &str, issuer: &str, out: &str| {
        escx(dir)
            .args([
                "license",
                "request",
                "--issuer",
                issuer,
                "--package",
                "acme/thermal",
                "--tier",
                "standard",
            ])
            .args(["--wallet", wallet, "-o", out, "--registry", "reg-dir", "--registry-key", "reg.pub"])
            .args(["--state-dir", "client-state", "--json"])
            .output()
            .unwrap()
    };
    let out = request("w", "issuer.pub", "req.cbor");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&out.stdout)["published_checked"], true);

    // Epoch 2: a new bundle version, not yet in the registry: the wallet still buys under
    // the published version 1.
    run(&["issuer", "epoch", "issuer"]);
    run(&["issuer", "publish", "issuer", "-o", "issuer-v2.pub"]);
    let out = request("w", "issuer-v2.pub", "req2.cbor");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(json(&out.stdout)["bundle_version"], 1);
    run(&["registry", "issuer", "reg-dir", "issuer-v2.pub", "--key", "reg.key"]);
    let out = request("w", "issuer-v2.pub", "req3.cbor");
    assert_eq!(json(&out.stdout)["bundle_version"], 2);

    // The issuer forks its history for one customer: another version 2.
    let signing = escx::keyfile::read_secret_key(&dir.join("issuer/signing.key"), || None).unwrap();
    let honest =
        escx_licensing::messages::BundleChain::parse(&std::fs::read(dir.join("issuer-v2.pub")).unwrap())
            .unwrap();
    let v1 = honest.version(1).unwrap();
    let mut payload = honest.head().payload.clone();
    let key = escx_licensing::poprf::IssuerKey::generate().unwrap();
    payload.epochs[1].poprf_key = serde_bytes::ByteBuf::from(key.public_key().to_vec());
    let forked = escx_licensing::messages::IssuerBundle::sign(payload, &signing).unwrap();
    let chain = escx_licensing::messages::BundleChain::from_bundles(vec![v1.clone(), forked]).unwrap();
    std::fs::write(dir.join("forked.pub"), chain.to_cbor()).unwrap();
    let out = escx(dir)
        .args(["registry", "issuer", "reg-dir", "forked.pub", "--key", "reg.key", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("another history"));
    let out = request("w", "forked.pub", "req4.cbor");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out.stdout)["error"]["code"], "issuer-bundle-fork");
    // A fresh wallet shown only the fork accepts it alone, but the published head refuses it.
    let out = request("fresh", "forked.pub", "req5.cbor");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out.stdout)["error"]["code"], "issuer-bundle-fork");
    assert!(!dir.join("req5.cbor").exists());
}

/// A mistyped --wallet is refused, and nothing is created there; only a purchase or a
/// receive key starts a wallet.
#[test]
fn a_wallet_path_without_a_wallet_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for args in [
        &["license", "list", "--wallet", "typo"][..],
        &["license", "redeem", "--wallet", "typo", "--package", "acme/thermal", "-o", "r.sealed"],
        &[
            "license",
            "verify",
            "--issuer-id",
            "00000000000000000000000000000000",
            "--wallet",
            "typo",
            "--package",
            "acme/thermal",
        ],
        &[
            "meter",
            "record",
            "--issuer-id",
            "00000000000000000000000000000000",
            "--wallet",
            "typo",
            "--package",
            "acme/thermal",
            "--unit",
            "invocations",
        ],
    ] {
        let out = escx(dir).args(args).arg("--json").output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(value["error"]["code"], "no-wallet", "{args:?}");
        assert!(!dir.join("typo").exists(), "{args:?} created a wallet");
    }
    escx(dir).args(["license", "receive-key", "--wallet", "new", "-o", "new.receive"]).assert().success();
    escx(dir).args(["license", "list", "--wallet", "new"]).assert().success();
    // A wallet that lost one of its directories is still a wallet (issue 28, 8: it was
    // no-wallet); the directory comes back empty.
    std::fs::remove_dir(dir.join("new/crl")).unwrap();
    escx(dir).args(["license", "list", "--wallet", "new"]).assert().success();
    assert!(dir.join("new/crl").is_dir());
    // A folder that merely has a `tokens/` is not a wallet: nothing is made in it.
    std::fs::create_dir_all(dir.join("work/tokens")).unwrap();
    let out = escx(dir).args(["license", "list", "--wallet", "work", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(!dir.join("work/licenses").exists());
}

/// A standard license of acme/thermal from `issuer/` in wallet `w`.
fn licensed_wallet(dir: &std::path::Path) {
    issuer_with_package(dir);
    buy_and_install(dir, "issuer", "issuer.pub");
}

/// Buys one standard token of acme/thermal from the issuer in `issuer_dir` (bundle
/// `bundle`) into wallet `w`, redeems it and installs the license.
fn buy_and_install(dir: &std::path::Path, issuer_dir: &str, bundle: &str) {
    let request =
        ["license", "request", "--issuer", bundle, "--package", "acme/thermal", "--tier", "standard"];
    for args in [
        &[&request[..], &["--wallet", "w", "-o", "req.cbor"]].concat()[..],
        &["issuer", "issue", issuer_dir, "req.cbor", "-o", "resp.cbor"],
        &["license", "finalize", "resp.cbor", "--wallet", "w"],
        &["license", "redeem", "--wallet", "w", "--package", "acme/thermal", "-o", "r.sealed"],
        &["issuer", "redeem", issuer_dir, "r.sealed", "-o", "l.sealed"],
        &["license", "install", "l.sealed", "--wallet", "w"],
    ] {
        escx(dir).args(args).assert().success();
    }
}

fn verify_code(dir: &std::path::Path, extra: &[&str]) -> (Option<i32>, Value) {
    let out = escx(dir)
        .args(["license", "verify", "--wallet", "w", "--package", "acme/thermal", "--json"])
        .args(extra)
        .output()
        .unwrap();
    (out.status.code(), json(&out.stdout))
}

/// Review 2 (High 0) through the binary: the customer makes "Acme Licensing" of their
/// own, packs their own acme/thermal, sells it to themselves and installs the license.
/// `license verify --issuer issuer.pub` (the vendor's issuer) refuses it; without an
/// issuer the command is a usage error rather than a check that trusts the wallet.
#[test]
fn a_self_issued_license_is_refused_by_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    issuer_with_package(dir);
    std::fs::create_dir_all(dir.join("mine")).unwrap();
    std::fs::write(dir.join("mine/manifest.toml"), common::PAID_MANIFEST).unwrap();
    for args in [
        &["key", "generate", "--out", "me", "--unencrypted"][..],
        &["package", "pack", "mine", "-o", "mine.escx", "--key", "me.key"],
        &["issuer", "init", "rogue", "--name", "Acme Licensing", "--unencrypted"],
        &["issuer", "publish", "rogue", "-o", "rogue.pub"],
        &["issuer", "register-package", "rogue", "mine.escx", "--pubkey", "me.pub"],
    ] {
        escx(dir).args(args).assert().success();
    }
    buy_and_install(dir, "rogue", "rogue.pub");
    let (code, value) = verify_code(dir, &["--issuer", "issuer.pub"]);
    assert_eq!((code, value["error"]["code"].as_str()), (Some(1), Some("license-wrong-issuer")), "{value}");
    // The same by key id.
    let shown = json(&escx(dir).args(["issuer", "show", "issuer.pub", "--json"]).output().unwrap().stdout);
    let id = shown["issuer_id"].as_str().unwrap_or_else(|| panic!("{shown}")).to_owned();
    let (code, value) = verify_code(dir, &["--issuer-id", &id]);
    assert_eq!((code, value["error"]["code"].as_str()), (Some(1), Some("license-wrong-issuer")), "{value}");
    // The command does not run without naming an issuer.
    assert_eq!(verify_code_raw(dir, &[]), Some(2));
    // The rogue license is a sound license of the rogue issuer: only the trust stops it.
    let (code, value) = verify_code(dir, &["--issuer", "rogue.pub"]);
    assert_eq!(code, Some(0), "{value}");
    // And `meter record` verifies under the same rule before it counts anything.
    let out = escx(dir)
        .args(["meter", "record", "--issuer", "issuer.pub", "--wallet", "w", "--package", "acme/thermal"])
        .args(["--unit", "invocations", "--json"])
        .output()
        .unwrap();
    assert_eq!(json(&out.stdout)["error"]["code"], "license-wrong-issuer");
}

fn verify_code_raw(dir: &std::path::Path, extra: &[&str]) -> Option<i32> {
    escx(dir)
        .args(["license", "verify", "--wallet", "w", "--package", "acme/thermal"])
        .args(extra)
        .output()
        .unwrap()
        .status
        .code()
}

/// Review 2 (High 0) through the binary: deleting the wallet's CRL revives a revoked
/// license only until the age rule runs out; deleting clock.toml and setting the clock
/// back is caught by the held CRL's signed time; `--server` fetches the newest CRL.
#[test]
fn a_deleted_crl_or_clock_revives_nothing_past_the_age_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    licensed_wallet(dir);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let day = |n: u64| format!("@{}", now + n * 86_400);
    let trust = ["--issuer", "issuer.pub"];
    let (_, license) = verify_code(dir, &trust);
    let id = license["license_id"].as_str().unwrap().to_owned();
    escx(dir).args(["issuer", "revoke", "issuer", &id, "--reason", "refund"]).assert().success();
    escx(dir).args(["issuer", "crl", "issuer", "-o", "crl.cbor"]).assert().success();
    let (code, value) = verify_code(dir, &[&trust[..], &["--crl", "crl.cbor"]].concat());
    assert_eq!((code, value["error"]["code"].as_str()), (Some(1), Some("license-revoked")));
    // Issue 27 (6): `license list` said "current" for it; it says "revoked".
    let listed =
        json(&escx(dir).args(["license", "list", "--wallet", "w", "--json"]).output().unwrap().stdout);
    assert_eq!(listed["licenses"][0]["state"], "revoked", "{listed}");

    // The CRL held sets a floor under the clock: clock.toml deleted, clock set back a day.
    std::fs::remove_file(dir.join("w/clock.toml")).unwrap();
    let (code, value) = verify_code(dir, &[&trust[..], &["--at", &format!("@{}", now - 86_400)]].concat());
    assert_eq!((code, value["error"]["code"].as_str()), (Some(1), Some("clock-rolled-back")), "{value}");

    // The CRL deleted: the license passes again now, but online the service's newest
    // CRL comes first and the revocation is back.
    let forget = || {
        std::fs::remove_dir_all(dir.join("w/crl")).unwrap();
        std::fs::create_dir(dir.join("w/crl")).unwrap();
    };
    forget();
    assert_eq!(verify_code(dir, &trust).0, Some(0));
    let server = common::Server::start(dir, &["--issuer", "issuer"]);
    let url = server.url();
    let (code, value) = verify_code(dir, &[&trust[..], &["--server", &url]].concat());
    assert_eq!((code, value["error"]["code"].as_str()), (Some(1), Some("license-revoked")), "{value}");
    drop(server);
    // Unreachable, the check goes on offline (with the CRL held) and warns.
    let out = escx(dir)
        .args(["license", "verify", "--wallet", "w", "--package", "acme/thermal", "--issuer", "issuer.pub"])
        .args(["--server", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning:") && stderr.contains("revoked"), "{stderr}");

    // Offline, the revocation is forgotten only within the age rule, counted from the
    // license's issue.
    forget();
    let (code, value) = verify_code(dir, &[&trust[..], &["--at", &day(2)]].concat());
    assert_eq!(code, Some(0), "{value}");
    // A vendor may shorten the rule.
    let (code, value) = verify_code(
        dir,
        &[&trust[..], &["--at", &day(3), "--crl-max-age", "1", "--crl-grace", "1"]].concat(),
    );
    assert_eq!((code, value["error"]["code"].as_str()), (Some(1), Some("crl-too-old")), "{value}");
    let (code, value) = verify_code(dir, &[&trust[..], &["--at", &day(10)]].concat());
    assert_eq!(code, Some(0), "{value}");
    let age = value["checks"].as_array().unwrap().iter().find(|c| c["name"] == "crl-age").unwrap().clone();
    assert!(age["detail"].as_str().unwrap().starts_with("warning:"), "{age}");
    let (code, value) = verify_code(dir, &[&trust[..], &["--at", &day(15)]].concat());
    assert_eq!((code, value["error"]["code"].as_str()), (Some(1), Some("crl-too-old")), "{value}");
}
