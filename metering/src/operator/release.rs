//! Differentially private release of aggregate usage (privacy.md §3).

use super::*;

/// The result of an aggregation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aggregate {
    /// No unit's noised cohort reached the package's `cohort_min_size`: nothing is
    /// released; the decision spent `decision_micros` (privacy.md §3).
    Suppressed {
        /// The threshold.
        cohort_min_size: u32,
        /// Epsilon the decision spent, millionths.
        decision_micros: u64,
        /// Budget left for the window, millionths.
        remaining_micros: u64,
    },
    /// Released.
    Released(Release),
}

/// A noised release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Package.
    pub package: PackageName,
    /// Window start.
    pub start: UnixSeconds,
    /// Window end.
    pub end: UnixSeconds,
    /// Per released unit: clipped sum over holders plus discrete Laplace noise, floored
    /// at 0.
    pub values: Vec<(String, u64)>,
    /// The declared units whose noised cohort was below the threshold: not released.
    pub suppressed: Vec<String>,
    /// Each holder's window total per unit is clipped to this (the sensitivity).
    pub clip: u64,
    /// Epsilon the values spent, millionths (split evenly over the released units).
    pub epsilon_micros: u64,
    /// Epsilon the cohort decision spent, millionths.
    pub decision_micros: u64,
    /// Budget left for the window, millionths.
    pub remaining_micros: u64,
    /// The noise scale per unit: `clip · units / epsilon`, as `numerator/denominator`.
    pub scale: (u64, u64),
}

/// The share of a window's budget each aggregation spends on deciding which units reach
/// the cohort (privacy.md §3): a quarter.
pub const SUPPRESSION_SHARE: u64 = 4;

impl<S: OperatorStore> Operator<S> {
    /// Releases the share-tier sums of `package` over one `[telemetry] window`
    /// (privacy.md): suppressed below `cohort_min_size` distinct holders, otherwise each
    /// unit's clipped sum plus exact discrete Laplace noise, spending `epsilon_micros`
    /// (default: all that is left) of the window's budget.
    pub fn aggregate(
        &mut self,
        package: &PackageName,
        (start, end): (UnixSeconds, UnixSeconds),
        clip: u64,
        epsilon_micros: Option<u64>,
        rng: &mut impl RngCore,
        now: UnixSeconds,
    ) -> Result<Aggregate, Error> {
        let telemetry = self.store.telemetry_terms(package)?.ok_or_else(|| {
            refuse(
                Refusal::UnknownTerms,
                format!("{package} declares no [telemetry]; register its package first"),
            )
        })?;
        if end - start != telemetry.window_secs || start.floor(telemetry.window_secs) != start {
            return Err(refuse(
                Refusal::WindowInvalid,
                format!(
                    "{package} aggregates over windows of {} hours starting at multiples of that from 1970-01-01T00; \
                     {}/{} is not one",
                    telemetry.window_secs / HOUR_SECS,
                    format_hour(start),
                    format_hour(end)
                ),
            ));
        }
        if clip == 0 || clip > u64::from(u32::MAX) {
            return Err(refuse(Refusal::Invalid, "the clip (per-holder bound) must be 1 to 2^32 - 1"));
        }
        retrying(|| {
            let tx = self.store.begin()?;
            let mut per_holder: BTreeMap<(String, Vec<u8>), u128> = BTreeMap::new();
            for (unit, license, total) in tx.shared_totals(package.as_str(), start.0, end.0)? {
                *per_holder.entry((unit, license)).or_default() += u128::from(total);
            }
            // The window is released under the strictest terms in force for any of its
            // hours (and the current ones): registering terms later never raises its budget
            // or lowers its cohort (metering.md §6.5).
            let (mut budget, mut cohort) = (telemetry.epsilon_micros, telemetry.cohort_min_size);
            let history = tx.terms_history(package.as_str())?;
            for version in versions_during(&history, start.0, end.0) {
                if let (_, Some(t)) = decode_terms(&version.terms)? {
                    budget = budget.min(t.epsilon_micros);
                    cohort = cohort.max(t.cohort_min_size);
                }
            }
            // Every release whose window overlaps this one counts against it.
            let spent = tx.epsilon_spent(package.as_str(), start.0, end.0)?;
            let remaining = budget.saturating_sub(spent);
            let exhausted = |asked: u64| {
                refuse(
                    Refusal::BudgetExhausted,
                    format!(
                        "the privacy budget of {package} for {}/{} has {} of {} left; this release asks for {}",
                        format_hour(start),
                        format_hour(end),
                        epsilon_text(remaining),
                        epsilon_text(budget),
                        epsilon_text(asked)
                    ),
                )
            };
            // Deciding which units reach the cohort costs a share of the budget on every
            // call, suppressed or not (privacy.md §3): "were there k?" is not free.
            let decision = (budget / SUPPRESSION_SHARE).max(1);
            if remaining < decision {
                return Err(exhausted(decision));
            }
            // Every declared unit is considered, whether or not anyone used it, so the set
            // of units itself reveals nothing.
            let mut units: Vec<String> = vec![UNIT_MINUTES.to_owned()];
            units.extend(telemetry.metrics.iter().filter(|m| is_metric(m)).cloned());
            units.sort();
            units.dedup();
            // The cohort is counted per unit (one unit's sum must not hold a single
            // holder hidden in another unit's crowd), each count noised: one holder moves
            // each of the k counts by at most 1, so the scale is k / decision.
            let mut passing = Vec::new();
            for unit in &units {
                let count = per_holder.keys().filter(|(u, _)| u == unit).count();
                let noise = crate::dp::discrete_laplace(rng, units.len() as u64 * EPSILON_SCALE, decision);
                let noisy = i128::try_from(count).unwrap_or(i128::MAX).saturating_add(noise);
                if noisy >= i128::from(cohort) {
                    passing.push(unit.clone());
                }
            }
            if passing.is_empty() {
                tx.insert_release(package.as_str(), start.0, end.0, decision, clip, now.0, &[])?;
                tx.commit()?;
                return Ok(Aggregate::Suppressed {
                    cohort_min_size: cohort,
                    decision_micros: decision,
                    remaining_micros: remaining - decision,
                });
            }
            let available = remaining - decision;
            let epsilon = epsilon_micros.unwrap_or(available);
            if epsilon == 0 || epsilon > available {
                return Err(exhausted(epsilon.saturating_add(decision)));
            }
            // Sequential composition: each released unit gets epsilon / k, so the noise
            // scale is clip · k / epsilon = (clip · k · 10^6) / epsilon_micros.
            let scale_t = clip * passing.len() as u64 * EPSILON_SCALE;
            let scale_s = epsilon;
            let mut values = Vec::new();
            for unit in &passing {
                let sum: u128 = per_holder
                    .iter()
                    .filter(|((u, _), _)| u == unit)
                    .map(|(_, t)| (*t).min(u128::from(clip)))
                    .sum();
                // Drawn again if the transaction runs again: nothing drawn before is ever
                // released.
                let noise = crate::dp::discrete_laplace(rng, scale_t, scale_s);
                let noised = (i128::try_from(sum).unwrap_or(i128::MAX).saturating_add(noise)).max(0);
                values.push((unit.clone(), u64::try_from(noised).unwrap_or(u64::MAX)));
            }
            let suppressed: Vec<String> = units.iter().filter(|u| !passing.contains(u)).cloned().collect();
            tx.insert_release(package.as_str(), start.0, end.0, epsilon + decision, clip, now.0, &values)?;
            tx.commit()?;
            Ok(Aggregate::Released(Release {
                package: package.clone(),
                start,
                end,
                values,
                suppressed,
                clip,
                epsilon_micros: epsilon,
                decision_micros: decision,
                remaining_micros: available - epsilon,
                scale: (scale_t, scale_s),
            }))
        })
    }
}
