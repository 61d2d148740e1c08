//! Property: for random archives of files, directories and symbolic links (names chosen
//! to collide by case, targets full of `..`), extraction either refuses the archive or
//! leaves a tree in which every path and every link, followed to its end, stays inside
//! the target (escx-format.md §6.2, §11).

mod common;

use escx::Fault as _;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path};

use escx::sig::SecretKey;
use escx::verify::VerifyOptions;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use common::craft::{RawEntry, raw_tar};

#[derive(Debug, Clone)]
enum Kind {
    File,
    Directory,
    Link(String),
}

fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "A", "s"])
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(name(), 1..=2).prop_map(|parts| parts.join("/"))
}

/// Targets of two shapes: arbitrary mixes of names, `.`, `..` and empty components, and
/// "up, then into another entry, then up again", which is how links chain through links.
fn target() -> impl Strategy<Value = String> {
    let part = prop::sample::select(vec!["..", "..", "..", ".", "a", "A", "s", ""]);
    let mixed = prop::collection::vec(part, 1..=4).prop_map(|parts| parts.join("/"));
    let through = (0..=1usize, prop::option::of(path()), 0..=3usize).prop_map(|(up, into, back)| {
        let mut parts = vec![".."; up];
        if let Some(into) = &into {
            parts.push(into);
        }
        parts.extend(std::iter::repeat_n("..", back));
        if parts.is_empty() { ".".to_owned() } else { parts.join("/") }
    });
    prop_oneof![1 => mixed, 3 => through]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::File),
        2 => Just(Kind::Directory),
        5 => target().prop_map(Kind::Link),
    ]
}

/// Distinct paths (a repeated path is refused anyway, and would waste the case), in
/// random order: the link rules must not depend on it.
fn entries() -> impl Strategy<Value = Vec<(String, Kind)>> {
    prop::collection::btree_map(path(), kind(), 1..10)
        .prop_map(|map| map.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

fn package(entries: &[(String, Kind)], key: &SecretKey) -> Vec<u8> {
    let directory_paths: Vec<String> = entries.iter().map(|(p, _)| format!("{p}/")).collect();
    let raw: Vec<RawEntry<'_>> = entries
        .iter()
        .zip(&directory_paths)
        .map(|((path, kind), dir_path)| match kind {
            Kind::File => RawEntry::file(path.as_bytes(), b"data"),
            Kind::Directory => RawEntry::of_type(dir_path.as_bytes(), b'5'),
            Kind::Link(target) => RawEntry::symlink(path.as_bytes(), target.as_bytes()),
        })
        .collect();
    common::signed_payload(raw_tar(&raw), key)
}

/// Resolves `relative` under `root` the way the kernel would, following links (at most
/// 40 hops, as Linux does; a loop is an error there, not an escape). Components that do
/// not exist are resolved lexically. True if the walk ever leaves `root`.
fn escapes(root: &Path, relative: &Path) -> bool {
    let mut pending: VecDeque<OsString> = relative.components().map(|c| c.as_os_str().to_owned()).collect();
    let mut at: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(component) = pending.pop_front() {
        if component == ".." {
            if at.pop().is_none() {
                return true;
            }
            continue;
        }
        if component == "." || component.is_empty() {
            continue;
        }
        at.push(component);
        let here: std::path::PathBuf = at.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let Ok(meta) = std::fs::symlink_metadata(&here) else { continue };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return false;
            }
            let link = std::fs::read_link(&here).unwrap();
            if link.is_absolute() {
                return true;
            }
            at.pop();
            for component in link.components().rev() {
                let part = match component {
                    Component::ParentDir => OsString::from(".."),
                    Component::CurDir => OsString::from("."),
                    other => other.as_os_str().to_owned(),
                };
                pending.push_front(part);
            }
        }
    }
    false
}

fn every_path(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false).min_depth(1) {
        out.push(entry.unwrap().path().strip_prefix(root).unwrap().to_path_buf());
    }
    out
}

#[test]
fn extraction_refuses_or_stays_inside_the_target() {
    let key = SecretKey::generate();
    let trust = common::trust(&[&key]);
    let extracted = std::cell::Cell::new(0usize);
    let refused = std::cell::Cell::new(0usize);
    let mut runner = TestRunner::new(Config { cases: 3000, ..Config::default() });
    runner
        .run(&entries(), |entries| {
            let tmp = tempfile::tempdir().unwrap();
            let file = tmp.path().join("p.escx");
            std::fs::write(&file, package(&entries, &key)).unwrap();
            let target = tmp.path().join("out");
            match escx::extract::extract_file(&file, &target, &trust, &VerifyOptions::default()) {
                Ok(_) => {
                    extracted.set(extracted.get() + 1);
                    for path in every_path(&target) {
                        prop_assert!(!escapes(&target, &path), "{path:?} escapes in {entries:?}");
                    }
                }
                Err(error) => {
                    refused.set(refused.get() + 1);
                    let code = error.code();
                    prop_assert!(
                        ["unsafe-path", "duplicate-entry", "reserved-path"].contains(&code),
                        "unexpected {code}: {error}"
                    );
                    prop_assert!(!target.exists());
                }
            }
            Ok(())
        })
        .unwrap();
    // Both outcomes must actually occur, or the property says nothing.
    let (extracted, refused) = (extracted.get(), refused.get());
    assert!(extracted > 50 && refused > 50, "extracted {extracted}, refused {refused}");
}
