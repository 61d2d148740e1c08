//! Writes `test-vectors/escx/objects/`: key files, KEM key pairs, signed envelopes
//! (rotation statements, trust-policy.md §4) and sealed boxes (escx-format.md §14), each
//! with the verdict a reader must reach, and `objects.json` listing them. With the package
//! vectors of `make_test_vectors`, every code a file can trigger has a vector:
//!
//!     cargo run -p escx --example make_object_vectors -- test-vectors/escx
//!
//! The expected verdicts are written down here, not taken from the code, and the generator
//! refuses to write a case the code disagrees with.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use escx::Fault as _;
use escx::envelope::Envelope;
use escx::kem::{self, KemPublicKey, KemSecretKey};
use escx::keyfile::{self, Protection};
use escx::rotation::{ROTATION_PREFIX, RotationStatement};
use escx::sig::{SecretKey, SigningContext};
use serde_json::{Value, json};
use zeroize::Zeroizing;

const PURPOSE: &str = "escx/wrapped-content-key/v1";
const BINDING: [u8; 32] = [0x42; 32];

fn verdict<T>(result: Result<T, escx::Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e.code().into(),
    }
}

/// The secret key file of `secret` claiming `public` as its public half.
fn mismatched_key_file(secret: &SecretKey, public: &SecretKey) -> String {
    let text = keyfile::secret_key_text(secret, &Protection::Unencrypted).unwrap();
    let line = text.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
    let (prefix, encoded) = line.rsplit_once(':').unwrap();
    let mut map: ciborium::Value = ciborium::from_reader(&BASE64.decode(encoded).unwrap()[..]).unwrap();
    for (key, value) in map.as_map_mut().unwrap() {
        if key.as_text() == Some("public_key") {
            *value = ciborium::Value::Bytes(public.public_key().as_bytes().to_vec());
        }
    }
    let mut bytes = Vec::new();
    ciborium::into_writer(&map, &mut bytes).unwrap();
    format!("# escx secret key whose public half is another key's\n{prefix}:{}\n", BASE64.encode(bytes))
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: make_object_vectors DIR")).join("objects");
    std::fs::create_dir_all(&out).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes).unwrap();
    let path = |name: &str| out.join(name);

    // Key files (keys.md §2, §4).
    let (old, new, stranger) = (SecretKey::generate(), SecretKey::generate(), SecretKey::generate());
    keyfile::write_public_key(&path("old.pub"), old.public_key(), true).unwrap();
    keyfile::write_public_key(&path("new.pub"), new.public_key(), true).unwrap();
    write("readme.pub", b"# Acme thermal\nThis directory holds the thermal model.\n");
    let old_text = std::fs::read_to_string(path("old.pub")).unwrap();
    let new_text = std::fs::read_to_string(path("new.pub")).unwrap();
    write("two-keys.pub", format!("{old_text}{new_text}").as_bytes());
    let line = old_text.lines().find(|l| l.starts_with("escx-pk-v1:")).unwrap();
    let (prefix, encoded) = line.rsplit_once(':').unwrap();
    let short = &BASE64.decode(encoded).unwrap()[..2591];
    write("short.pub", format!("{prefix}:{}\n", BASE64.encode(short)).as_bytes());
    write("mismatched.key", mismatched_key_file(&old, &new).as_bytes());
    keyfile::write_secret_key(&path("old.key"), &old, &Protection::Unencrypted, true).unwrap();
    let key_files = vec![
        ("old.pub", "public", "ok", "a public key file"),
        ("readme.pub", "public", "key-file-invalid", "a text file with no key line"),
        ("two-keys.pub", "public", "key-file-invalid", "two key lines"),
        ("short.pub", "public", "key-file-invalid", "a key line decoding to 2591 bytes (keys.md §2)"),
        ("old.key", "secret", "ok", "an unencrypted secret key file"),
        (
            "mismatched.key",
            "secret",
            "key-file-invalid",
            "a secret key whose stored public half is another key's: key-mismatch, reported for the file (keys.md §4)",
        ),
    ];

    // KEM key pairs (keys.md §4): secret and public halves as raw bytes.
    let (kem_a, kem_b) = (KemSecretKey::generate(), KemSecretKey::generate());
    write("kem-a.secret", kem_a.secret_bytes());
    write("kem-a.public", kem_a.public_key().as_bytes());
    write("kem-b.public", kem_b.public_key().as_bytes());
    write("kem-a-short.secret", &kem_a.secret_bytes()[..3167]);
    let kem_pairs = vec![
        ("kem-a.secret", "kem-a.public", "ok", "the halves of one ML-KEM-1024 key"),
        ("kem-a.secret", "kem-b.public", "key-mismatch", "a secret key and another key's public half"),
        ("kem-a-short.secret", "kem-a.public", "key-length", "a secret key one byte short (3167 bytes)"),
    ];

    // Signed envelopes: rotation statements (escx-format.md §9, trust-policy.md §4),
    // verified under old.pub.
    let valid = RotationStatement::create(&old, new.public_key(), escx::UnixSeconds(1_800_000_000));
    write("valid.rot", valid.to_text("old endorses new").as_bytes());
    // A rotation file's data line for envelope bytes, however they were made.
    let rot = |bytes: &[u8]| format!("{ROTATION_PREFIX}{}\n", BASE64.encode(bytes));
    let valid_bytes = BASE64.decode(valid.to_line().strip_prefix(ROTATION_PREFIX).unwrap()).unwrap();
    let signed_payload = Envelope::from_cbor(&valid_bytes).unwrap().payload_unverified().to_vec();
    let other_context =
        Envelope::seal(SigningContext::new("escx/statement/v1"), signed_payload.clone(), &old);
    write("other-context.rot", rot(&other_context.to_cbor()).as_bytes());
    let mut trailing = valid_bytes.clone();
    trailing.push(0);
    write("trailing-byte.rot", rot(&trailing).as_bytes());
    write(
        "by-stranger.rot",
        RotationStatement::create(&stranger, new.public_key(), escx::UnixSeconds(1)).to_line().as_bytes(),
    );
    // A validly signed payload whose new_public_key is 2591 bytes.
    let mut payload: ciborium::Value = ciborium::from_reader(&signed_payload[..]).unwrap();
    for (key, value) in payload.as_map_mut().unwrap() {
        if key.as_text() == Some("new_public_key") {
            *value = ciborium::Value::Bytes(new.public_key().as_bytes()[..2591].to_vec());
        }
    }
    let mut short_payload = Vec::new();
    ciborium::into_writer(&payload, &mut short_payload).unwrap();
    let short_key = Envelope::seal(SigningContext::KEY_ROTATION, short_payload, &old);
    write("short-new-key.rot", rot(&short_key.to_cbor()).as_bytes());
    // The payload's last byte flipped after signing.
    let mut tampered = valid_bytes.clone();
    let at = valid_bytes.windows(signed_payload.len()).position(|w| w == &signed_payload[..]).unwrap()
        + signed_payload.len()
        - 1;
    tampered[at] ^= 1;
    write("tampered.rot", rot(&tampered).as_bytes());
    let envelopes = vec![
        ("valid.rot", "ok", "old.pub endorses new.pub"),
        ("other-context.rot", "envelope-invalid", "the same payload signed under context escx/statement/v1"),
        ("trailing-byte.rot", "envelope-invalid", "the valid envelope with one byte after it"),
        ("by-stranger.rot", "envelope-invalid", "signed by a key other than old.pub"),
        ("short-new-key.rot", "key-length", "validly signed, but new_public_key is 2591 bytes"),
        ("tampered.rot", "signature-invalid", "the last payload byte flipped after signing"),
    ];

    // Sealed boxes (escx-format.md §14) to kem-a, purpose escx/wrapped-content-key/v1,
    // binding 32 bytes of 0x42; the payload is 32 bytes of 0x07.
    let plain = [7u8; 32];
    let sealed = kem::seal_bound(kem_a.public_key(), PURPOSE, &BINDING, &plain).unwrap();
    write("box.sealed", &sealed);
    write(
        "box-other-purpose.sealed",
        &kem::seal_bound(kem_a.public_key(), "escx/content-key/v2", &BINDING, &plain).unwrap(),
    );
    write(
        "box-other-binding.sealed",
        &kem::seal_bound(kem_a.public_key(), PURPOSE, &[0x43; 32], &plain).unwrap(),
    );
    write(
        "box-other-recipient.sealed",
        &kem::seal_bound(kem_b.public_key(), PURPOSE, &BINDING, &plain).unwrap(),
    );
    let mut flipped_box = sealed.clone();
    let last = flipped_box.len() - 1;
    flipped_box[last] ^= 1;
    write("box-flipped.sealed", &flipped_box);
    write("box-truncated.sealed", &sealed[..sealed.len() - 1]);
    let boxes = vec![
        ("box.sealed", "ok", "opens to 32 bytes of 0x07"),
        ("box-other-purpose.sealed", "sealed-box-invalid", "sealed for escx/content-key/v2"),
        ("box-other-binding.sealed", "sealed-box-invalid", "sealed with a binding of 32 bytes of 0x43"),
        ("box-other-recipient.sealed", "sealed-box-invalid", "sealed to kem-b"),
        ("box-flipped.sealed", "sealed-box-invalid", "its last byte (in the AEAD tag) flipped"),
        ("box-truncated.sealed", "sealed-box-invalid", "its last byte cut"),
    ];

    // Check every verdict against the code before writing the list.
    let mut cases = json!({
        "key_files": [], "kem_pairs": [], "rotations": {"signer": "old.pub", "cases": []},
        "sealed_boxes": {"recipient_secret": "kem-a.secret", "recipient_public": "kem-a.public", "purpose": PURPOSE,
                         "binding": hex::encode(BINDING), "plaintext": hex::encode(plain), "cases": []},
        "extract": [{"package": "valid/encrypted.escx", "trusted_keys": ["publisher"], "content_key": null,
                     "expect": "content-key-required",
                     "description": "extracting an encrypted payload without a content key (checked before anything is written)"}],
    });
    for (file, kind, expect, description) in key_files {
        let got = match kind {
            "public" => verdict(keyfile::read_public_key(&path(file))),
            _ => verdict(keyfile::read_secret_key(&path(file), || None)),
        };
        assert_eq!(got, expect, "{file}");
        push(
            &mut cases["key_files"],
            json!({"file": file, "kind": kind, "expect": expect, "description": description}),
        );
    }
    for (secret, public, expect, description) in kem_pairs {
        let got =
            verdict(KemPublicKey::from_bytes(&std::fs::read(path(public)).unwrap()).and_then(|p| {
                KemSecretKey::from_parts(Zeroizing::new(std::fs::read(path(secret)).unwrap()), p)
            }));
        assert_eq!(got, expect, "{secret} {public}");
        push(
            &mut cases["kem_pairs"],
            json!({"secret": secret, "public": public, "expect": expect, "description": description}),
        );
    }
    let signer = keyfile::read_public_key(&path("old.pub")).unwrap();
    for (file, expect, description) in envelopes {
        let text = std::fs::read_to_string(path(file)).unwrap();
        let got = verdict(
            RotationStatement::parse(&text)
                .map_err(|reason| escx::Error::Envelope { reason })
                .and_then(|r| r.verify(&signer)),
        );
        assert_eq!(got, expect, "{file}");
        push(
            &mut cases["rotations"]["cases"],
            json!({"file": file, "expect": expect, "description": description}),
        );
    }
    for (file, expect, description) in boxes {
        let got = match kem::open_bound(&kem_a, PURPOSE, &BINDING, &std::fs::read(path(file)).unwrap()) {
            Ok(opened) => {
                assert_eq!(&opened[..], &plain[..]);
                "ok".to_owned()
            }
            Err(e) => e.code().to_owned(),
        };
        assert_eq!(got, expect, "{file}");
        push(
            &mut cases["sealed_boxes"]["cases"],
            json!({"file": file, "expect": expect, "description": description}),
        );
    }
    let list = serde_json::to_string_pretty(&cases).unwrap();
    std::fs::write(Path::new(&out).join("objects.json"), format!("{list}\n")).unwrap();
    println!("wrote {}", out.display());
}

fn push(list: &mut Value, item: Value) {
    list.as_array_mut().unwrap().push(item);
}
