//! Trust policy rules (trust-policy.md): thresholds, expiry, revocation, scopes, rotation.

mod common;

use escx::Fault as _;
use std::io::Cursor;
use std::path::Path;

use escx::container::{PackageReader, RawSection, SectionType, assemble};
use escx::keyfile;
use escx::policy::TrustPolicy;
use escx::rotation::RotationStatement;
use escx::sig::SecretKey;
use escx::verify::{self, VerifyOptions};

const NOW: escx::UnixSeconds = escx::UnixSeconds(1_800_000_000); // 2027-01-15

fn package(name: &str, signers: &[&SecretKey]) -> Vec<u8> {
    let manifest = format!("[package]\nname = \"{name}\"\nversion = \"1.0.0\"\n");
    let sections = [RawSection {
        kind: SectionType::Manifest,
        flags: 0,
        plain_length: manifest.len() as u64,
        stored: manifest.into_bytes(),
    }];
    assemble(&sections, signers, NOW)
}

fn check(bytes: Vec<u8>, policy: &TrustPolicy) -> Result<Vec<String>, escx::Error> {
    let mut reader = PackageReader::open(Cursor::new(bytes), "<test>")?;
    let options = VerifyOptions { now: Some(NOW), ..VerifyOptions::default() };
    verify::verify(&mut reader, policy, &options).map(|r| r.decision.rules)
}

fn key_table(name: &str, key: &SecretKey, extra: &str) -> String {
    format!(
        "[[key]]\nname = \"{name}\"\npublic_key = \"{}\"\n{extra}\n",
        keyfile::public_key_text(key.public_key()).lines().last().unwrap()
    )
}

fn policy(text: &str) -> TrustPolicy {
    TrustPolicy::parse(text, Path::new("."), Path::new("trust.toml")).unwrap()
}

struct Three {
    a: SecretKey,
    b: SecretKey,
    c: SecretKey,
}

fn three() -> (Three, String) {
    let keys = Three { a: SecretKey::generate(), b: SecretKey::generate(), c: SecretKey::generate() };
    let text = format!(
        "version = 1\n{}{}{}[[scope]]\npackages = \"acme/*\"\nkeys = [\"a\", \"b\", \"c\"]\nthreshold = 2\n",
        key_table("a", &keys.a, ""),
        key_table("b", &keys.b, ""),
        key_table("c", &keys.c, "")
    );
    (keys, text)
}

#[test]
fn two_of_three_needs_two_valid_signatures() {
    let (k, text) = three();
    let policy = policy(&text);
    let err = check(package("acme/thermal", &[&k.a]), &policy).unwrap_err();
    assert_eq!(err.code(), "policy-rejected");
    assert!(err.to_string().contains("2 of 3 required"), "{err}");
    let rules = check(package("acme/thermal", &[&k.a, &k.c]), &policy).unwrap();
    assert!(rules[0].contains("valid signatures from a, c"), "{rules:?}");
}

#[test]
fn a_signature_by_a_listed_key_that_does_not_verify_is_an_error_not_a_skip() {
    let (k, text) = three();
    let mut bytes = package("acme/thermal", &[&k.a, &k.b, &k.c]);
    let last = bytes.len() - 100;
    bytes[last] ^= 1; // inside c's signature
    let err = check(bytes, &policy(&text)).unwrap_err();
    assert_eq!(err.code(), "signature-invalid", "{err}");
}

#[test]
fn expired_key_does_not_count() {
    let a = SecretKey::generate();
    let text = format!(
        "version = 1\n{}[[scope]]\npackages = \"**\"\nkeys = [\"a\"]\n",
        key_table("a", &a, "expires = 2026-12-31T23:59:59Z")
    );
    let err = check(package("acme/x", &[&a]), &policy(&text)).unwrap_err();
    assert!(err.to_string().contains("key a expired at 2026-12-31T23:59:59Z"), "{err}");
    let later = format!(
        "version = 1\n{}[[scope]]\npackages = \"**\"\nkeys = [\"a\"]\n",
        key_table("a", &a, "expires = 2027-06-01")
    );
    check(package("acme/x", &[&a]), &policy(&later)).unwrap();
}

#[test]
fn revoked_key_does_not_count() {
    let a = SecretKey::generate();
    let text = format!(
        "version = 1\nrevoked = [\"{}\"]\n{}[[scope]]\npackages = \"**\"\nkeys = [\"a\"]\n",
        a.id(),
        key_table("a", &a, "")
    );
    let err = check(package("acme/x", &[&a]), &policy(&text)).unwrap_err();
    assert!(err.to_string().contains("key a is revoked"), "{err}");
}

#[test]
fn key_outside_its_scope_is_rejected() {
    let (k, text) = three();
    let err = check(package("other/thing", &[&k.a, &k.b]), &policy(&text)).unwrap_err();
    assert!(err.to_string().contains("no scope"), "{err}");
    // `*` does not cross the scope separator.
    let err = check(package("acme", &[&k.a, &k.b]), &policy(&text)).unwrap_err();
    assert_eq!(err.code(), "policy-rejected");
}

#[test]
fn rotated_key_endorsed_by_the_old_key_fills_its_slot() {
    let (k, text) = three();
    let a2 = SecretKey::generate();
    let statement = RotationStatement::create(&k.a, a2.public_key(), escx::UnixSeconds((NOW - 10).0));
    let line = statement.to_text("a -> a2");
    let data_line = line.lines().last().unwrap();
    let with_rotation = format!("{text}[[rotation]]\nstatement = \"{data_line}\"\n");
    let rules = check(package("acme/thermal", &[&a2, &k.b]), &policy(&with_rotation)).unwrap();
    assert!(rules[0].contains("valid signatures from a, b"), "{rules:?}");
    // Without the statement the new key is a stranger: 1 of 2 is not enough.
    assert!(check(package("acme/thermal", &[&a2, &k.b]), &policy(&text)).is_err());
    // Old and new key together still fill one slot, not two.
    assert!(check(package("acme/thermal", &[&k.a, &a2]), &policy(&with_rotation)).is_err());
}

#[test]
fn revoking_the_old_key_voids_its_rotation() {
    let a = SecretKey::generate();
    let a2 = SecretKey::generate();
    let data_line = RotationStatement::create(&a, a2.public_key(), NOW).to_text("x");
    let text = format!(
        "version = 1\nrevoked = [\"{}\"]\n{}[[rotation]]\nstatement = \"{}\"\n[[scope]]\npackages = \"**\"\nkeys = [\"a\"]\n",
        a.id(),
        key_table("a", &a, ""),
        data_line.lines().last().unwrap()
    );
    let err = check(package("acme/x", &[&a2]), &policy(&text)).unwrap_err();
    assert!(err.to_string().contains("descends from revoked key"), "{err}");
}

#[test]
fn forged_rotation_is_refused_when_the_policy_loads() {
    let a = SecretKey::generate();
    let mallory = SecretKey::generate();
    let forged = RotationStatement::create(&mallory, SecretKey::generate().public_key(), NOW).to_text("x");
    let text = format!(
        "version = 1\n{}[[rotation]]\nstatement = \"{}\"\n[[scope]]\npackages = \"**\"\nkeys = [\"a\"]\n",
        key_table("a", &a, ""),
        forged.lines().last().unwrap()
    );
    let err = TrustPolicy::parse(&text, Path::new("."), Path::new("trust.toml")).unwrap_err();
    assert!(err.to_string().contains("does not list"), "{err}");
}

#[test]
fn policy_errors_name_line_and_column() {
    let a = SecretKey::generate();
    let text =
        format!("version = 1\n{}[[scope]]\npackages = \"**\"\nkeys = [\"b\"]\n", key_table("a", &a, ""));
    let err = TrustPolicy::parse(&text, Path::new("."), Path::new("trust.toml")).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("trust.toml")
            && message.contains("line 8, column 9")
            && message.contains("unknown key \"b\""),
        "{message}"
    );
    let err =
        TrustPolicy::parse("version = 1\nbogus = 2\n", Path::new("."), Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn registry_index_needs_its_threshold_of_registry_keys() {
    let (k, text) = three();
    let with_registry = format!("{text}[registry]\nkeys = [\"a\", \"b\", \"c\"]\nthreshold = 2\n");
    let policy = policy(&with_registry);
    let err = policy.evaluate_registry(&[k.a.id()], NOW).unwrap_err();
    assert!(err.to_string().contains("registry index: 2 of 3 required"), "{err}");
    assert!(policy.evaluate_registry(&[k.a.id(), k.c.id()], NOW).is_ok());
    // Package scopes and the registry are separate: without [registry] no index is trusted.
    let err = self::policy(&text).evaluate_registry(&[k.a.id(), k.b.id(), k.c.id()], NOW).unwrap_err();
    assert!(err.to_string().contains("no [registry] table"), "{err}");
    let shorthand = TrustPolicy::from_keys(vec![]).with_registry_keys(vec![k.b.public_key().clone()]);
    assert!(shorthand.evaluate_registry(&[k.b.id()], NOW).is_ok());
}
