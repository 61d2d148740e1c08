//! Writes `test-vectors/trust-policy/`: public keys, rotation statements, trust policies,
//! and evaluations of them (package name, the key ids whose signatures verified, a time)
//! with the verdict of trust-policy.md §5 and §6, plus policies that must not load.
//!
//!     cargo run -p escx --example make_policy_vectors -- test-vectors/trust-policy
//!
//! Keys are fresh on every run, so regenerating changes every key and statement file; the
//! expected verdicts are written down below and the generator refuses to write a vector
//! whose evaluation disagrees.

use std::path::PathBuf;

use escx::Fault as _;
use escx::keyfile;
use escx::policy::TrustPolicy;
use escx::rotation::RotationStatement;
use escx::sig::SecretKey;
use serde_json::{Value, json};

/// 2026-12-01T00:00:00Z; key `b` expires at 2027-01-01T00:00:00Z.
const NOW: u64 = 1_796_083_200;
const B_EXPIRES: u64 = 1_798_761_600;

struct Keys {
    names: Vec<(&'static str, SecretKey)>,
}

impl Keys {
    fn get(&self, name: &str) -> &SecretKey {
        &self.names.iter().find(|(n, _)| *n == name).unwrap().1
    }
}

fn verdict(policy: &TrustPolicy, package: Option<&str>, signers: &[&str], keys: &Keys, at: u64) -> String {
    let ids: Vec<_> = signers.iter().map(|s| keys.get(s).id()).collect();
    let result = match package {
        Some(name) => policy.evaluate(name, &ids, escx::UnixSeconds(at)),
        None => policy.evaluate_registry(&ids, escx::UnixSeconds(at)),
    };
    result.map_or_else(|e| e.code().to_owned(), |_| "ok".to_owned())
}

fn key_lines(names: &[(&str, &str)]) -> String {
    names
        .iter()
        .map(|(name, extra)| {
            format!("[[key]]\nname = \"{name}\"\npublic_key_file = \"keys/{name}.pub\"\n{extra}\n")
        })
        .collect()
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "test-vectors/trust-policy".into()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("keys")).unwrap();
    // a rotates to d, d to e (a chain two deep); s is a stranger.
    let keys = Keys {
        names: ["a", "b", "c", "d", "e", "r", "s"].into_iter().map(|n| (n, SecretKey::generate())).collect(),
    };
    let mut key_json = serde_json::Map::new();
    for (name, key) in &keys.names {
        keyfile::write_public_key(&out.join(format!("keys/{name}.pub")), key.public_key(), true).unwrap();
        key_json.insert(
            (*name).into(),
            json!({ "file": format!("keys/{name}.pub"), "key_id": key.id().to_string() }),
        );
    }
    let rotation = |old: &str, new: &str, file: &str| {
        let statement = RotationStatement::create(
            keys.get(old),
            keys.get(new).public_key(),
            escx::UnixSeconds(NOW - 86_400),
        );
        std::fs::write(out.join("keys").join(file), statement.to_text(&format!("{old} endorses {new}")))
            .unwrap();
    };
    rotation("a", "d", "a-to-d.rotation");
    rotation("d", "e", "d-to-e.rotation");
    rotation("s", "c", "s-to-c.rotation");

    let base_keys = key_lines(&[("a", ""), ("b", "expires = 2027-01-01T00:00:00Z"), ("c", ""), ("r", "")]);
    let rotations = "[[rotation]]\nstatement_file = \"keys/d-to-e.rotation\"\n\n[[rotation]]\nstatement_file = \"keys/a-to-d.rotation\"\n\n";
    let scopes = "[[scope]]\npackages = \"acme/*\"\nkeys = [\"a\", \"b\", \"c\"]\nthreshold = 2\n\n[[scope]]\npackages = \"**\"\nkeys = [\"r\", \"a\"]\n\n[registry]\nkeys = [\"b\", \"r\"]\n";
    let policies: Vec<(&str, String)> = vec![
        ("two-of-three.toml", format!("version = 1\n\n{base_keys}{rotations}{scopes}")),
        (
            "revoked-middle.toml",
            format!("version = 1\nrevoked = [\"{}\"]\n\n{base_keys}{rotations}{scopes}", keys.get("d").id()),
        ),
        (
            "revoked-listed.toml",
            format!("version = 1\nrevoked = [\"{}\"]\n\n{base_keys}{rotations}{scopes}", keys.get("a").id()),
        ),
    ];
    for (name, text) in &policies {
        std::fs::write(out.join(name), text).unwrap();
    }
    let load = |name: &str| TrustPolicy::load(&out.join(name));

    type Case<'a> = (&'a str, Option<&'a str>, Vec<&'a str>, u64, &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "two-of-three.toml",
            Some("acme/tool"),
            vec!["a", "b"],
            NOW,
            "ok",
            "2 of a, b, c; and a fills the ** scope too",
        ),
        ("two-of-three.toml", Some("acme/tool"), vec!["a"], NOW, "policy-rejected", "1 of 2 required"),
        (
            "two-of-three.toml",
            Some("acme/tool"),
            vec!["a", "d"],
            NOW,
            "policy-rejected",
            "a and its successor d fill one slot",
        ),
        ("two-of-three.toml", Some("acme/tool"), vec!["d", "b"], NOW, "ok", "d fills a's slot by rotation"),
        (
            "two-of-three.toml",
            Some("acme/tool"),
            vec!["e", "c", "r"],
            NOW,
            "ok",
            "e fills a's slot through d (two rotations)",
        ),
        (
            "two-of-three.toml",
            Some("acme/tool"),
            vec!["b", "c"],
            NOW,
            "policy-rejected",
            "every matching scope must be met: ** needs r or a",
        ),
        (
            "two-of-three.toml",
            Some("acme/tool"),
            vec!["b", "c", "r"],
            B_EXPIRES - 1,
            "ok",
            "one second before b expires",
        ),
        (
            "two-of-three.toml",
            Some("acme/tool"),
            vec!["b", "c", "r"],
            B_EXPIRES,
            "policy-rejected",
            "b expired at exactly its expires time",
        ),
        ("two-of-three.toml", Some("other/tool"), vec!["r"], NOW, "ok", "only the ** scope matches"),
        (
            "two-of-three.toml",
            Some("other/tool"),
            vec!["s"],
            NOW,
            "policy-rejected",
            "a stranger's signature counts for nothing",
        ),
        (
            "two-of-three.toml",
            Some("acme/tool"),
            vec!["a", "c", "s"],
            NOW,
            "ok",
            "an unknown signer is ignored",
        ),
        ("two-of-three.toml", None, vec!["b"], NOW, "ok", "registry: b is one of b, r"),
        ("two-of-three.toml", None, vec!["b"], B_EXPIRES, "policy-rejected", "registry: b expired"),
        (
            "two-of-three.toml",
            None,
            vec!["a", "c"],
            NOW,
            "policy-rejected",
            "registry: neither a nor c is a registry key",
        ),
        (
            "revoked-middle.toml",
            Some("acme/tool"),
            vec!["e", "b", "r"],
            NOW,
            "policy-rejected",
            "d is revoked, so its successor e is void too",
        ),
        (
            "revoked-middle.toml",
            Some("acme/tool"),
            vec!["a", "b"],
            NOW,
            "ok",
            "revoking the successor d does not void a",
        ),
        (
            "revoked-listed.toml",
            Some("acme/tool"),
            vec!["d", "b", "r"],
            NOW,
            "policy-rejected",
            "a is revoked: everything it endorsed (d) is void",
        ),
        (
            "revoked-listed.toml",
            Some("acme/tool"),
            vec!["b", "c", "r"],
            NOW,
            "ok",
            "b and c are untouched by a's revocation",
        ),
    ];
    let mut evaluations = Vec::new();
    for (policy, package, signers, at, expect, description) in cases {
        let got = verdict(&load(policy).unwrap(), package, &signers, &keys, at);
        assert_eq!(got, expect, "{policy} {package:?} {signers:?} at {at}: {description}");
        evaluations.push(json!({
            "policy": policy, "package": package, "signers": signers, "time": at,
            "expect": expect, "description": description,
        }));
    }

    let invalid: Vec<(&str, String, &str)> = vec![
        (
            "invalid-foreign-rotation.toml",
            format!(
                "version = 1\n\n{}[[rotation]]\nstatement_file = \"keys/s-to-c.rotation\"\n\n[[scope]]\npackages = \"**\"\nkeys = [\"a\"]\n",
                key_lines(&[("a", "")])
            ),
            "a rotation statement signed by a key the policy does not know",
        ),
        (
            "invalid-threshold.toml",
            format!(
                "version = 1\n\n{}[[scope]]\npackages = \"**\"\nkeys = [\"a\", \"b\"]\nthreshold = 3\n",
                key_lines(&[("a", ""), ("b", "")])
            ),
            "threshold 3 over two keys",
        ),
        (
            "invalid-local-datetime.toml",
            format!(
                "version = 1\n\n{}[[scope]]\npackages = \"**\"\nkeys = [\"a\"]\n",
                key_lines(&[("a", "expires = 2027-01-01T00:00:00")])
            ),
            "expires is a local date-time without an offset",
        ),
        (
            "invalid-same-key-twice.toml",
            format!(
                "version = 1\n\n{}[[key]]\nname = \"a2\"\npublic_key_file = \"keys/a.pub\"\n\n[[scope]]\npackages = \"**\"\nkeys = [\"a\", \"a2\"]\n",
                key_lines(&[("a", "")])
            ),
            "two [[key]] entries hold one public key",
        ),
        (
            "invalid-rotation-to-known-key.toml",
            format!(
                "version = 1\n\n{}[[rotation]]\nstatement_file = \"keys/a-to-d.rotation\"\n\n[[scope]]\npackages = \"**\"\nkeys = [\"a\"]\n",
                key_lines(&[("a", ""), ("d", "")])
            ),
            "a rotation that introduces a key the policy already lists",
        ),
        ("invalid-no-scope.toml", format!("version = 1\n\n{}", key_lines(&[("a", "")])), "no [[scope]]"),
    ];
    let mut refused = Vec::new();
    for (name, text, description) in &invalid {
        std::fs::write(out.join(name), text).unwrap();
        let got = load(name).map_or_else(|e| e.code().to_owned(), |_| "ok".to_owned());
        assert_eq!(got, "policy-invalid", "{name}: {description}");
        refused.push(json!({ "policy": name, "expect": "policy-invalid", "description": description }));
    }

    let expected = json!({
        "spec": "spec/trust-policy.md §2 (schema), §4 (rotation), §5 (evaluation), §6 (registry)",
        "keys": Value::Object(key_json),
        "evaluations": evaluations,
        "invalid_policies": refused,
    });
    std::fs::write(out.join("expected.json"), serde_json::to_string_pretty(&expected).unwrap() + "\n")
        .unwrap();
    println!("wrote {}", out.display());
}
