//! The engine depends on nothing but the `Store` contract: random sequences of
//! settlements, refunds, holds and disputes give the same results on the SQLite store, on
//! the in-memory store and on PostgreSQL (settlement.md §5.4).

use escx::Fault as _;
use escx_manifest::Micros;
use std::path::Path;

mod common;
use escx_store::test_util as pg;

use common::{manifests, op};
use escx_settlement::disputes::Outcome;
use escx_settlement::events::{BillingEvent, parse_events};
use escx_settlement::ledger::{Ledger, Options, PlatformFee, settlement_id};
use escx_settlement::payout::Period;
use escx_settlement::store::Store;
use proptest::prelude::*;

const MANIFEST: &str = r#"[package]
name = "acme/thermal"
version = "1.0.0"

[revenue]
currency = "USD"
residual = "acme"
effective_from = "2026-01-01"

[[revenue.step]]
party = "referrer"
share_of_remaining_bps = 1000
[[revenue.step]]
party = "investor"
recoup_cap = "400.00"
[[revenue.step]]
residual_weights = { acme = 3, partner = 1 }
"#;

/// 2026-10-01T00:00:00Z
const START: escx::UnixSeconds = escx::UnixSeconds(1_790_812_800);
const DAY: u64 = 86_400;

#[derive(Debug, Clone)]
enum Op {
    Sales(Vec<u64>),
    Refund(usize, u8),
    Hold(u64),
    Capture(usize, u8),
    Void(usize),
    Expire,
    Dispute(usize),
    Resolve(usize, bool),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => prop::collection::vec(0u64..300_000_000, 1..4).prop_map(Op::Sales),
        1 => (any::<usize>(), 1u8..=100).prop_map(|(i, p)| Op::Refund(i, p)),
        2 => (1u64..200_000_000).prop_map(Op::Hold),
        2 => (any::<usize>(), 0u8..=100).prop_map(|(i, p)| Op::Capture(i, p)),
        1 => any::<usize>().prop_map(Op::Void),
        1 => Just(Op::Expire),
        1 => any::<usize>().prop_map(Op::Dispute),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(i, r)| Op::Resolve(i, r)),
    ];
    prop::collection::vec(op, 1..14)
}

fn event(id: &str, time: u64, kind: &str, gross: u64, refund_of: Option<&str>) -> BillingEvent {
    let refund = refund_of.map_or(String::new(), |r| format!(r#", "refund_of": "{r}""#));
    let json = format!(
        r#"[{{"id": "{id}", "time": {time}, "package": "acme/thermal", "tier": "std", "kind": "{kind}", "gross": "{}", "currency": "USD"{refund}}}]"#,
        escx_manifest::Micros(gross)
    );
    parse_events(&json, Path::new("events.json")).unwrap().remove(0)
}

/// Applies `ops` and returns each outcome (Ok or the error code) and the final state.
fn run<S: Store>(ledger: &mut Ledger<S>, ops: &[Op]) -> Vec<String> {
    let manifests = manifests(MANIFEST);
    let mut sales: Vec<(String, u64)> = Vec::new();
    let mut holds: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (n, step) in ops.iter().enumerate() {
        let now = START + n as u64 * 9 * DAY;
        let outcome: Result<String, escx_settlement::Error> = match step {
            Op::Sales(grosses) => {
                let events: Vec<BillingEvent> = grosses
                    .iter()
                    .enumerate()
                    .map(|(i, g)| event(&format!("s{n}-{i}"), now.0, "sale", *g, None))
                    .collect();
                sales.extend(events.iter().map(|e| (e.id.clone(), e.gross_micros.0)));
                ledger.settle(&events, &manifests, 2, op(), now).map(|r| format!("{r:?}"))
            }
            Op::Refund(i, percent) if !sales.is_empty() => {
                let (target, gross) = sales[i % sales.len()].clone();
                let refund = event(
                    &format!("r{n}"),
                    now.0,
                    "refund",
                    gross * u64::from(*percent) / 100,
                    Some(&target),
                );
                ledger.settle(&[refund], &manifests, 10, op(), now).map(|r| format!("{r:?}"))
            }
            Op::Hold(gross) => {
                holds.push(format!("h{n}"));
                let held = event(&format!("h{n}"), now.0, "usage", *gross, None);
                ledger.place_holds(&[held], &manifests, now, now + 20 * DAY).map(|r| format!("{r:?}"))
            }
            Op::Capture(i, percent) if !holds.is_empty() => {
                let hold = &holds[i % holds.len()];
                let held = ledger.holds(None).unwrap().into_iter().find(|h| &h.id == hold).unwrap().amount;
                let amount = Micros(held.0 * u64::from(*percent) / 100);
                ledger.capture_hold(hold, Some(amount), &manifests, op(), now).map(|r| {
                    if r.settlement.len() == 64 {
                        sales.push((format!("capture {hold}"), r.captured.0));
                    }
                    format!("{:?}", (r.captured, r.released, r.payouts, r.unchanged))
                })
            }
            Op::Void(i) if !holds.is_empty() => {
                ledger.void_hold(&holds[i % holds.len()], now).map(|v| v.to_string())
            }
            Op::Expire => ledger.void_expired(now).map(|v| format!("{v:?}")),
            Op::Dispute(i) if !sales.is_empty() => {
                let id = settlement_id(&sales[i % sales.len()].0);
                ledger.open_dispute(&id, "chargeback", now).map(|()| "opened".into())
            }
            Op::Resolve(i, reverse) if !sales.is_empty() => {
                let id = settlement_id(&sales[i % sales.len()].0);
                let outcome = if *reverse { Outcome::Reversed } else { Outcome::Upheld };
                ledger
                    .resolve_dispute(&id, outcome, "done", Some(op()), now)
                    .map(|r| format!("{:?}", r.given_back))
            }
            _ => Ok("skipped".into()),
        };
        out.push(match outcome {
            Ok(text) => text,
            Err(error) => format!("error {}", error.code()),
        });
    }
    let audit = ledger.audit().unwrap();
    assert!(audit.ok(), "{audit:?}");
    out.push(format!("{:?}", ledger.balances(None).unwrap()));
    out.push(format!("{:?}", ledger.recouped("USD").unwrap()));
    out.push(format!("{:?}", ledger.holds(None).unwrap()));
    out.push(format!("{:?}", ledger.disputes().unwrap()));
    out.push(format!("{:?}", (audit.settlements, audit.transfers)));
    // Id prefixes resolve the same way in both stores: a unique one to its settlement.
    for (id, _) in sales.iter().take(3) {
        let full = escx_settlement::ledger::settlement_id(id);
        out.push(format!("{:?}", ledger.find_settlement(&full[..16]).map_err(|e| e.code())));
    }
    let statements = ledger.statements().unwrap();
    out.push(format!("{:?}", statements.iter().map(|s| (s.seq, s.entries)).collect::<Vec<_>>()));
    for month in ["2026-10", "2026-11", "2026-12", "2027-01", "2027-02"] {
        let report = ledger.payout_report(Period::parse(month).unwrap(), None).unwrap();
        out.push(format!("{:?}", report.lines));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_and_memory_stores_agree(ops in ops()) {
        let options = Options {
            platform: Some(PlatformFee { party: "platform".into(), bps: 500 }),
            payout_threshold: Micros(25_000_000),
        };
        let tmp = tempfile::tempdir().unwrap();
        let mut sqlite = Ledger::create(&tmp.path().join("l.db"), &options).unwrap();
        let mut memory = Ledger::in_memory(&options).unwrap();
        let a = run(&mut sqlite, &ops);
        let b = run(&mut memory, &ops);
        prop_assert_eq!(a, b);
    }
}

/// The same property on PostgreSQL, against a throwaway cluster (one database per case).
/// Ignored by `cargo test`, which needs nothing installed; `.ci/run` runs it with
/// `--ignored` after installing PostgreSQL when it is missing.
#[test]
#[ignore = "needs PostgreSQL server binaries; .ci/run runs it"]
fn postgres_and_memory_stores_agree() {
    let cluster = pg::Cluster::start();
    let options = Options {
        platform: Some(PlatformFee { party: "platform".into(), bps: 500 }),
        payout_threshold: Micros(25_000_000),
    };
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: 24, ..ProptestConfig::default() });
    runner
        .run(&ops(), |ops| {
            let mut postgres = Ledger::create(cluster.database().as_ref(), &options).unwrap();
            let mut memory = Ledger::in_memory(&options).unwrap();
            prop_assert_eq!(run(&mut postgres, &ops), run(&mut memory, &ops));
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_failed_transaction_leaves_the_memory_store_untouched() {
    let mut ledger = Ledger::in_memory(&Options::default()).unwrap();
    let sale = event("s", START.0, "sale", 10_000_000, None);
    ledger.settle(std::slice::from_ref(&sale), &manifests(MANIFEST), 10, op(), START).unwrap();
    let before = format!("{:?}", ledger.balances(None).unwrap());
    // A refund of more than the sale is refused before anything is written; a dispute
    // resolution without the key is refused inside its transaction.
    let refund = event("r", START.0, "refund", 10_000_001, Some("s"));
    assert_eq!(
        ledger.settle(&[refund], &manifests(MANIFEST), 10, op(), START).unwrap_err().code(),
        "refund-invalid"
    );
    let id = settlement_id("s");
    ledger.open_dispute(&id, "x", START).unwrap();
    let error = ledger.resolve_dispute(&id, Outcome::Reversed, "x", None, START).unwrap_err();
    assert_eq!(error.code(), "dispute-invalid");
    assert_eq!(ledger.disputes().unwrap()[0].resolved_at, None, "the refused resolution was rolled back");
    assert_eq!(format!("{:?}", ledger.balances(None).unwrap()), before);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Partial refunds in any amounts: each gives back exactly its gross, no party ever
    /// gives back more than it holds, and once everything is refunded every balance and
    /// recoupment total is back to zero.
    #[test]
    fn partial_refunds_conserve_and_end_at_zero(
        gross in 1u64..2_000_000_000,
        cuts in prop::collection::vec(1u64..1_000, 0..5),
    ) {
        let mut ledger = Ledger::in_memory(&Options {
            platform: Some(PlatformFee { party: "platform".into(), bps: 700 }),
            payout_threshold: Micros(0),
        }).unwrap();
        let manifests = manifests(MANIFEST);
        ledger.settle(&[event("s", START.0, "sale", gross, None)], &manifests, 10, op(), START).unwrap();
        // Split the gross into refunds proportional to `cuts` plus the rest.
        let total: u64 = cuts.iter().sum::<u64>() + 1;
        let mut amounts: Vec<u64> = cuts.iter().map(|c| gross * c / total).filter(|a| *a > 0).collect();
        amounts.push(gross - amounts.iter().sum::<u64>());
        for (n, amount) in amounts.iter().enumerate() {
            let refund = event(&format!("r{n}"), (START + 1).0, "refund", *amount, Some("s"));
            ledger.settle(&[refund], &manifests, 10, op(), START).unwrap();
            let audit = ledger.audit().unwrap();
            prop_assert!(audit.ok(), "{:?}", audit);
            for balance in ledger.balances(None).unwrap() {
                prop_assert!(balance.account.starts_with('@') || balance.micros >= 0, "{:?}", balance);
            }
        }
        for balance in ledger.balances(None).unwrap() {
            prop_assert_eq!(balance.micros, 0, "{:?}", balance);
        }
        prop_assert!(ledger.recouped("USD").unwrap().values().all(|t| *t == Micros(0)));
        prop_assert_eq!(ledger.history("acme", escx::UnixSeconds(0), escx::UnixSeconds(u64::MAX)).unwrap().iter().map(|h| h.micros).sum::<i64>(), 0);
    }
}
