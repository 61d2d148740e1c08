//! Writes `test-vectors/registry/`: a signed index and tampered variants, each with the
//! error a client must report (registry.md §5.1).
//!
//!     cargo run -p escx-manifest --example make_registry_vectors -- test-vectors/registry
//!
//! Keys are fresh on every run; expected codes are written down here and checked against
//! the client before anything is written.

use escx::Fault as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use escx::envelope::MultiEnvelope;
use escx::keyfile;
use escx::policy::TrustPolicy;
use escx::sig::{SecretKey, SigningContext};
use escx_manifest::client::{self, StateDir};
use escx_manifest::index::{Index, IndexDependency, IndexPackage, IndexVersion};
use serde_bytes::ByteBuf;
use serde_json::json;

const ISSUED: escx::UnixSeconds = escx::UnixSeconds(1_790_000_000);
const VERIFY_AT: escx::UnixSeconds = escx::UnixSeconds(ISSUED.0 + 3600);

fn entry(version: &str, dependencies: Vec<(&str, &str)>) -> IndexVersion {
    IndexVersion {
        version: version.into(),
        blake3: ByteBuf::from(blake3::hash(version.as_bytes()).as_bytes().to_vec()),
        size: 4096,
        publisher_key_id: ByteBuf::from(vec![7u8; 16]),
        yanked: false,
        dependencies: dependencies
            .into_iter()
            .map(|(n, r)| IndexDependency {
                name: n.parse().unwrap(),
                requirement: r.into(),
                optional: false,
                features: vec![],
            })
            .collect(),
        features: BTreeMap::new(),
        description: format!("vector package {version}"),
        keywords: vec!["vector".into()],
    }
}

fn base_index(version: u64) -> Index {
    Index {
        v: 2,
        version,
        issued_at: ISSUED,
        expires_at: ISSUED + 7 * 86_400,
        packages: vec![
            IndexPackage {
                name: "vectors/app-lib".parse().unwrap(),
                versions: vec![entry("1.0.0", vec![("vectors/core", "^1.2")])],
            },
            IndexPackage {
                name: "vectors/core".parse().unwrap(),
                versions: vec![entry("1.2.0", vec![]), entry("1.3.0", vec![])],
            },
        ],
        // A license issuer's published bundle head (registry.md §2.3).
        issuers: vec![escx_manifest::index::IndexIssuer {
            id: ByteBuf::from(vec![0xaa; 16]),
            version: 3,
            hash: ByteBuf::from(vec![0xbb; 32]),
        }],
    }
}

struct Case {
    name: &'static str,
    description: &'static str,
    bytes: Vec<u8>,
    policy: &'static str,
    prior_state: Option<u64>,
    error: &'static str,
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "test-vectors/registry".into()));
    for sub in ["keys", "invalid"] {
        let _ = std::fs::remove_dir_all(out.join(sub));
        std::fs::create_dir_all(out.join(sub)).unwrap();
    }
    let registry = SecretKey::generate();
    let second = SecretKey::generate();
    let stranger = SecretKey::generate();
    for (name, key) in [("registry", &registry), ("registry2", &second), ("stranger", &stranger)] {
        keyfile::write_public_key(&out.join(format!("keys/{name}.pub")), key.public_key(), true).unwrap();
    }

    let valid = base_index(5).sign(&[&registry, &second]);
    std::fs::write(out.join("index.signed"), &valid).unwrap();
    check(&out, &valid, "one-key", None, None, &registry, &second);

    let flip = |bytes: &[u8], needle: &[u8], offset: usize| {
        let mut changed = bytes.to_vec();
        let at = changed.windows(needle.len()).position(|w| w == needle).unwrap() + offset;
        changed[at] ^= 1;
        changed
    };
    let mut unsorted = base_index(5);
    unsorted.packages.reverse();
    let mut bad_requirement = base_index(5);
    bad_requirement.packages[0].versions[0].dependencies[0].requirement = "*".into();
    let mut expired = base_index(5);
    expired.expires_at = VERIFY_AT - 1;
    let mut equivocating = base_index(5);
    equivocating.packages[1].versions.pop();
    let mut trailing = valid.clone();
    trailing.push(0);
    let cases = vec![
        Case {
            name: "payload-bit-flip",
            description: "one bit flipped inside a package name in the payload",
            bytes: flip(&valid, b"vectors/core", 3),
            policy: "one-key",
            prior_state: None,
            error: "index-invalid",
        },
        Case {
            name: "signature-bit-flip",
            description: "an index signed by registry alone, with one bit flipped near the end of that signature",
            bytes: {
                let mut b = base_index(5).sign(&[&registry]);
                let n = b.len() - 10;
                b[n] ^= 1;
                b
            },
            policy: "one-key",
            prior_state: None,
            error: "index-invalid",
        },
        Case {
            name: "untrusted-signer",
            description: "a well-formed index signed only by a key the client does not trust",
            bytes: base_index(5).sign(&[&stranger]),
            policy: "one-key",
            prior_state: None,
            error: "policy-rejected",
        },
        Case {
            name: "below-threshold",
            description: "signed by registry only, but the policy needs registry and registry2",
            bytes: base_index(5).sign(&[&registry]),
            policy: "two-of-two",
            prior_state: None,
            error: "policy-rejected",
        },
        Case {
            name: "expired",
            description: "validly signed, but expires_at is before the verification time",
            bytes: expired.sign(&[&registry]),
            policy: "one-key",
            prior_state: None,
            error: "index-expired",
        },
        Case {
            name: "rollback",
            description: "version 4 after the client accepted version 5",
            bytes: base_index(4).sign(&[&registry]),
            policy: "one-key",
            prior_state: Some(5),
            error: "index-rollback",
        },
        Case {
            name: "equivocation",
            description: "a different index claiming version 5, which the client accepted as index.signed",
            bytes: equivocating.sign(&[&registry]),
            policy: "one-key",
            prior_state: Some(5),
            error: "index-equivocation",
        },
        Case {
            name: "unsorted-packages",
            description: "packages not in name order",
            bytes: unsorted.sign(&[&registry]),
            policy: "one-key",
            prior_state: None,
            error: "index-invalid",
        },
        Case {
            name: "requirement-spans-majors",
            description: "a dependency requirement \"*\"",
            bytes: bad_requirement.sign(&[&registry]),
            policy: "one-key",
            prior_state: None,
            error: "index-invalid",
        },
        Case {
            name: "trailing-bytes",
            description: "one byte after the envelope",
            bytes: trailing,
            policy: "one-key",
            prior_state: None,
            error: "index-invalid",
        },
        Case {
            name: "wrong-context",
            description: "the index payload signed under the context escx/key-rotation/v1",
            bytes: MultiEnvelope::seal(SigningContext::KEY_ROTATION, base_index(5).to_cbor(), &[&registry])
                .to_cbor(),
            policy: "one-key",
            prior_state: None,
            error: "index-invalid",
        },
    ];
    let mut invalid = Vec::new();
    for case in &cases {
        let file = format!("invalid/{}.signed", case.name);
        check(&out, &case.bytes, case.policy, case.prior_state, Some(case.error), &registry, &second);
        std::fs::write(out.join(&file), &case.bytes).unwrap();
        invalid.push(json!({
            "file": file, "description": case.description, "policy": case.policy,
            "prior_state": case.prior_state.map(|v| json!({ "index_version": v, "index_file": "index.signed" })),
            "error": case.error,
        }));
    }
    let expected = json!({
        "spec": "spec/registry.md (index format 1)",
        "verification_time": VERIFY_AT,
        "policies": {
            "one-key": { "known_keys": ["keys/registry.pub", "keys/registry2.pub"], "registry_keys": ["keys/registry.pub"], "threshold": 1 },
            "two-of-two": { "known_keys": ["keys/registry.pub", "keys/registry2.pub"], "registry_keys": ["keys/registry.pub", "keys/registry2.pub"], "threshold": 2 },
        },
        "valid": { "file": "index.signed", "policy": "one-key", "index_version": 5,
                   "packages": { "vectors/app-lib": ["1.0.0"], "vectors/core": ["1.2.0", "1.3.0"] } },
        "invalid": invalid,
    });
    std::fs::write(out.join("expected.json"), serde_json::to_string_pretty(&expected).unwrap() + "\n")
        .unwrap();
    println!("wrote {}", out.display());
}

fn policy(name: &str, registry: &SecretKey, second: &SecretKey) -> TrustPolicy {
    let line = |k: &SecretKey| keyfile::public_key_text(k.public_key()).lines().last().unwrap().to_owned();
    let (keys, threshold) = if name == "two-of-two" { ("[\"r1\", \"r2\"]", 2) } else { ("[\"r1\"]", 1) };
    let text = format!(
        "version = 1\n[[key]]\nname = \"r1\"\npublic_key = \"{}\"\n[[key]]\nname = \"r2\"\npublic_key = \"{}\"\n\
         [registry]\nkeys = {keys}\nthreshold = {threshold}\n[[scope]]\npackages = \"**\"\nkeys = [\"r1\"]\n",
        line(registry),
        line(second)
    );
    TrustPolicy::parse(&text, Path::new("."), Path::new("vector-policy.toml")).unwrap()
}

/// Runs the client on `bytes` (after priming state with the valid index if asked) and
/// panics unless the outcome is `expected`.
fn check(
    out: &Path,
    bytes: &[u8],
    policy_name: &str,
    prior: Option<u64>,
    expected: Option<&str>,
    registry: &SecretKey,
    second: &SecretKey,
) {
    let policy = policy(policy_name, registry, second);
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    if prior.is_some() {
        std::fs::write(dir.path().join("index.signed"), std::fs::read(out.join("index.signed")).unwrap())
            .unwrap();
        client::load_index(dir.path(), &policy, &state, VERIFY_AT).unwrap();
    }
    std::fs::write(dir.path().join("index.signed"), bytes).unwrap();
    match (client::load_index(dir.path(), &policy, &state, VERIFY_AT), expected) {
        (Ok(_), None) => {}
        (Err(e), Some(code)) if e.code() == code => {}
        (Ok(_), Some(code)) => panic!("accepted, expected {code}"),
        (Err(e), expected) => panic!("{} ({e}), expected {expected:?}", e.code()),
    }
}
