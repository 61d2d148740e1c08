//! Hand-built tar archives, including ones no honest packer writes, for tests and the
//! test-vector generator.
#![allow(dead_code)]

/// One raw tar record.
pub struct RawEntry<'a> {
    pub path: &'a [u8],
    pub entry_type: u8,
    pub data: &'a [u8],
    pub link: &'a [u8],
    pub mode: u32,
}

impl<'a> RawEntry<'a> {
    pub fn file(path: &'a [u8], data: &'a [u8]) -> Self {
        Self { path, entry_type: b'0', data, link: b"", mode: 0o644 }
    }
    pub fn symlink(path: &'a [u8], link: &'a [u8]) -> Self {
        Self { path, entry_type: b'2', data: b"", link, mode: 0o777 }
    }
    pub fn of_type(path: &'a [u8], entry_type: u8) -> Self {
        Self { path, entry_type, data: b"", link: b"", mode: 0o644 }
    }
}

/// A GNU-format tar with the given records written verbatim (no path checks), ending
/// in two zero blocks.
pub fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..entry.path.len()].copy_from_slice(entry.path);
            gnu.linkname[..entry.link.len()].copy_from_slice(entry.link);
        }
        header.set_size(entry.data.len() as u64);
        header.set_mode(entry.mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::new(entry.entry_type));
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(entry.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A GNU long-name (`L`) or long-link (`K`) record carrying `value` and its NUL.
pub fn long_record(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut data = value.to_vec();
    data.push(0);
    let mut tar = raw_tar(&[RawEntry {
        path: b"././@LongLink",
        entry_type: kind,
        data: &data,
        link: b"",
        mode: 0o644,
    }]);
    tar.truncate(tar.len() - 1024);
    tar
}

/// One record (header, data, padding) without the end blocks.
pub fn record(entry: &RawEntry<'_>) -> Vec<u8> {
    let mut tar = raw_tar(std::slice::from_ref(entry));
    tar.truncate(tar.len() - 1024);
    tar
}

/// A ustar-magic (`"ustar\0" "00"`) regular-file record whose path is `prefix/name`.
pub fn ustar_file(prefix: &[u8], name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut block = record(&RawEntry::file(name, data));
    block[257..265].copy_from_slice(b"ustar\x0000");
    block[345..345 + prefix.len()].copy_from_slice(prefix);
    set_checksum(&mut block[..512]);
    block
}

/// Rewrites a header block's checksum: the unsigned byte sum with the field counted as
/// spaces, as six octal digits, NUL, space.
pub fn set_checksum(block: &mut [u8]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block[..512].iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// The two zero blocks that end an archive.
pub fn end_blocks() -> Vec<u8> {
    vec![0u8; 1024]
}

/// The tree under `root` in the shape of the test vectors' `tree`, sorted by path: every
/// file with its size and executable bit, every directory, every link with its target.
pub fn tree_of(root: &std::path::Path) -> Vec<serde_json::Value> {
    use std::os::unix::fs::PermissionsExt;
    let root = root.to_path_buf();
    let mut tree = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(&root).unwrap().to_str().unwrap().to_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap().to_str().unwrap().to_owned();
                tree.push(serde_json::json!({ "path": relative, "kind": "symlink", "target": target }));
            } else if meta.is_dir() {
                tree.push(serde_json::json!({ "path": relative, "kind": "directory" }));
                pending.push(path);
            } else {
                tree.push(serde_json::json!({
                    "path": relative, "kind": "file", "size": meta.len(),
                    "executable": meta.permissions().mode() & 0o111 != 0,
                }));
            }
        }
    }
    tree.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    tree
}
