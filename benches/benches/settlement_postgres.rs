//! Durable settlement on PostgreSQL next to raw COPY of the same rows into the same
//! server, in the same run (issue: within 2x), and the statement builds the ledger does on
//! top of its inserts:
//!
//!     cargo bench -p escx-benches --bench settlement_postgres
//!
//! A throwaway cluster (the tests' harness) durable on commit (`fsync`,
//! `synchronous_commit` on). `Ledger::settle` of 20 000 sale events into a fresh ledger,
//! 10 000 settlements per transaction (each closing with a signed statement); then exactly
//! the rows it wrote (settlements, transfers, recoupment, statements, openings), taken
//! out with `COPY … TO STDOUT` beforehand, are written into a fresh ledger database with
//! `COPY … FROM STDIN`, one transaction per batch like the ledger's.
#![allow(clippy::cast_precision_loss)]

use escx_store::test_util as pg;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use escx_manifest::Micros;
use escx_settlement::ledger::{Ledger, Options, PlatformFee};

fn copy_out(client: &mut postgres::Client, query: &str) -> Vec<u8> {
    let mut text = Vec::new();
    client.copy_out(&format!("COPY ({query}) TO STDOUT")).unwrap().read_to_end(&mut text).unwrap();
    text
}

fn copy_in(tx: &mut postgres::Transaction<'_>, table: &str, text: &[u8]) {
    let mut writer = tx.copy_in(&format!("COPY {table} FROM STDIN")).unwrap();
    writer.write_all(text).unwrap();
    writer.finish().unwrap();
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it once with a small load
    // (only under `--ignored`'s CI step, where PostgreSQL is installed: see below).
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick && std::env::var_os("ESCX_BENCH_POSTGRES").is_none() {
        println!("settlement_postgres: set ESCX_BENCH_POSTGRES=1 or run `cargo bench` (needs PostgreSQL)");
        return;
    }
    let count = if quick { 200 } else { 20_000 };
    let batch = count / 2;
    let cluster = pg::Cluster::start_durable();
    let options = Options {
        platform: Some(PlatformFee { party: "platform".into(), bps: 500 }),
        payout_threshold: Micros(0),
    };
    let manifests = escx_benches::manifests();
    let operator = escx::sig::SecretKey::generate();
    let events = escx_benches::sale_events(count);

    let url = cluster.database();
    let mut ledger = Ledger::create(url.as_ref(), &options).unwrap();
    let started = Instant::now();
    let report =
        ledger.settle(&events, &manifests, batch, &operator, escx::UnixSeconds(1_800_000_000)).unwrap();
    let settle = started.elapsed();
    drop(ledger);

    // The same rows, batch by batch, as COPY text.
    let mut source = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let accounts = copy_out(&mut source, "SELECT * FROM accounts ORDER BY id");
    let batches: Vec<Vec<(&str, Vec<u8>)>> = (1..=report.batches)
        .map(|b| {
            vec![
                ("settlements", copy_out(&mut source, &format!("SELECT * FROM settlements WHERE batch = {b} ORDER BY id"))),
                (
                    "transfers",
                    copy_out(
                        &mut source,
                        &format!("SELECT t.* FROM transfers t JOIN settlements s ON s.id = t.settlement WHERE s.batch = {b} ORDER BY t.id"),
                    ),
                ),
                (
                    "settlement_recoup",
                    copy_out(
                        &mut source,
                        &format!("SELECT r.* FROM settlement_recoup r JOIN settlements s ON s.id = r.settlement WHERE s.batch = {b}"),
                    ),
                ),
                ("statements", copy_out(&mut source, &format!("SELECT * FROM statements WHERE seq = {b}"))),
                ("statement_openings", copy_out(&mut source, &format!("SELECT * FROM statement_openings WHERE seq = {b}"))),
            ]
        })
        .collect();
    let recoupment = copy_out(&mut source, "SELECT * FROM recoupment");

    let raw_url = cluster.database();
    Ledger::create(raw_url.as_ref(), &options).unwrap();
    let mut raw = postgres::Client::connect(&raw_url, postgres::NoTls).unwrap();
    {
        let mut tx = raw.transaction().unwrap();
        copy_in(&mut tx, "accounts", &accounts);
        tx.commit().unwrap();
    }
    let started = Instant::now();
    for (n, tables) in batches.iter().enumerate() {
        let mut tx = raw.transaction().unwrap();
        for (table, text) in tables {
            copy_in(&mut tx, table, text);
        }
        if n + 1 == batches.len() {
            copy_in(&mut tx, "recoupment", &recoupment);
        }
        tx.commit().unwrap();
    }
    let copy = started.elapsed();

    // What the ledger computes on top of its inserts: one statement per batch.
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let transfers = report.transfers as f64;
    println!(
        "settlement on PostgreSQL (durable), {count} sales, {} batches, {} transfers",
        report.batches, report.transfers
    );
    println!("  raw COPY of the same rows   {:>9.1} ms   1x", ms(copy));
    println!(
        "  Ledger::settle              {:>9.1} ms   {:.2}x raw   {:.0} settlements/s, {:.0} transfers/s",
        ms(settle),
        settle.as_secs_f64() / copy.as_secs_f64(),
        count as f64 / settle.as_secs_f64(),
        transfers / settle.as_secs_f64()
    );
    drop(cluster);
    tls_against_plain(&events, &manifests, &options, &operator, count, batch);
}

/// The same settlement, and 2 000 one-row reads, over loopback TCP with TLS
/// (`sslmode=verify-full`, storage.md §3.1) and without (`sslmode=disable`), on one durable
/// cluster that accepts both; alternated, best of three each.
fn tls_against_plain(
    events: &[escx_settlement::events::BillingEvent],
    manifests: &escx_settlement::ledger::Manifests,
    options: &Options,
    operator: &escx::sig::SecretKey,
    count: usize,
    batch: usize,
) {
    let cluster = pg::Cluster::start_tls_or_plain_durable();
    let ca = cluster.ca().display().to_string();
    let reads = if count < 1000 { 50 } else { 2000 };
    let mut best = [(Duration::MAX, Duration::MAX); 2];
    for _round in 0..3 {
        for (slot, params) in
            [(0, "sslmode=disable".to_owned()), (1, format!("sslmode=verify-full&sslrootcert={ca}"))]
        {
            let url = cluster.tcp_database("localhost", &params);
            let mut ledger = Ledger::create(url.as_ref(), options).unwrap();
            let started = Instant::now();
            ledger.settle(events, manifests, batch, operator, escx::UnixSeconds(1_800_000_000)).unwrap();
            let settle = started.elapsed();
            let started = Instant::now();
            for _ in 0..reads {
                assert!(ledger.payout_threshold().is_ok());
            }
            let read = started.elapsed();
            best[slot] = (best[slot].0.min(settle), best[slot].1.min(read));
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let [(plain_settle, plain_read), (tls_settle, tls_read)] = best;
    println!("PostgreSQL over loopback TCP, TLS (verify-full) against plain, best of 3");
    println!(
        "  Ledger::settle, {count} sales   plain {:>8.1} ms   TLS {:>8.1} ms   {:.3}x",
        ms(plain_settle),
        ms(tls_settle),
        tls_settle.as_secs_f64() / plain_settle.as_secs_f64()
    );
    println!(
        "  {reads} one-row reads       plain {:>8.1} ms   TLS {:>8.1} ms   {:.3}x",
        ms(plain_read),
        ms(tls_read),
        tls_read.as_secs_f64() / plain_read.as_secs_f64()
    );
}
