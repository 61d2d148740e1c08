//! Waterfall invariants over random chains and gross amounts (settlement.md §2.4).

use std::collections::BTreeMap;

use escx_manifest::Micros;
use escx_manifest::schema::Step;
use escx_settlement::waterfall::{BPS_WHOLE, Tier, apply};
use proptest::prelude::*;

fn party() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["platform", "suite", "acme", "referrer", "studio", "investor", "partner"])
        .prop_map(str::to_owned)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (party(), 0u32..=10_000).prop_map(|(party, bps)| Step::ShareOfGross { party, bps }),
        (party(), 0u32..=10_000).prop_map(|(party, bps)| Step::ShareOfRemaining { party, bps }),
        (party(), 0u64..=2_000_000_000_000).prop_map(|(party, m)| Step::Fixed { party, amount: Micros(m) }),
        (party(), 0u64..=2_000_000_000_000).prop_map(|(party, m)| Step::Recoup { party, cap: Micros(m) }),
    ]
}

fn chain() -> impl Strategy<Value = Vec<Tier>> {
    let upper = prop::collection::vec(prop::collection::vec(step(), 0..3), 0..3);
    let weights = prop::option::of(prop::collection::btree_map(party(), 1u32..=10_000, 1..4));
    (upper, prop::collection::vec(step(), 0..8), weights, party()).prop_map(
        |(upper, mut steps, weights, residual)| {
            let mut chain: Vec<Tier> = upper
                .into_iter()
                .enumerate()
                .map(|(i, steps)| Tier { label: format!("tier{i}"), steps, residual: None })
                .collect();
            if let Some(weights) = weights {
                steps.push(Step::ResidualWeights { weights });
            }
            chain.push(Tier { label: "package".into(), steps, residual: Some(residual) });
            chain
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Payouts sum to gross; no step is paid more than its exact share, nor a whole
    /// micro-unit less (unless capped by what remains); recoupment never passes its cap.
    #[test]
    fn payouts_conserve_gross_and_round_down_by_less_than_one_micro(
        chain in chain(),
        gross in prop_oneof![0u64..=1_000, 0u64..=1_000_000_000_000_000],
        before in prop::collection::btree_map(party(), 0u64..=3_000_000_000_000, 0..3),
    ) {
        let before: BTreeMap<String, Micros> = before.into_iter().map(|(p, a)| (p, Micros(a))).collect();
        let split = apply(&chain, Micros(gross), &before).unwrap();
        let total: u128 = split.payouts.iter().map(|p| u128::from(p.micros)).sum();
        prop_assert_eq!(total, u128::from(gross));
        for step in &split.trace {
            let (base, paid) = (u128::from(step.base_micros), u128::from(step.paid_micros));
            let tier = chain.iter().find(|t| t.label == step.tier).unwrap();
            match tier.steps.get(step.step) {
                Some(Step::ShareOfGross { bps, .. }) => {
                    let exact_times = base * u128::from(*bps);
                    prop_assert!(paid * u128::from(BPS_WHOLE) <= exact_times);
                    let remaining_before = u128::from(step.remaining_micros) + paid;
                    if paid < remaining_before {
                        prop_assert!(exact_times < (paid + 1) * u128::from(BPS_WHOLE));
                    }
                }
                Some(Step::ShareOfRemaining { bps, .. }) => {
                    prop_assert!(paid * u128::from(BPS_WHOLE) <= base * u128::from(*bps));
                    prop_assert!(base * u128::from(*bps) < (paid + 1) * u128::from(BPS_WHOLE));
                }
                Some(Step::Fixed { amount, .. }) => prop_assert_eq!(paid, u128::from(amount.0).min(base)),
                Some(Step::Recoup { party, .. }) => {
                    // The state is per party: the highest cap among its recoup steps bounds it.
                    let cap = chain
                        .iter()
                        .flat_map(|t| &t.steps)
                        .filter_map(|s| match s {
                            Step::Recoup { party: p, cap } if p == party => Some(cap.0),
                            _ => None,
                        })
                        .max()
                        .unwrap_or(0);
                    let held = before.get(party).copied().unwrap_or_default();
                    prop_assert!(split.recouped[party] <= Micros(cap.max(held.0)));
                }
                Some(Step::ResidualWeights { weights }) => {
                    let total: u128 = weights.values().map(|w| u128::from(*w)).sum();
                    let weight = u128::from(weights[&step.party]);
                    prop_assert!(paid * total <= base * weight && base * weight < (paid + 1) * total);
                }
                None => {}
            }
        }
    }
}

/// Rounding dust never leaves the gross: 1 micro-unit over three equal weights.
#[test]
fn dust_goes_to_the_residual_party() {
    let weights = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 1), ("c".to_owned(), 1)]);
    let chain = [Tier {
        label: "package".into(),
        steps: vec![Step::ResidualWeights { weights }],
        residual: Some("acme".into()),
    }];
    let split = apply(&chain, Micros(100), &BTreeMap::new()).unwrap();
    assert_eq!(
        (split.payout("a"), split.payout("b"), split.payout("c"), split.payout("acme")),
        (Micros(33), Micros(33), Micros(33), Micros(1))
    );
}
