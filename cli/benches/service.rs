//! Throughput of `escx serve` against the same library calls in process (service.md; the
//! issue's goal: at least 0.8x of in-process throughput on 2 cores, p99 latency reported).
//!
//!     cargo bench -p escx-cli --bench service
//!     ESCX_BENCH_REQUESTS=400 ESCX_BENCH_CLIENTS=8 cargo bench -p escx-cli --bench service
//!
//! A bounded loopback load generator: a fixed number of requests, sent by a fixed number of
//! client threads over keep-alive HTTP/1.1 connections, against the real binary on a free
//! port. The in-process figure runs the same calls (`Issuer::issue`, `Issuer::redeem`) on
//! the same kind of store in this process, one after another: the service runs each store
//! call under one lock too, so that is the primitive the transport is compared with.
// Fixtures count the requests they built themselves.
#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]

#[path = "../tests/common/mod.rs"]
mod common;
use escx_store::test_util as pg;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use escx_licensing::issuer::Issuer;
use escx_licensing::messages::{SealedRedeemRequest, TokenRequest};
use escx_licensing::trust::Trust;
use escx_licensing::wallet::Wallet;
use escx_metering::HOUR_SECS;
use escx_metering::meter::{Meter, Telemetry};
use escx_metering::operator::{Operator, Outcome};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn escx(dir: &Path, args: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_escx"))
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "escx {args:?}");
}

/// An issuer selling `acme/thermal` at `dir/issuer` (its bundle `dir/issuer.pub`), an
/// operator metering it at `dir/op`, and an account token.
fn setup(dir: &Path) -> String {
    escx(dir, &["key", "generate", "--out", "acme", "--unencrypted"]);
    std::fs::create_dir_all(dir.join("pkg")).unwrap();
    std::fs::write(dir.join("pkg/manifest.toml"), common::METERED_MANIFEST).unwrap();
    escx(dir, &["package", "pack", "pkg", "-o", "p.escx", "--key", "acme.key"]);
    escx(dir, &["issuer", "init", "issuer", "--unencrypted"]);
    escx(dir, &["issuer", "publish", "issuer", "-o", "issuer.pub"]);
    escx(dir, &["issuer", "register-package", "issuer", "p.escx", "--pubkey", "acme.pub"]);
    escx(dir, &["issuer", "crl", "issuer", "-o", "crl.cbor"]);
    escx(dir, &["operator", "init", "op", "--issuer", "issuer.pub"]);
    escx(dir, &["operator", "package", "op", "p.escx", "--pubkey", "acme.pub"]);
    escx(dir, &["operator", "crl", "op", "crl.cbor"]);
    let out = Command::new(env!("CARGO_BIN_EXE_escx"))
        .current_dir(dir)
        .args(["issuer", "account", "add", "issuer", "bench", "--json"])
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    answer["token"].as_str().unwrap().to_owned()
}

fn purchase_requests(
    wallet: &Wallet,
    chain: &escx_licensing::messages::BundleChain,
    n: usize,
) -> Vec<TokenRequest> {
    let package = "acme/thermal".parse().unwrap();
    (0..n).map(|_| wallet.request(chain, &package, "standard", 1, escx::now_unix()).unwrap()).collect()
}

/// `n` sealed redemption requests, each spending its own token.
fn redemptions<S: escx_licensing::issuer::store::IssuerStore>(
    wallet: &Wallet,
    issuer: &Issuer<S>,
    chain: &escx_licensing::messages::BundleChain,
    n: usize,
) -> Vec<SealedRedeemRequest> {
    for request in purchase_requests(wallet, chain, n) {
        wallet.finalize(&issuer.issue(&request, escx::now_unix()).unwrap()).unwrap();
    }
    (0..n).map(|_| wallet.redeem("acme/thermal").unwrap()).collect()
}

/// How far ahead of the wall clock the operator judges time, so that the reported hours
/// (the next `per_license` hours from now) have ended for it.
fn operator_ahead(per_license: usize) -> u64 {
    (per_license as u64 + 2) * HOUR_SECS
}

/// `licenses` metered licenses, each in its own wallet, and `per_license` consecutive hourly
/// reports of each, in order: element `i` of the result is license `i`'s reports.
fn hourly_reports<S: escx_licensing::issuer::store::IssuerStore>(
    dir: &Path,
    issuer: &Issuer<S>,
    chain: &escx_licensing::messages::BundleChain,
    licenses: usize,
    per_license: usize,
) -> Vec<Vec<Vec<u8>>> {
    let package = "acme/thermal".parse().unwrap();
    let now = escx::now_unix();
    let first = escx::UnixSeconds(now.0 - now.0 % HOUR_SECS + HOUR_SECS);
    let judged = escx::UnixSeconds(now.0 + operator_ahead(per_license));
    (0..licenses)
        .map(|i| {
            let wallet = Wallet::open(&dir.join(format!("meter-{i}"))).unwrap();
            wallet.add_issuer(chain).unwrap();
            let request = wallet.request(chain, &package, "metered", 1, now).unwrap();
            wallet.finalize(&issuer.issue(&request, now).unwrap()).unwrap();
            let sealed = wallet.redeem_tier("acme/thermal", Some("metered")).unwrap();
            wallet.install(&issuer.redeem(&sealed, now).unwrap()).unwrap();
            let meter = Meter::open(&wallet).unwrap();
            let verified = wallet.verify(&Trust::chain(chain), "acme/thermal", None, None, first).unwrap();
            (0..per_license as u64)
                .map(|h| {
                    let hour = escx::UnixSeconds(first.0 + h * HOUR_SECS);
                    meter.record(&verified, "invocations", 1 + h, escx::UnixSeconds(hour.0 + 60)).unwrap();
                    meter.report("acme/thermal", hour, Telemetry::Private, judged).unwrap().file
                })
                .collect()
        })
        .collect()
}

struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

fn summarize(total: Duration, mut latencies: Vec<Duration>) -> Run {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Run { per_second: latencies.len() as f64 / total.as_secs_f64(), p50: at(0.5), p99: at(0.99) }
}

/// Deals `bodies` out to `clients` in turn.
fn deal(bodies: Vec<Vec<u8>>, clients: usize) -> Vec<Vec<Vec<u8>>> {
    let mut chunks = vec![Vec::new(); clients];
    for (i, body) in bodies.into_iter().enumerate() {
        chunks[i % clients].push(body);
    }
    chunks
}

/// Sends each chunk's bodies to `path`, in order, from a thread of its own over one
/// keep-alive connection to one of `addrs` (chunk `i` to `addrs[i % len]`).
fn load(addrs: &[&str], path: &str, bearer: Option<&str>, chunks: Vec<Vec<Vec<u8>>>) -> Run {
    let started = Instant::now();
    let handles: Vec<_> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, bodies)| {
            let addr = addrs[i % addrs.len()].to_owned();
            let path = path.to_owned();
            let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&addr).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut latencies = Vec::new();
                for body in bodies {
                    let sent = Instant::now();
                    let head = format!(
                        "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n",
                        body.len()
                    );
                    writer.write_all(head.as_bytes()).unwrap();
                    writer.write_all(&body).unwrap();
                    let mut status = String::new();
                    reader.read_line(&mut status).unwrap();
                    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut answer = vec![0u8; length];
                    reader.read_exact(&mut answer).unwrap();
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let latencies: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    summarize(started.elapsed(), latencies)
}

fn in_process<T>(items: Vec<T>, mut call: impl FnMut(T)) -> Run {
    let started = Instant::now();
    let mut latencies = Vec::new();
    for item in items {
        let t = Instant::now();
        call(item);
        latencies.push(t.elapsed());
    }
    summarize(started.elapsed(), latencies)
}

fn report(name: &str, local: &Run, http: &Run, clients: usize) {
    println!(
        "{name:<11} in process {:>8.0}/s (p50 {:>7.2?}, p99 {:>7.2?})   HTTP, {clients} clients {:>8.0}/s (p50 {:>7.2?}, p99 {:>7.2?})   ratio {:.2}x",
        local.per_second,
        local.p50,
        local.p99,
        http.per_second,
        http.p50,
        http.p99,
        http.per_second / local.per_second
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it once with a small load.
    let quick = !std::env::args().any(|a| a == "--bench");
    let requests = env_usize("ESCX_BENCH_REQUESTS", if quick { 8 } else { 300 });
    let clients = env_usize("ESCX_BENCH_CLIENTS", 8);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = setup(dir);
    // Reports: one license per client, its hours in order (a license's chain is linear).
    let per_license = requests.div_ceil(clients);
    let chain = escx_licensing::messages::BundleChain::parse(&std::fs::read(dir.join("issuer.pub")).unwrap())
        .unwrap();
    let wallet = Wallet::open(&dir.join("w")).unwrap();
    wallet.add_issuer(&chain).unwrap();

    let (purchase_local, redeem_local, purchases, sealed, reports_local, reports_http) = {
        let issuer = Issuer::open(&dir.join("issuer"), || None).unwrap();
        let local_purchases = purchase_requests(&wallet, &chain, requests);
        let purchase_local = in_process(local_purchases, |r| {
            issuer.issue(&r, escx::now_unix()).unwrap();
        });
        let local_sealed = redemptions(&wallet, &issuer, &chain, requests);
        let redeem_local = in_process(local_sealed, |s| {
            issuer.redeem(&s, escx::now_unix()).unwrap();
        });
        let purchases: Vec<Vec<u8>> =
            purchase_requests(&wallet, &chain, requests).iter().map(TokenRequest::to_cbor).collect();
        let sealed: Vec<Vec<u8>> =
            redemptions(&wallet, &issuer, &chain, requests).iter().map(|s| s.as_bytes().to_vec()).collect();
        let reports_local = hourly_reports(&dir.join("local"), &issuer, &chain, clients, per_license);
        let reports_http = hourly_reports(&dir.join("http"), &issuer, &chain, clients, per_license);
        (purchase_local, redeem_local, purchases, sealed, reports_local, reports_http)
    };
    // The same operator store, before any report, for each side.
    common::copy_dir(&dir.join("op"), &dir.join("op-http"));
    let ingest_local = {
        let mut operator = Operator::open(&dir.join("op")).unwrap();
        let judged = escx::UnixSeconds(escx::now_unix().0 + operator_ahead(per_license));
        in_process(reports_local.into_iter().flatten().collect(), |file: Vec<u8>| {
            let ingested = operator.ingest(&[file], judged).unwrap();
            assert!(matches!(ingested[0].outcome, Outcome::Stored), "{:?}", ingested[0]);
        })
    };

    let ahead = operator_ahead(per_license).to_string();
    let (mut child, addr) = common::serve(
        dir,
        &[
            "--issuer",
            "issuer",
            "--operator",
            "op-http",
            "--redeem-rate",
            "1000000",
            "--ingest-rate",
            "1000000",
            "--max-in-flight",
            "1024",
            "--operator-clock-ahead",
            &ahead,
        ],
    );
    let purchase_http = load(&[&addr], "/v1/purchase", Some(&token), deal(purchases, clients));
    let redeem_http = load(&[&addr], "/v1/redeem", None, deal(sealed, clients));
    let ingest_http = load(&[&addr], "/v1/reports", None, reports_http);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();

    println!("escx serve vs in-process library calls, {requests} requests each");
    report("purchase", &purchase_local, &purchase_http, clients);
    report("redemption", &redeem_local, &redeem_http, clients);
    report("report", &ingest_local, &ingest_http, clients);

    if std::env::var_os("ESCX_BENCH_POSTGRES").is_some() || !quick {
        nodes(dir, requests, clients, per_license, ingest_http.per_second);
    }
}

/// Starts `escx serve` in `dir` with `args` and limits no benchmark reaches.
fn serve(dir: &Path, args: &[&str]) -> (std::process::Child, String) {
    let limits = ["--redeem-rate", "1000000", "--max-in-flight", "1024"];
    common::serve(dir, &[&limits[..], args].concat())
}

/// Redemptions/s and report ingests/s with one and with two service nodes on one
/// PostgreSQL database (a throwaway cluster, durable on commit; the tests' harness), each
/// node over its own copy of the issuer and operator directories, against the SQLite
/// figures above (`sqlite_reports`: the ingest rate over HTTP on one SQLite node).
fn nodes(dir: &Path, requests: usize, clients: usize, per_license: usize, sqlite_reports: f64) {
    let cluster = pg::Cluster::start_durable();
    let url = cluster.database();
    escx(dir, &["issuer", "init", "pg-a", "--unencrypted", "--database", &url]);
    escx(dir, &["issuer", "publish", "pg-a", "-o", "pg.pub"]);
    escx(dir, &["issuer", "register-package", "pg-a", "p.escx", "--pubkey", "acme.pub"]);
    common::copy_dir(&dir.join("pg-a"), &dir.join("pg-b"));
    let chain =
        escx_licensing::messages::BundleChain::parse(&std::fs::read(dir.join("pg.pub")).unwrap()).unwrap();
    let wallet = Wallet::open(&dir.join("pg-wallet")).unwrap();
    wallet.add_issuer(&chain).unwrap();
    let (one, two) = {
        let issuer = Issuer::open(&dir.join("pg-a"), || None).unwrap();
        let bytes = |sealed: Vec<SealedRedeemRequest>| -> Vec<Vec<u8>> {
            sealed.iter().map(|s| s.as_bytes().to_vec()).collect()
        };
        (
            bytes(redemptions(&wallet, &issuer, &chain, requests)),
            bytes(redemptions(&wallet, &issuer, &chain, requests)),
        )
    };
    escx(dir, &["operator", "init", "op-pg-a", "--issuer", "pg.pub", "--database", &url]);
    escx(dir, &["operator", "package", "op-pg-a", "p.escx", "--pubkey", "acme.pub"]);
    common::copy_dir(&dir.join("op-pg-a"), &dir.join("op-pg-b"));
    let (reports_one, reports_two) = {
        let issuer = Issuer::open(&dir.join("pg-a"), || None).unwrap();
        (
            hourly_reports(&dir.join("pg-one"), &issuer, &chain, clients, per_license),
            hourly_reports(&dir.join("pg-two"), &issuer, &chain, clients, per_license),
        )
    };
    let ahead = operator_ahead(per_license).to_string();
    let node = |issuer: &str, operator: &str| {
        serve(
            dir,
            &[
                "--issuer",
                issuer,
                "--operator",
                operator,
                "--ingest-rate",
                "1000000",
                "--operator-clock-ahead",
                &ahead,
            ],
        )
    };
    let (mut a, addr_a) = node("pg-a", "op-pg-a");
    let one_node = load(&[&addr_a], "/v1/redeem", None, deal(one, clients));
    let ingest_one = load(&[&addr_a], "/v1/reports", None, reports_one);
    let (mut b, addr_b) = node("pg-b", "op-pg-b");
    let two_nodes = load(&[&addr_a, &addr_b], "/v1/redeem", None, deal(two, clients));
    // Each license's hours go to one node, in order (chunk i to node i % 2).
    let ingest_two = load(&[&addr_a, &addr_b], "/v1/reports", None, reports_two);
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
    for (what, one, two) in [("redemption", &one_node, &two_nodes), ("report", &ingest_one, &ingest_two)] {
        println!(
            "{what} on PostgreSQL, {clients} clients: one node {:>6.0}/s (p50 {:>7.2?}, p99 {:>7.2?})   two nodes {:>6.0}/s (p50 {:>7.2?}, p99 {:>7.2?})   ratio {:.2}x",
            one.per_second,
            one.p50,
            one.p99,
            two.per_second,
            two.p50,
            two.p99,
            two.per_second / one.per_second
        );
    }
    println!("report ingest, one SQLite node (above): {sqlite_reports:.0}/s");
}
