//! The real `escx` binary, end to end.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn escx() -> Command {
    let mut command = Command::cargo_bin("escx").unwrap();
    command.env_remove("ESCX_PASSPHRASE").env_remove("SOURCE_DATE_EPOCH");
    command
}

fn json(output: &[u8]) -> Value {
    serde_json::from_slice(output)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(output)))
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Fixture {
    /// Keys `acme` (sealed with "pw") and `ci` (unencrypted) and a small package dir.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        escx()
            .current_dir(&dir)
            .args(["key", "generate", "--out", "acme"])
            .env("ESCX_PASSPHRASE", "pw")
            .assert()
            .success();
        escx().current_dir(&dir).args(["key", "generate", "--out", "ci", "--unencrypted"]).assert().success();
        let pkg = dir.join("mypkg");
        std::fs::create_dir_all(pkg.join("src")).unwrap();
        std::fs::create_dir_all(pkg.join("docs")).unwrap();
        std::fs::write(pkg.join("manifest.toml"), "[package]\nname = \"acme/tool\"\nversion = \"0.3.1\"\n")
            .unwrap();
        std::fs::write(pkg.join("src/main.py"), "print('hello')\n".repeat(100)).unwrap();
        std::fs::write(pkg.join("docs/index.md"), "# tool\n").unwrap();
        Self { _tmp: tmp, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn cmd(&self) -> Command {
        let mut command = escx();
        command.current_dir(&self.dir);
        command
    }

    fn pack(&self) -> PathBuf {
        self.cmd()
            .args(["package", "pack", "mypkg", "-o", "tool.escx", "--key", "acme.key"])
            .env("ESCX_PASSPHRASE", "pw")
            .assert()
            .success()
            .stdout(predicate::str::contains("packed acme/tool 0.3.1"));
        self.path("tool.escx")
    }
}

fn flip_byte_in_section(package: &Path, section: &str) {
    let reader = escx::container::PackageReader::open_file(package).unwrap();
    let entry = reader.sections().iter().find(|s| s.kind.name() == section).unwrap().clone();
    drop(reader);
    let mut bytes = std::fs::read(package).unwrap();
    bytes[(entry.offset + entry.stored_length / 2) as usize] ^= 0x10;
    std::fs::write(package, bytes).unwrap();
}

#[cfg(unix)]
#[test]
fn key_generate_writes_a_0600_secret_and_show_reports_it() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let mode = std::fs::metadata(f.path("acme.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = f.cmd().args(["key", "show", "acme.key", "--json"]).output().unwrap();
    let value = json(&out.stdout);
    assert_eq!(value["kind"], "secret");
    assert_eq!(value["passphrase_protected"], true);
    let public = json(&f.cmd().args(["key", "show", "acme.pub", "--json"]).output().unwrap().stdout);
    assert_eq!(public["key_id"], value["key_id"]);
}

#[test]
fn key_generate_refuses_to_overwrite() {
    let f = Fixture::new();
    f.cmd()
        .args(["key", "generate", "--out", "ci", "--unencrypted"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("ci.key: exists; pass --force"));
}

#[test]
fn wrong_passphrase_is_a_clear_failure() {
    let f = Fixture::new();
    f.cmd()
        .args(["package", "pack", "mypkg", "-o", "x.escx", "--key", "acme.key"])
        .env("ESCX_PASSPHRASE", "not it")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("acme.key: wrong passphrase"));
    assert!(!f.path("x.escx").exists());
}

#[test]
fn pack_verify_inspect_round_trip_in_json() {
    let f = Fixture::new();
    let package = f.pack();
    let verified = json(
        &f.cmd()
            .args(["package", "verify", "tool.escx", "--pubkey", "acme.pub", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["package"]["name"], "acme/tool");
    let sections: Vec<&str> = verified["sections_verified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(sections, ["manifest", "payload", "docs"]);

    let inspected =
        json(&f.cmd().args(["package", "inspect", "tool.escx", "--json"]).output().unwrap().stdout);
    assert_eq!(inspected["verified"], false);
    assert_eq!(inspected["root"], verified["root"]);
    // The table's hash is the plain BLAKE3 of the stored bytes.
    let bytes = std::fs::read(package).unwrap();
    for section in inspected["sections"].as_array().unwrap() {
        let offset = section["offset"].as_u64().unwrap() as usize;
        let length = section["stored_bytes"].as_u64().unwrap() as usize;
        assert_eq!(section["blake3"], blake3::hash(&bytes[offset..offset + length]).to_hex().as_str());
    }
}

#[test]
fn tampered_payload_fails_full_but_passes_manifest_only_verification() {
    let f = Fixture::new();
    let package = f.pack();
    flip_byte_in_section(&package, "payload");
    let out =
        f.cmd().args(["package", "verify", "tool.escx", "--pubkey", "acme.pub", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let value = json(&out.stdout);
    assert_eq!(value["ok"], false);
    assert_eq!(value["error"]["code"], "section-hash-mismatch");
    assert!(value["error"]["message"].as_str().unwrap().starts_with("tool.escx: payload section"));
    f.cmd()
        .args(["package", "verify", "tool.escx", "--pubkey", "acme.pub", "--section", "manifest"])
        .assert()
        .success()
        .stdout(predicate::str::contains("payload, docs not read"));
}

#[test]
fn extract_writes_the_files_and_refuses_an_untrusted_key() {
    let f = Fixture::new();
    f.pack();
    f.cmd()
        .args(["package", "extract", "tool.escx", "-o", "out", "--pubkey", "ci.pub"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no trusted signature"));
    assert!(!f.path("out").exists());
    f.cmd().args(["package", "extract", "tool.escx", "-o", "out", "--pubkey", "acme.pub"]).assert().success();
    assert_eq!(
        std::fs::read(f.path("out/src/main.py")).unwrap(),
        std::fs::read(f.path("mypkg/src/main.py")).unwrap()
    );
    assert!(f.path("out/docs/index.md").exists());
}

#[test]
fn countersignature_satisfies_a_two_of_two_policy() {
    let f = Fixture::new();
    f.pack();
    std::fs::write(
        f.path("trust.toml"),
        "version = 1\n[[key]]\nname = \"acme\"\npublic_key_file = \"acme.pub\"\n[[key]]\nname = \"ci\"\npublic_key_file = \"ci.pub\"\n\
         [[scope]]\npackages = \"acme/*\"\nkeys = [\"acme\", \"ci\"]\nthreshold = 2\n",
    )
    .unwrap();
    f.cmd()
        .args(["package", "verify", "tool.escx", "--policy", "trust.toml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("2 of 2 required"));
    f.cmd().args(["package", "sign", "tool.escx", "--key", "ci.key"]).assert().success();
    f.cmd()
        .args(["package", "verify", "tool.escx", "--policy", "trust.toml"])
        .assert()
        .success()
        .stdout(predicate::str::contains("valid signatures from acme, ci"));
}

#[test]
fn rotated_key_is_accepted_through_the_policy() {
    let f = Fixture::new();
    f.cmd().args(["key", "generate", "--out", "acme2", "--unencrypted"]).assert().success();
    f.cmd()
        .args(["key", "rotate", "--key", "acme.key", "--new", "acme2.pub", "-o", "acme2.rotation"])
        .env("ESCX_PASSPHRASE", "pw")
        .assert()
        .success();
    f.cmd().args(["package", "pack", "mypkg", "-o", "new.escx", "--key", "acme2.key"]).assert().success();
    std::fs::write(
        f.path("trust.toml"),
        "version = 1\n[[key]]\nname = \"acme\"\npublic_key_file = \"acme.pub\"\n\
         [[rotation]]\nstatement_file = \"acme2.rotation\"\n[[scope]]\npackages = \"acme/*\"\nkeys = [\"acme\"]\n",
    )
    .unwrap();
    f.cmd().args(["package", "verify", "new.escx", "--policy", "trust.toml"]).assert().success();
}

#[test]
fn usage_and_io_errors_have_their_exit_codes() {
    let f = Fixture::new();
    f.pack();
    // No trust anchor: usage.
    f.cmd().args(["package", "verify", "tool.escx"]).assert().code(2);
    // Unknown section: usage.
    f.cmd()
        .args(["package", "verify", "tool.escx", "--pubkey", "acme.pub", "--section", "bogus"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown section \"bogus\""));
    // Missing file: I/O, named once, with the OS reason once.
    let out = f.cmd().args(["package", "verify", "missing.escx", "--pubkey", "acme.pub"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: missing.escx: "), "{stderr}");
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    // Not a package: verification failure naming the file.
    f.cmd()
        .args(["package", "inspect", "acme.pub"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("acme.pub: not an .escx package"));
}

#[test]
fn invalid_manifest_is_reported_with_file_line_and_column() {
    let f = Fixture::new();
    std::fs::write(f.path("mypkg/manifest.toml"), "[package]\nname = \"acme/tool\"\nversion = \"one\"\n")
        .unwrap();
    f.cmd().args(["package", "pack", "mypkg", "-o", "x.escx", "--key", "ci.key"]).assert().code(1).stderr(
        predicate::str::contains(
            "mypkg/manifest.toml:3:11: package.version: \"one\" is not a semantic version",
        ),
    );
}

#[test]
fn manifest_init_writes_a_template_that_checks() {
    let f = Fixture::new();
    f.cmd().args(["manifest", "init", "newpkg", "--name", "acme/new"]).assert().success();
    let out = f.cmd().args(["manifest", "check", "newpkg", "--json"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(json(&out.stdout)["package"]["name"], "acme/new");
    f.cmd().args(["manifest", "init", "newpkg"]).assert().code(3).stderr(predicate::str::contains("--force"));
}

#[test]
fn manifest_check_lists_every_problem_with_location_in_json() {
    let f = Fixture::new();
    std::fs::write(f.path("bad.toml"), "[package]\nname = \"Bad\"\nversion = \"x\"\n").unwrap();
    let out = f.cmd().args(["manifest", "check", "bad.toml", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let value = json(&out.stdout);
    assert_eq!(value["error"]["code"], "manifest-invalid");
    let diagnostics = value["error"]["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 2);
    assert_eq!((diagnostics[0]["line"].as_u64(), diagnostics[0]["column"].as_u64()), (Some(2), Some(8)));
    assert_eq!(diagnostics[1]["key"], "package.version");
}

#[test]
fn every_command_has_help_with_examples() {
    for command in [
        vec!["key", "generate"],
        vec!["key", "show"],
        vec!["key", "rotate"],
        vec!["manifest", "init"],
        vec!["manifest", "check"],
        vec!["package", "pack"],
        vec!["package", "verify"],
        vec!["package", "inspect"],
        vec!["package", "extract"],
        vec!["package", "sign"],
        vec!["demo"],
        vec![],
    ] {
        let mut args = command.clone();
        args.push("--help");
        escx().args(&args).assert().success().stdout(predicate::str::contains("Examples:"));
    }
}

#[test]
fn demo_runs_every_step() {
    let out = escx().args(["demo", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let value = json(&out.stdout);
    let steps = value["steps"].as_array().unwrap();
    assert!(steps.len() >= 9);
    assert!(steps.iter().all(|s| s["ok"] == true));
    assert!(
        steps.iter().any(|s| s["step"] == "tamper" && s["proved"].as_str().unwrap().contains("rejected"))
    );
    for step in [
        "resolve",
        "install",
        "rollback",
        "conflict",
        "purchase",
        "redeem",
        "offline",
        "decrypt",
        "replay",
        "revoke",
        "settle",
        "statement",
        "payout",
        "rerun",
    ] {
        assert!(steps.iter().any(|s| s["step"] == step), "demo lacks the {step} step");
    }
    let rollback = steps.iter().find(|s| s["step"] == "rollback").unwrap();
    assert!(rollback["proved"].as_str().unwrap().contains("index-rollback"));
    let proved =
        |name: &str| steps.iter().find(|s| s["step"] == name).unwrap()["proved"].as_str().unwrap().to_owned();
    // 98.00 + 49.00 through platform 10 %, the suite's 15 % on the second, referrer 10 %.
    assert!(
        proved("settle").contains("publisher 113.1165, referrer 12.5685, suite 6.615"),
        "{}",
        proved("settle")
    );
    assert!(proved("statement").contains("statement-unconserved"));
    assert!(proved("payout").contains("publisher pays 113.1165"));
    assert!(proved("rerun").contains("settlement-conflict"));
}

#[test]
fn pack_output_is_reproducible_with_source_date_epoch() {
    let f = Fixture::new();
    for name in ["a.escx", "b.escx"] {
        f.cmd()
            .args(["package", "pack", "mypkg", "-o", name, "--key", "ci.key"])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .assert()
            .success();
    }
    let a = json(&f.cmd().args(["package", "inspect", "a.escx", "--json"]).output().unwrap().stdout);
    let b = json(&f.cmd().args(["package", "inspect", "b.escx", "--json"]).output().unwrap().stdout);
    assert_eq!(a["root"], b["root"]);
    assert_eq!(a["signatures"][0]["signed_at"], "2023-11-14T22:13:20Z");
}

/// `--json` is global: accepted before or after the command, and a command line the parser
/// refuses is still a JSON document with code `usage` and exit 2.
#[test]
fn json_is_a_global_flag_and_covers_usage_errors() {
    for args in
        [&["--json", "key", "show"][..], &["key", "show", "--json"][..], &["key", "frob", "--json"][..]]
    {
        let out = escx().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let value = json(&out.stdout);
        assert_eq!(value["ok"], false, "{args:?}");
        assert_eq!(value["error"]["code"], "usage", "{args:?}");
        assert!(!value["error"]["message"].as_str().unwrap().is_empty(), "{args:?}");
    }
    let out = escx().args(["key", "show"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "without --json a usage error goes to stderr");
}

/// A package name on the command line is checked as it is parsed: a bad one is a usage
/// error naming the rule, before any wallet or file is touched.
#[test]
fn a_bad_package_name_argument_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = escx()
        .current_dir(tmp.path())
        .args(["license", "redeem", "--wallet", "w", "--package", "Acme/thermal", "-o", "r.sealed", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let value = json(&out.stdout);
    assert_eq!(value["error"]["code"], "usage");
    let message = value["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"Acme/thermal\" must start each part with a lowercase letter"), "{message}");
    assert!(!tmp.path().join("w").exists() && !tmp.path().join("r.sealed").exists());
}

/// `escx demo | head -2`: the reader goes away after two lines. The demo finishes quietly
/// (exit 0, no panic, no message) and still removes its temporary directory.
#[test]
fn a_closed_stdout_pipe_is_not_an_error() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("escx"))
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("[1/"));
    drop(lines);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the demo left files behind");
}

/// Exit codes and messages the spec gives for common mistakes: a directory that is not a
/// package (exit 3, and how to make one), a file that is not a key (exit 1,
/// `key-file-invalid`, not a UTF-8 decoder message), an existing output (exit 3, `io`).
#[test]
fn common_mistakes_exit_as_the_spec_says() {
    let f = Fixture::new();
    std::fs::create_dir(f.dir.join("empty")).unwrap();
    for args in [
        &["manifest", "check", "empty"][..],
        &["package", "pack", "empty", "-o", "e.escx", "--key", "ci.key"],
    ] {
        let out = f.cmd().args(args).arg("--json").output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let value = json(&out.stdout);
        assert_eq!(value["error"]["code"], "io");
        assert!(value["error"]["message"].as_str().unwrap().contains("no manifest.toml"), "{value}");
        assert!(value["error"]["help"].as_str().unwrap().contains("escx manifest init"), "{value}");
    }
    std::fs::write(f.dir.join("noise.bin"), [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let out = f.cmd().args(["key", "show", "noise.bin", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let value = json(&out.stdout);
    assert_eq!(value["error"]["code"], "key-file-invalid");
    assert!(value["error"]["message"].as_str().unwrap().contains("noise.bin: not a key file"), "{value}");
    // A public key file with a key of the wrong length names both lengths (keys.md §2).
    std::fs::write(f.dir.join("short.pub"), "escx-pk-v1:ml-dsa-87:AAAA\n").unwrap();
    let out = f.cmd().args(["key", "show", "short.pub", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let value = json(&out.stdout);
    assert_eq!(value["error"]["code"], "key-file-invalid");
    assert!(value["error"]["message"].as_str().unwrap().contains("2592 bytes, found 3"), "{value}");
    let out = f.cmd().args(["manifest", "init", "mypkg", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let value = json(&out.stdout);
    assert_eq!(value["error"]["code"], "io");
    assert!(value["error"]["message"].as_str().unwrap().contains("exists; pass --force"), "{value}");
}

/// Shell completions and manual pages come from the same command tree as --help.
#[test]
fn completions_and_manual_pages() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = escx().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("register-package") && script.contains("check-proof"), "{shell}");
    }
    escx().args(["completions", "tcsh"]).assert().code(2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man");
    let out = escx().args(["man", "--out", dir.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(out.status.success());
    let pages = json(&out.stdout)["pages"].as_u64().unwrap();
    assert!(pages > 60, "{pages} pages");
    let verify = std::fs::read_to_string(dir.join("escx-package-verify.1")).unwrap();
    assert!(verify.contains(".SH NAME") && verify.contains("\\-\\-pubkey"), "{verify}");
}

/// A short passphrase is allowed, but said to be short; a long one passes silently.
#[test]
fn a_short_passphrase_gets_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let out = escx()
        .current_dir(tmp.path())
        .args(["key", "generate", "--out", "short"])
        .env("ESCX_PASSPHRASE", "x")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: the passphrase for short.key is 1 character long"), "{stderr}");
    let out = escx()
        .current_dir(tmp.path())
        .args(["key", "generate", "--out", "long"])
        .env("ESCX_PASSPHRASE", "correct horse battery staple")
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `key show` reads rotation statements (checking the signature only against --pubkey)
/// and `issuer show` a bundle chain.
#[test]
fn rotation_statements_and_issuer_bundles_can_be_inspected() {
    let f = Fixture::new();
    f.cmd().args(["key", "generate", "--out", "next", "--unencrypted"]).assert().success();
    f.cmd()
        .args(["key", "rotate", "--key", "ci.key", "--new", "next.pub", "-o", "next.rotation"])
        .assert()
        .success();
    let claims = json(&f.cmd().args(["key", "show", "next.rotation", "--json"]).output().unwrap().stdout);
    assert_eq!(
        (claims["kind"].as_str(), claims["signature_checked"].as_bool()),
        (Some("rotation"), Some(false))
    );
    let checked = json(
        &f.cmd()
            .args(["key", "show", "next.rotation", "--pubkey", "ci.pub", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(checked["signature_checked"], true);
    assert_eq!(checked["new_key_id"], claims["new_key_id"]);
    f.cmd().args(["key", "show", "next.rotation", "--pubkey", "next.pub"]).assert().code(1);

    f.cmd().args(["issuer", "init", "iss", "--name", "Show Licensing", "--unencrypted"]).assert().success();
    f.cmd().args(["issuer", "publish", "iss", "-o", "iss.pub"]).assert().success();
    let shown = json(&f.cmd().args(["issuer", "show", "iss.pub", "--json"]).output().unwrap().stdout);
    assert_eq!((shown["name"].as_str(), shown["version"].as_u64()), (Some("Show Licensing"), Some(1)));
    assert_eq!(shown["epochs"][0]["current"], true);
    f.cmd().args(["issuer", "show", "ci.pub"]).assert().code(1);
}

/// Issue 27 (2): a command whose answer could not be written exited 0 (`escx package
/// inspect F --json > /dev/full`). It now exits 3, having said why on stderr.
#[test]
fn an_answer_that_cannot_be_written_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return; // no /dev/full on this system: nothing to write into
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_escx"))
        .current_dir(tmp.path())
        .args(["key", "generate", "--out", "k", "--unencrypted", "--json"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("writing to stdout"));
}

/// Issue 27 (15): a file given in the wrong place is named for what it is, in words and
/// hex; a `--name` the user passed is not asked for again; two packs with one
/// `SOURCE_DATE_EPOCH` differ only in the signature block (`pack --help` says why).
#[test]
fn mistaken_inputs_get_messages_that_say_what_they_are() {
    let f = Fixture::new();
    f.pack();
    std::fs::write(f.path("readme.txt"), "hello\nworld\n").unwrap();
    let stderr = |args: &[&str]| {
        let out = f.cmd().args(args).env("ESCX_PASSPHRASE", "pw").output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let text = stderr(&["package", "verify", "tool.escx", "--pubkey", "readme.txt"]);
    assert!(text.contains("this is not an escx key file"), "{text}");
    let text = stderr(&["package", "verify", "readme.txt", "--pubkey", "acme.pub"]);
    assert!(text.contains("starts with the bytes 68656c6c where a package starts with 45534358"), "{text}");
    let text = stderr(&["manifest", "init", "other", "--name", "Acme/Spec Docs"]);
    assert!(text.contains("--name: package name") && !text.contains("pass --name"), "{text}");
    // The template's placeholder description is packed only with a warning.
    f.cmd().args(["manifest", "init", "fresh", "--name", "acme/fresh"]).assert().success();
    let out =
        f.cmd().args(["package", "pack", "fresh", "-o", "fresh.escx", "--key", "ci.key"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still has the template's description"));
    let out =
        f.cmd().args(["package", "pack", "mypkg", "-o", "quiet.escx", "--key", "ci.key"]).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    let pack = |out: &str| {
        f.cmd()
            .args(["package", "pack", "mypkg", "-o", out, "--key", "ci.key"])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .assert()
            .success();
        std::fs::read(f.path(out)).unwrap()
    };
    let (one, two) = (pack("one.escx"), pack("two.escx"));
    assert_eq!(one.len(), two.len());
    let first = one.iter().zip(&two).position(|(a, b)| a != b).expect("ML-DSA signatures are randomised");
    let reader = escx::container::PackageReader::open_file(&f.path("one.escx")).unwrap();
    let sections_end = reader.sections().iter().map(|s| s.offset + s.stored_length).max().unwrap();
    assert!(first as u64 >= sections_end, "the packs differ at {first}, before the signature block");
}

/// Issue 27 (12): global `-q` and `-v`, and colour only where a person reads it.
#[test]
fn quiet_verbose_and_colour_are_global() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = escx();
        command.current_dir(tmp.path()).args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    };
    // -q: success says nothing; --json still answers.
    let out = run(&["-q", "key", "generate", "--out", "k", "--unencrypted"], &[]);
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    assert!(tmp.path().join("k.pub").exists());
    let out = run(&["key", "show", "k.pub", "-q", "--json"], &[]);
    assert!(json(&out.stdout)["key_id"].is_string());
    // An error is reported whatever -q says, with its exit code.
    let out = run(&["package", "verify", "missing.escx", "--pubkey", "k.pub", "-q"], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: missing.escx"));
    // -v adds the time taken; -q and -v together are a usage error.
    let out = run(&["key", "show", "k.pub", "-v"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("took "), "{out:?}");
    assert_eq!(run(&["-q", "-v", "key", "show", "k.pub"], &[]).status.code(), Some(2));
    // Colour: never into a pipe under auto, always when asked, never with NO_COLOR.
    let failing = ["package", "verify", "missing.escx", "--pubkey", "k.pub"];
    assert!(!run(&failing, &[]).stderr.contains(&0x1b), "auto colours no pipe");
    let coloured = run(&[&failing[..], &["--color", "always"]].concat(), &[]);
    assert!(String::from_utf8_lossy(&coloured.stderr).starts_with("\u{1b}[1m\u{1b}[31merror:\u{1b}[0m"));
    let plain = run(&[&failing[..], &["--color=never"]].concat(), &[("NO_COLOR", "1")]);
    assert!(!plain.stderr.contains(&0x1b));
    // Stdout, the answer, is never coloured, --json included.
    let out = run(&[&failing[..], &["--color", "always", "--json"]].concat(), &[]);
    assert!(!out.stdout.contains(&0x1b) && json(&out.stdout)["error"]["code"] == "io");
}

/// Issue 27 (11): the values repeated on every command live in a configuration file with
/// profiles; an option wins over an ESCX_* variable, which wins over the file. The file
/// is written private, and one holding an account token is refused when others can read it.
#[test]
fn a_configuration_file_supplies_defaults_in_profiles() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("conf/escx/config.toml");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = escx();
        command.current_dir(tmp.path()).env("ESCX_CONFIG", &config).env_remove("ESCX_WALLET").args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    };
    // Without a wallet anywhere, --wallet is required (exit 2).
    assert_eq!(run(&["license", "list"], &[]).status.code(), Some(2));
    for args in [
        &["config", "set", "wallet", "w-file"][..],
        &["config", "set", "--profile", "ci", "wallet", "w-ci"],
        &["config", "set", "account_token", "0123456789abcdef"],
    ] {
        assert!(run(args, &[]).status.success(), "{args:?}");
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&config), mode(config.parent().unwrap())), (0o600, 0o700));
    // The file's wallet is the default; the profile's overrides it; the variable overrides
    // both; the option overrides everything. Each names its wallet in the error.
    let wallet_of = |args: &[&str], env: &[(&str, &str)]| {
        let out = run(&[args, &["license", "list", "--json"]].concat(), env);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        json(&out.stdout)["error"]["message"].as_str().unwrap().split(':').next().unwrap().to_owned()
    };
    assert_eq!(wallet_of(&[], &[]), "w-file");
    assert_eq!(wallet_of(&["--profile", "ci"], &[]), "w-ci");
    assert_eq!(wallet_of(&[], &[("ESCX_PROFILE", "ci")]), "w-ci");
    assert_eq!(wallet_of(&["--profile", "ci"], &[("ESCX_WALLET", "w-env")]), "w-env");
    let out = run(&["license", "list", "--wallet", "w-flag", "--json"], &[("ESCX_WALLET", "w-env")]);
    assert!(json(&out.stdout)["error"]["message"].as_str().unwrap().starts_with("w-flag"));
    // show and get say where a value comes from; the token is masked.
    let shown = json(&run(&["config", "show", "--profile", "ci", "--json"], &[]).stdout);
    let row =
        |key: &str| shown["values"].as_array().unwrap().iter().find(|r| r["key"] == key).unwrap().clone();
    assert_eq!(
        (row("wallet")["value"].as_str(), row("wallet")["source"].as_str()),
        (Some("w-ci"), Some("profile"))
    );
    assert_eq!(row("account_token")["value"], "01234567…");
    assert_eq!(row("server")["value"], Value::Null);
    assert_eq!(String::from_utf8_lossy(&run(&["config", "get", "wallet"], &[]).stdout).trim(), "w-file");
    assert_eq!(run(&["config", "get", "server"], &[]).status.code(), Some(1));
    // A profile the file does not define, an unknown key, a file others can read.
    assert_eq!(run(&["--profile", "nope", "license", "list"], &[]).status.code(), Some(2));
    assert_eq!(run(&["config", "set", "colour", "red"], &[]).status.code(), Some(2));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["license", "list", "--json"], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(json(&out.stdout)["error"]["code"], "config-insecure");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&config, "wallet = 3\n").unwrap();
    assert_eq!(json(&run(&["license", "list", "--json"], &[]).stdout)["error"]["code"], "config-invalid");
}
