//! Pack and verify of 1 MiB, 64 MiB and 1 GiB packages, each next to the raw primitive it
//! is built on, measured in the same run so the ratio is meaningful:
//!
//! - `verify/escx` vs `verify/b3sum-method` (BLAKE3, memory-mapped, rayon; what
//!   `b3sum --num-threads N` does) over the same package file;
//! - `pack/escx` vs `pack/zstd-3` (compressing the same bytes once, which packing must do)
//!   and `pack/blake3` (hashing them once).
//!
//! The data is random, so zstd cannot shrink it and the payload is stored raw, which makes
//! verification a pure hashing workload. `ESCX_BENCH_SIZES=1,64` limits the sizes (MiB).
//! Run: `cargo bench -p escx-benches`, or `benches/compare-verify.sh` for the CLI-level
//! comparison against the real b3sum binary.
// Fixtures index and count the bytes of files they built themselves; the workspace cast
// lints guard the product code.
#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use escx::pack::{self, PackOptions};
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx::verify::{self, VerifyOptions};

const MIB: u64 = 1024 * 1024;

fn sizes_mib() -> Vec<u64> {
    match std::env::var("ESCX_BENCH_SIZES") {
        Ok(list) => list.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![1, 64, 1024],
    }
}

/// A package directory holding one random file of `size_bytes`.
fn make_dir(root: &Path, size_bytes: u64) -> PathBuf {
    let dir = root.join(format!("pkg-{size_bytes}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.toml"), "[package]\nname = \"bench/data\"\nversion = \"1.0.0\"\n")
        .unwrap();
    let mut data = vec![0u8; size_bytes as usize];
    blake3::Hasher::new().update(&size_bytes.to_le_bytes()).finalize_xof().fill(&mut data);
    std::fs::write(dir.join("data.bin"), data).unwrap();
    dir
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let policy = TrustPolicy::from_keys(vec![key.public_key().clone()]);
    for size_mib in sizes_mib() {
        let size_bytes = size_mib * MIB;
        let dir = make_dir(tmp.path(), size_bytes);
        let package = tmp.path().join(format!("bench-{size_mib}.escx"));
        let overwrite =
            PackOptions { overwrite: true, signed_at: Some(escx::UnixSeconds(0)), ..PackOptions::default() };
        pack::pack_dir(&dir, &package, &[&key], &overwrite).unwrap();
        let package_bytes = std::fs::metadata(&package).unwrap().len();

        let mut group = c.benchmark_group("verify");
        group.throughput(Throughput::Bytes(package_bytes));
        if size_mib >= 64 {
            group.sample_size(10).measurement_time(Duration::from_secs(if size_mib >= 1024 {
                20
            } else {
                8
            }));
        }
        group.bench_with_input(BenchmarkId::new("escx", format!("{size_mib}MiB")), &package, |b, package| {
            b.iter(|| verify::verify_file(package, &policy, &VerifyOptions::default()).unwrap())
        });
        group.bench_with_input(
            BenchmarkId::new("b3sum-method", format!("{size_mib}MiB")),
            &package,
            |b, package| {
                b.iter(|| black_box(blake3::Hasher::new().update_mmap_rayon(package).unwrap().finalize()))
            },
        );
        group.finish();

        let source = std::fs::read(dir.join("data.bin")).unwrap();
        let mut group = c.benchmark_group("pack");
        group.throughput(Throughput::Bytes(size_bytes));
        if size_mib >= 64 {
            group.sample_size(10).measurement_time(Duration::from_secs(if size_mib >= 1024 {
                60
            } else {
                15
            }));
        }
        group.bench_with_input(BenchmarkId::new("escx", format!("{size_mib}MiB")), &dir, |b, dir| {
            b.iter(|| pack::pack_dir(dir, &package, &[&key], &overwrite).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("zstd-3", format!("{size_mib}MiB")), &source, |b, source| {
            b.iter(|| black_box(zstd::bulk::compress(source, 3).unwrap().len()))
        });
        group.bench_with_input(BenchmarkId::new("blake3", format!("{size_mib}MiB")), &source, |b, source| {
            b.iter(|| black_box(blake3::Hasher::new().update_rayon(source).finalize()))
        });
        group.finish();
        drop(source);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
