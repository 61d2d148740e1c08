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
