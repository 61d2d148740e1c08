//! `[revenue]`, the waterfall (manifest.md §2).

use super::fields::*;
use super::raw::*;
use super::*;

pub(super) fn validate_revenue(raw: S<RawRevenue>, c: &mut Collector<'_>) -> Option<Revenue> {
    let span = raw.span();
    let raw = raw.into_inner();
    let currency = match &raw.currency {
        Some(cur) => check_currency(cur, "revenue.currency", c),
        None => {
            c.error(
                span.clone(),
                "revenue.currency",
                "missing `currency`",
                Some("add currency = \"USD\"".into()),
            );
            None
        }
    };
    let residual = match &raw.residual {
        Some(party) => check_party(party, "revenue.residual", c).then(|| party.get_ref().clone()),
        None => {
            c.error(
                span.clone(),
                "revenue.residual",
                "missing `residual`",
                Some("name the party that receives the rounding dust, e.g. residual = \"acme\"".into()),
            );
            None
        }
    };
    let effective_from = match &raw.effective_from {
        Some(date) => parse_date(date, "revenue.effective_from", c),
        None => {
            c.error(
                span.clone(),
                "revenue.effective_from",
                "missing `effective_from`",
                Some("add effective_from = \"2026-01-01\"".into()),
            );
            None
        }
    };
    let steps = validate_steps(&raw.step, "revenue.step", span, c);
    let mut versions = Vec::new();
    let mut previous = effective_from;
    for (index, version) in raw.version.iter().enumerate() {
        let key = format!("revenue.version[{index}]");
        let version_span = version.span();
        let from = match &version.get_ref().effective_from {
            Some(date) => parse_date(date, &format!("{key}.effective_from"), c),
            None => {
                missing_at(
                    c,
                    version_span.clone(),
                    &format!("{key}.effective_from"),
                    "add effective_from = \"2027-01-01\"",
                );
                None
            }
        };
        if let (Some(from), Some(before)) = (from, previous)
            && from <= before
        {
            c.error(
                version_span.clone(),
                format!("{key}.effective_from"),
                "must be later than the previous waterfall's effective_from",
                Some("list [[revenue.version]] tables in date order".into()),
            );
        }
        let version_steps = validate_steps(&version.get_ref().step, &format!("{key}.step"), version_span, c);
        if let (Some(from), Some(steps)) = (from, version_steps) {
            versions.push(Waterfall { effective_from: from, steps });
        }
        previous = from.or(previous);
    }
    Some(Revenue {
        currency: currency?,
        residual: residual?,
        base: Waterfall { effective_from: effective_from?, steps: steps? },
        versions,
    })
}

pub(super) fn validate_steps(
    raw: &[S<RawStep>],
    key: &str,
    table: std::ops::Range<usize>,
    c: &mut Collector<'_>,
) -> Option<Vec<Step>> {
    if raw.is_empty() {
        c.error(
            table,
            key,
            "a waterfall needs at least one step",
            Some("add [[revenue.step]] with a party and one amount rule".into()),
        );
        return None;
    }
    if raw.len() > REVENUE_STEPS_MAX {
        c.error(raw[REVENUE_STEPS_MAX].span(), key, format!("more than {REVENUE_STEPS_MAX} steps"), None);
    }
    let mut steps = Vec::new();
    let mut gross_bps: u32 = 0;
    let mut ok = true;
    for (index, step) in raw.iter().enumerate() {
        let step_key = format!("{key}[{index}]");
        match validate_step(step, &step_key, c) {
            Some(step) => {
                if let Step::ShareOfGross { bps, .. } = &step {
                    gross_bps += bps;
                }
                if matches!(step, Step::ResidualWeights { .. }) && index + 1 != raw.len() {
                    c.error(
                        raw[index].span(),
                        &step_key,
                        "residual_weights must be the last step",
                        Some("move it to the end: it splits whatever the other steps leave".into()),
                    );
                    ok = false;
                }
                steps.push(step);
            }
            None => ok = false,
        }
    }
    if gross_bps > BPS_FULL {
        c.error(
            raw[0].span(),
            key,
            format!("shares of gross add up to {gross_bps} bps, more than 10000 (100 %)"),
            Some("lower the share_of_gross_bps values".into()),
        );
        ok = false;
    }
    ok.then_some(steps)
}

pub(super) fn validate_step(step: &S<RawStep>, key: &str, c: &mut Collector<'_>) -> Option<Step> {
    let raw = step.get_ref();
    let rules = [
        raw.share_of_gross_bps.is_some(),
        raw.share_of_remaining_bps.is_some(),
        raw.fixed.is_some(),
        raw.recoup_cap.is_some(),
        raw.residual_weights.is_some(),
    ];
    let count = rules.iter().filter(|r| **r).count();
    if count != 1 {
        c.error(
            step.span(),
            key,
            format!("a step needs exactly one amount rule, found {count}"),
            Some(
                "use one of share_of_gross_bps, share_of_remaining_bps, fixed, recoup_cap, residual_weights"
                    .into(),
            ),
        );
        return None;
    }
    if let Some(weights) = &raw.residual_weights {
        if let Some(party) = &raw.party {
            c.error(
                party.span(),
                format!("{key}.party"),
                "a residual_weights step names its parties in the weights, not in `party`",
                None,
            );
            return None;
        }
        let mut parsed = BTreeMap::new();
        if weights.get_ref().is_empty() || weights.get_ref().len() > RESIDUAL_PARTIES_MAX {
            c.error(
                weights.span(),
                format!("{key}.residual_weights"),
                format!("needs 1 to {RESIDUAL_PARTIES_MAX} parties"),
                None,
            );
            return None;
        }
        for (party, weight) in weights.get_ref() {
            let party_spanned = Spanned::new(weight.span(), party.clone());
            if !check_party(&party_spanned, &format!("{key}.residual_weights"), c) {
                return None;
            }
            if !(1..=i64::from(BPS_FULL)).contains(weight.get_ref()) {
                c.error(
                    weight.span(),
                    format!("{key}.residual_weights.{party}"),
                    format!("weight {} must be 1 to 10000", weight.get_ref()),
                    None,
                );
                return None;
            }
            // In 1..=10000, checked above.
            let Ok(weight) = u32::try_from(*weight.get_ref()) else { return None };
            parsed.insert(party.clone(), weight);
        }
        return Some(Step::ResidualWeights { weights: parsed });
    }
    let Some(party) = &raw.party else {
        c.error(
            step.span(),
            format!("{key}.party"),
            "missing `party`",
            Some("name who this step pays, e.g. party = \"platform\"".into()),
        );
        return None;
    };
    if !check_party(party, &format!("{key}.party"), c) {
        return None;
    }
    let party = party.get_ref().clone();
    let bps = |value: &S<i64>, field: &str, c: &mut Collector<'_>| {
        if (1..=i64::from(BPS_FULL)).contains(value.get_ref()) {
            u32::try_from(*value.get_ref()).ok()
        } else {
            c.error(
                value.span(),
                format!("{key}.{field}"),
                format!("{} bps is outside 1..=10000", value.get_ref()),
                Some("1 bps = 0.01 %; 1500 is 15 %".into()),
            );
            None
        }
    };
    let positive = |value: &S<String>, field: &str, c: &mut Collector<'_>| {
        let amount = money(value, &format!("{key}.{field}"), c)?;
        if amount == Micros::ZERO {
            c.error(value.span(), format!("{key}.{field}"), "must be greater than zero", None);
            return None;
        }
        Some(amount)
    };
    if let Some(value) = &raw.share_of_gross_bps {
        return Some(Step::ShareOfGross { party, bps: bps(value, "share_of_gross_bps", c)? });
    }
    if let Some(value) = &raw.share_of_remaining_bps {
        return Some(Step::ShareOfRemaining { party, bps: bps(value, "share_of_remaining_bps", c)? });
    }
    if let Some(value) = &raw.fixed {
        return Some(Step::Fixed { party, amount: positive(value, "fixed", c)? });
    }
    let value = raw.recoup_cap.as_ref()?;
    Some(Step::Recoup { party, cap: positive(value, "recoup_cap", c)? })
}
