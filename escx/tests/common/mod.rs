//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod craft;

use std::path::{Path, PathBuf};

use escx::pack::{self, PackOptions, PackReport};
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;

pub const MANIFEST: &str =
    "[package]\nname = \"acme/thermal\"\nversion = \"1.2.0\"\ndescription = \"thermal model\"\n";

pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

/// A package directory with every section kind, a compressible file, an executable and
/// a symlink.
pub fn sample_dir(root: &Path) -> PathBuf {
    let dir = root.join("mypkg");
    write(&dir.join("manifest.toml"), MANIFEST);
    write(&dir.join("src/model.py"), "def model(t):\n    return t * 0.5\n".repeat(200));
    write(&dir.join("data/table.csv"), (0..2000).map(|i| format!("{i},{}\n", i * i)).collect::<String>());
    write(&dir.join("bin/run.sh"), "#!/bin/sh\necho run\n");
    set_executable(&dir.join("bin/run.sh"));
    write(&dir.join("docs/guide.md"), "# Guide\n\nUse it.\n");
    write(&dir.join("tests/smoke.py"), "assert True\n");
    write(&dir.join("LICENSE"), "MIT License\n\nPermission is hereby granted...\n");
    write(&dir.join(".git/config"), "hidden, never packed");
    write(&dir.join("target/debug/junk"), "build output, never packed");
    #[cfg(unix)]
    std::os::unix::fs::symlink("../src/model.py", dir.join("data/model-link.py")).unwrap();
    dir
}

#[cfg(unix)]
pub fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(not(unix))]
pub fn set_executable(_path: &Path) {}

pub fn pack(dir: &Path, out: &Path, keys: &[&SecretKey]) -> PackReport {
    let options = PackOptions { signed_at: Some(escx::UnixSeconds(1_700_000_000)), ..PackOptions::default() };
    pack::pack_dir(dir, out, keys, &options).unwrap()
}

pub fn trust(keys: &[&SecretKey]) -> TrustPolicy {
    TrustPolicy::from_keys(keys.iter().map(|k| k.public_key().clone()).collect())
}

/// A small signed package in memory (manifest + payload), for property tests.
pub fn small_package(key: &SecretKey) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    write(&dir.join("manifest.toml"), MANIFEST);
    write(&dir.join("a.txt"), "alpha\n");
    write(&dir.join("docs/d.md"), "doc\n");
    write(&dir.join("LICENSE"), "license text\n");
    let out = tmp.path().join("p.escx");
    pack(&dir, &out, &[key]);
    std::fs::read(out).unwrap()
}

/// A package of the test manifest and `payload` as a plain (uncompressed) payload
/// section, exactly as given, signed by `key`: for hostile archives no packer writes.
pub fn signed_payload(payload: Vec<u8>, key: &SecretKey) -> Vec<u8> {
    use escx::container::{RawSection, SectionType, assemble};
    let sections = [
        RawSection {
            kind: SectionType::Manifest,
            flags: 0,
            stored: MANIFEST.as_bytes().to_vec(),
            plain_length: MANIFEST.len() as u64,
        },
        RawSection {
            kind: SectionType::Payload,
            flags: 0,
            plain_length: payload.len() as u64,
            stored: payload,
        },
    ];
    assemble(&sections, &[key], escx::UnixSeconds(0))
}
