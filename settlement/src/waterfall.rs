//! The revenue waterfall (spec: settlement.md §2): pure integer arithmetic, no I/O.
//!
//! A settlement runs a **chain** of tiers over one gross amount. Each tier is an ordered
//! list of steps; the amount a tier leaves passes down to the next tier as that tier's
//! gross. The last tier is a package's `[revenue]` waterfall, which ends with its residual
//! party. A bundle sold through a solution runs platform -> solution -> package:
//!
//! ```text
//! gross ─▶ [platform tier] ─▶ [solution tier] ─▶ [package waterfall ─▶ residual]
//! ```
//!
//! Every step rounds down (floor), so no step is ever paid more than its exact share; what
//! rounding leaves, and whatever no step takes, reaches the residual party. The payouts
//! therefore sum to the gross exactly, for every input.

use escx::UnixSeconds;
use std::collections::BTreeMap;

use escx_manifest::Micros;
use escx_manifest::schema::{Revenue, Solution, Step};
use serde::Serialize;

/// Basis points in one whole.
pub const BPS_WHOLE: u64 = 10_000;

/// One tier of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// Where the steps come from, for the trace (`platform`, `solution acme/suite`,
    /// `package acme/thermal`).
    pub label: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Receives what the tier leaves, instead of passing it down; set on the last tier only.
    pub residual: Option<String>,
}

impl Tier {
    /// The platform tier: the operator's `bps` share of gross, paid to `party`.
    pub fn platform(party: &str, bps: u32) -> Self {
        Self {
            label: "platform".into(),
            steps: vec![Step::ShareOfGross { party: party.to_owned(), bps }],
            residual: None,
        }
    }

    /// The tier of solution bundle `name`: its `[solution.tier]` step, if any.
    pub fn solution(name: &str, solution: &Solution) -> Self {
        Self {
            label: format!("solution {name}"),
            steps: solution.tier.iter().cloned().collect(),
            residual: None,
        }
    }

    /// The package tier for a sale at `at`: the `[revenue]` version in force then.
    pub fn package(
        label: impl Into<String>,
        revenue: &Revenue,
        at: UnixSeconds,
    ) -> Result<Self, WaterfallError> {
        let label = label.into();
        let waterfall =
            revenue.in_force(at).ok_or_else(|| WaterfallError::NotInForce { tier: label.clone(), at })?;
        Ok(Self { label, steps: waterfall.steps.clone(), residual: Some(revenue.residual.clone()) })
    }
}

/// Why a chain cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaterfallError {
    /// The chain is empty or its last tier has no residual party.
    #[error("the last tier of a settlement chain must name a residual party")]
    NoResidual,
    /// An upper tier names a residual party (it would swallow the lower tiers' share).
    #[error("tier {tier}: only the last tier may have a residual party")]
    ResidualNotLast {
        /// The tier.
        tier: String,
    },
    /// `residual_weights` outside the last step of the last tier, or without parties.
    #[error("tier {tier}: residual_weights must be the last step of the last tier, with at least one party")]
    ResidualWeights {
        /// The tier.
        tier: String,
    },
    /// No waterfall version is in force at the event time.
    #[error(
        "tier {tier}: no [revenue] version is in force at {} (before the first effective_from)",
        escx::timestamp::format_rfc3339(*.at)
    )]
    NotInForce {
        /// The tier.
        tier: String,
        /// The event time.
        at: UnixSeconds,
    },
    /// The computed payouts do not add up to the gross, or miss the residual party: a bug,
    /// refused before anything is written or signed.
    #[error("waterfall invariant broken: {reason}")]
    Unconserved {
        /// Which invariant, and by how much.
        reason: String,
    },
}

impl escx::Fault for WaterfallError {
    fn code(&self) -> &'static str {
        match self {
            Self::NotInForce { .. } => "revenue-not-in-force",
            Self::Unconserved { .. } => "ledger-invariant",
            Self::NoResidual | Self::ResidualNotLast { .. } | Self::ResidualWeights { .. } => {
                "waterfall-invalid"
            }
        }
    }

    fn class(&self) -> escx::ErrorClass {
        escx::ErrorClass::Input
    }
}

/// What one step did, for the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceStep {
    /// The tier's label.
    pub tier: String,
    /// Step index within the tier (0-based).
    pub step: usize,
    /// `share_of_gross_bps`, `share_of_remaining_bps`, `fixed`, `recoup_cap`,
    /// `residual_weights`, `pass_down` or `residual`.
    pub rule: &'static str,
    /// Who was paid (empty for `pass_down`).
    pub party: String,
    /// The amount the rule was computed on (gross, remaining, ...).
    pub base_micros: Micros,
    /// What was paid.
    pub paid_micros: Micros,
    /// What remained after the step.
    pub remaining_micros: Micros,
}

/// One party's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payout {
    /// The party.
    pub party: String,
    /// Total micro-units.
    pub micros: Micros,
}

/// The result of a chain over one gross amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Split {
    /// The gross amount.
    pub gross_micros: Micros,
    /// One entry per party, in the order parties are first paid; zero payouts included.
    pub payouts: Vec<Payout>,
    /// Every step in order.
    pub trace: Vec<TraceStep>,
    /// Recoupment totals after this split (party -> cumulative micros).
    pub recouped: BTreeMap<String, Micros>,
}

impl Split {
    /// A party's total (0 if it takes no part).
    pub fn payout(&self, party: &str) -> Micros {
        self.payouts.iter().find(|p| p.party == party).map_or(Micros::ZERO, |p| p.micros)
    }
}

/// `floor(amount * numerator / denominator)` without overflow (`denominator > 0`).
fn floor_share(amount: u64, numerator: u64, denominator: u64) -> u64 {
    // numerator <= denominator in every call, so the result fits in u64.
    u64::try_from(u128::from(amount) * u128::from(numerator) / u128::from(denominator)).unwrap_or(amount)
}

/// Applies `chain` to `gross`. `recouped` holds each recouping party's cumulative receipts
/// before this settlement; the result carries the new totals.
pub fn apply(
    chain: &[Tier],
    gross: Micros,
    recouped: &BTreeMap<String, Micros>,
) -> Result<Split, WaterfallError> {
    let last = chain.last().ok_or(WaterfallError::NoResidual)?;
    let residual_party = last.residual.clone().ok_or(WaterfallError::NoResidual)?;
    for (index, tier) in chain.iter().enumerate() {
        let is_last = index + 1 == chain.len();
        if !is_last && tier.residual.is_some() {
            return Err(WaterfallError::ResidualNotLast { tier: tier.label.clone() });
        }
        for (position, step) in tier.steps.iter().enumerate() {
            if let Step::ResidualWeights { weights } = step {
                let final_step = is_last && position + 1 == tier.steps.len();
                if !final_step || weights.is_empty() || weights.values().all(|w| *w == 0) {
                    return Err(WaterfallError::ResidualWeights { tier: tier.label.clone() });
                }
            }
        }
    }

    let mut split =
        Split { gross_micros: gross, payouts: Vec::new(), trace: Vec::new(), recouped: recouped.clone() };
    // Each step pays at most what remains of the gross, so no sum below can overflow.
    let pay = |split: &mut Split, party: &str, micros: u64| match split
        .payouts
        .iter_mut()
        .find(|p| p.party == party)
    {
        Some(payout) => payout.micros.0 += micros,
        None => split.payouts.push(Payout { party: party.to_owned(), micros: Micros(micros) }),
    };
    // Conservation as it goes: what is paid plus what remains is the gross after every
    // step (checked again, as a hard error, on the finished split below).
    let conserved = |split: &Split, remaining: u64| {
        split.payouts.iter().map(|p| u128::from(p.micros.0)).sum::<u128>() + u128::from(remaining)
            == u128::from(gross.0)
    };
    let mut tier_gross = gross.0;
    for tier in chain {
        let mut remaining = tier_gross;
        for (index, step) in tier.steps.iter().enumerate() {
            debug_assert!(conserved(&split, remaining), "before step {index} of {}", tier.label);
            let trace = |split: &mut Split, rule, party: &str, base, paid, remaining| {
                split.trace.push(TraceStep {
                    tier: tier.label.clone(),
                    step: index,
                    rule,
                    party: party.to_owned(),
                    base_micros: Micros(base),
                    paid_micros: Micros(paid),
                    remaining_micros: Micros(remaining),
                })
            };
            match step {
                Step::ShareOfGross { party, bps } => {
                    let paid =
                        floor_share(tier_gross, u64::from(*bps).min(BPS_WHOLE), BPS_WHOLE).min(remaining);
                    remaining -= paid;
                    pay(&mut split, party, paid);
                    trace(&mut split, "share_of_gross_bps", party, tier_gross, paid, remaining);
                }
                Step::ShareOfRemaining { party, bps } => {
                    let paid = floor_share(remaining, u64::from(*bps).min(BPS_WHOLE), BPS_WHOLE);
                    let base = remaining;
                    remaining -= paid;
                    pay(&mut split, party, paid);
                    trace(&mut split, "share_of_remaining_bps", party, base, paid, remaining);
                }
                Step::Fixed { party, amount } => {
                    let paid = amount.0.min(remaining);
                    let base = remaining;
                    remaining -= paid;
                    pay(&mut split, party, paid);
                    trace(&mut split, "fixed", party, base, paid, remaining);
                }
                Step::Recoup { party, cap } => {
                    let so_far = split.recouped.get(party).copied().unwrap_or_default().0;
                    let paid = cap.0.saturating_sub(so_far).min(remaining);
                    let base = remaining;
                    remaining -= paid;
                    split.recouped.insert(party.clone(), Micros(so_far + paid));
                    pay(&mut split, party, paid);
                    trace(&mut split, "recoup_cap", party, base, paid, remaining);
                }
                Step::ResidualWeights { weights } => {
                    let total: u64 = weights.values().map(|w| u64::from(*w)).sum();
                    let base = remaining;
                    for (party, weight) in weights {
                        let paid = floor_share(base, u64::from(*weight), total);
                        remaining -= paid;
                        pay(&mut split, party, paid);
                        trace(&mut split, "residual_weights", party, base, paid, remaining);
                    }
                }
            }
        }
        debug_assert!(conserved(&split, remaining), "after the steps of {}", tier.label);
        match &tier.residual {
            Some(party) => {
                pay(&mut split, party, remaining);
                split.trace.push(TraceStep {
                    tier: tier.label.clone(),
                    step: tier.steps.len(),
                    rule: "residual",
                    party: party.clone(),
                    base_micros: Micros(remaining),
                    paid_micros: Micros(remaining),
                    remaining_micros: Micros::ZERO,
                });
                tier_gross = 0;
            }
            None => {
                split.trace.push(TraceStep {
                    tier: tier.label.clone(),
                    step: tier.steps.len(),
                    rule: "pass_down",
                    party: String::new(),
                    base_micros: Micros(remaining),
                    paid_micros: Micros::ZERO,
                    remaining_micros: Micros(remaining),
                });
                tier_gross = remaining;
            }
        }
    }
    check_conserved(&split, &residual_party)?;
    Ok(split)
}

/// What a statement may claim about one payout (settlement.md §4, proofs.md §2.2): it is
/// `floor(bps · base / 10000)` where `base` is the gross less the payouts at `minus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutRule {
    /// Basis points, 1 to 10000.
    pub bps: u32,
    /// Indexes (in the entry's payout list, ascending) of the payouts subtracted from the
    /// gross to give the base; empty when the base is the gross.
    pub minus: Vec<u32>,
}

/// The rule of each non-zero payout `paid` (in order) of `split` over `chain`, where one
/// exists: the party is paid by exactly one step, a `share_of_gross_bps` or
/// `share_of_remaining_bps`, whose base is the gross less the payouts of parties paid only
/// by earlier steps, and the payout is exactly that share of it. Payouts merged from
/// several steps, fixed amounts, recoupments, weights and residuals have none.
pub(crate) fn payout_rules(
    chain: &[Tier],
    split: &Split,
    paid: &[(String, Micros)],
) -> Vec<Option<PayoutRule>> {
    let steps_of = |party: &str| -> Vec<usize> {
        split
            .trace
            .iter()
            .enumerate()
            .filter(|(_, t)| t.party == party && t.paid_micros > Micros::ZERO)
            .map(|(k, _)| k)
            .collect()
    };
    paid.iter()
        .enumerate()
        .map(|(i, (party, amount))| {
            let [k] = steps_of(party)[..] else { return None };
            let step = &split.trace[k];
            let tier = chain.iter().find(|t| t.label == step.tier)?;
            let bps = match (step.rule, tier.steps.get(step.step)?) {
                ("share_of_gross_bps", Step::ShareOfGross { bps, .. })
                | ("share_of_remaining_bps", Step::ShareOfRemaining { bps, .. }) => *bps,
                _ => return None,
            };
            let minus: Vec<u32> = paid
                .iter()
                .zip(0u32..)
                .filter(|((other, _), j)| *j as usize != i && steps_of(other).iter().all(|&m| m < k))
                .map(|(_, j)| j)
                .collect();
            let subtracted: u128 = minus.iter().map(|&j| u128::from(paid[j as usize].1)).sum();
            let minus = if u128::from(split.gross_micros).checked_sub(subtracted)
                == Some(u128::from(step.base_micros))
            {
                minus
            } else if step.base_micros == split.gross_micros {
                Vec::new()
            } else {
                return None;
            };
            let share = u128::from(step.base_micros) * u128::from(bps) / u128::from(BPS_WHOLE);
            (share == u128::from(*amount) && (1..=BPS_WHOLE).contains(&u64::from(bps)))
                .then_some(PayoutRule { bps, minus })
        })
        .collect()
}

/// The split's invariants, checked on every split before it is used (settlement.md §2):
/// the payouts add up to the gross exactly, and the residual party is among them.
pub(crate) fn check_conserved(split: &Split, residual_party: &str) -> Result<(), WaterfallError> {
    let paid: u128 = split.payouts.iter().map(|p| u128::from(p.micros)).sum();
    if paid != u128::from(split.gross_micros) {
        return Err(WaterfallError::Unconserved {
            reason: format!("payouts sum to {paid} micro-units, the gross is {}", split.gross_micros),
        });
    }
    if !split.payouts.iter().any(|p| p.party == residual_party) {
        return Err(WaterfallError::Unconserved {
            reason: format!("the residual party {residual_party} is not among the payouts"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use escx::Fault as _;
    use escx_manifest::Micros;

    fn tier(label: &str, steps: Vec<Step>, residual: Option<&str>) -> Tier {
        Tier { label: label.into(), steps, residual: residual.map(Into::into) }
    }

    fn gross_bps(party: &str, bps: u32) -> Step {
        Step::ShareOfGross { party: party.into(), bps }
    }

    #[test]
    fn an_unconserved_split_is_refused_not_signed() {
        let split = Split {
            gross_micros: Micros(100),
            payouts: vec![
                Payout { party: "a".into(), micros: Micros(60) },
                Payout { party: "r".into(), micros: Micros(39) },
            ],
            trace: Vec::new(),
            recouped: BTreeMap::new(),
        };
        let err = check_conserved(&split, "r").unwrap_err();
        assert_eq!(err.code(), "ledger-invariant");
        assert!(err.to_string().contains("sum to 99"), "{err}");
        let mut fixed = split.clone();
        fixed.payouts[1].micros = Micros(40);
        check_conserved(&fixed, "r").unwrap();
        assert!(check_conserved(&fixed, "nobody").is_err());
    }

    #[test]
    fn architecture_example_pays_every_step_and_the_dust_to_the_residual() {
        let weights = BTreeMap::from([("acme".to_owned(), 3), ("partner".to_owned(), 1)]);
        let chain = [tier(
            "package",
            vec![
                gross_bps("platform", 1500),
                Step::ShareOfRemaining { party: "referrer".into(), bps: 1000 },
                Step::Fixed { party: "studio".into(), amount: Micros(10_000_000) },
                Step::Recoup { party: "investor".into(), cap: Micros(5_000_000_000) },
                Step::ResidualWeights { weights },
            ],
            Some("acme"),
        )];
        let split = apply(&chain, Micros(1_234_560_000), &BTreeMap::new()).unwrap();
        assert_eq!(split.payout("platform"), Micros(185_184_000));
        assert_eq!(split.payout("referrer"), Micros(104_937_600));
        assert_eq!(split.payout("studio"), Micros(10_000_000));
        // The investor recoups everything left (cap not reached), so nothing reaches the weights.
        assert_eq!(split.payout("investor"), Micros(934_438_400));
        assert_eq!(split.recouped["investor"], Micros(934_438_400));
        assert_eq!(split.payouts.iter().map(|p| p.micros.0).sum::<u64>(), 1_234_560_000);
    }

    #[test]
    fn tiers_pass_down_what_they_leave() {
        let chain = [
            tier("platform", vec![gross_bps("platform", 1000)], None),
            tier("solution", vec![gross_bps("suite", 2000)], None),
            tier("package", vec![gross_bps("referrer", 500)], Some("acme")),
        ];
        let split = apply(&chain, Micros(1_000_000), &BTreeMap::new()).unwrap();
        // 10 % of 1.00; 20 % of the 0.90 left; 5 % of the 0.72 left; the rest to acme.
        let payouts: Vec<(&str, u64)> =
            split.payouts.iter().map(|p| (p.party.as_str(), p.micros.0)).collect();
        assert_eq!(
            payouts,
            [("platform", 100_000), ("suite", 180_000), ("referrer", 36_000), ("acme", 684_000)]
        );
    }

    #[test]
    fn recoupment_stops_at_its_cap_across_settlements() {
        let chain = [tier(
            "package",
            vec![Step::Recoup { party: "investor".into(), cap: Micros(250) }],
            Some("acme"),
        )];
        let mut recouped = BTreeMap::new();
        let mut paid = Vec::new();
        for _ in 0..3 {
            let split = apply(&chain, Micros(100), &recouped).unwrap();
            paid.push((split.payout("investor").0, split.payout("acme").0));
            recouped = split.recouped;
        }
        assert_eq!(paid, [(100, 0), (100, 0), (50, 50)]);
    }

    #[test]
    fn malformed_chains_are_refused() {
        assert_eq!(apply(&[], Micros(1), &BTreeMap::new()), Err(WaterfallError::NoResidual));
        let no_residual = [tier("package", vec![], None)];
        assert_eq!(apply(&no_residual, Micros(1), &BTreeMap::new()), Err(WaterfallError::NoResidual));
        let upper = [tier("platform", vec![], Some("x")), tier("package", vec![], Some("acme"))];
        assert!(matches!(
            apply(&upper, Micros(1), &BTreeMap::new()),
            Err(WaterfallError::ResidualNotLast { .. })
        ));
        let weights = Step::ResidualWeights { weights: BTreeMap::from([("a".to_owned(), 1)]) };
        let early = [tier("package", vec![weights, gross_bps("p", 1)], Some("acme"))];
        assert!(matches!(
            apply(&early, Micros(1), &BTreeMap::new()),
            Err(WaterfallError::ResidualWeights { .. })
        ));
    }
}
