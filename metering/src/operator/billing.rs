//! A period's billing: one usage charge per closed license (metering.md §7.2).

use super::*;

/// One license's usage charge for a period (settlement's `usage` event).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageCharge {
    /// Stable event id: `operator:<operator id>:usage:<license id>:<period>`.
    pub id: String,
    /// License id (hex).
    pub license_id: String,
    /// Package.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// `YYYY-MM`.
    pub period: String,
    /// Minutes of use in the period.
    pub minutes: u64,
    /// The tier's price per hour, micro-units.
    pub price_micros: Micros,
    /// `floor(minutes · price / 60)`, micro-units.
    pub gross_micros: Micros,
    /// ISO 4217 code.
    pub currency: String,
    /// The event time: the last second of the period.
    #[serde(serialize_with = "escx::timestamp::serialize_rfc3339")]
    pub time: UnixSeconds,
    /// The license has equivocated (see the evidence).
    pub flagged: bool,
}

/// A period's billing: the charges, and the licenses that could not be charged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Billing {
    /// One per closed license of a metered tier that could be charged.
    pub charges: Vec<UsageCharge>,
    /// The closed licenses that could not be, each with its code.
    pub refused: Vec<RefusedCharge>,
}

/// A closed license billing could not charge (metering.md §7.2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusedCharge {
    /// License id (hex).
    pub license_id: String,
    /// Package, as stored.
    pub package: String,
    /// Tier.
    pub tier: String,
    /// The stable code (`unknown-terms`, `usage-impossible`, `counter-overflow`).
    pub code: &'static str,
    /// What was wrong.
    pub reason: String,
}

impl<S: OperatorStore> Operator<S> {
    /// The usage charges of `period`: one per closed license of a metered tier
    /// (`unit = "hour"`), `floor(minutes · price / 60)` (metering.md §7.2). One statement,
    /// so one snapshot of the store. Each license is charged on its own: one that cannot
    /// be (no terms, more minutes than the period has, a charge above 2^64 − 1) is
    /// refused with its code and id, and everyone else is still billed.
    pub fn billing(&self, period: Period) -> Result<Billing, Error> {
        let period_text = period.to_string();
        let rows = self.store.billing_rows(&period_text)?;
        let mut billing = Billing::default();
        // Each package's terms history, read and decoded once for the whole period.
        let mut versions: HashMap<String, Vec<(String, Vec<TierTerms>)>> = HashMap::new();
        for r in rows {
            let license = hex::encode(&r.license_id);
            if r.terms_version.is_some() && !versions.contains_key(&r.package) {
                // A history that cannot be read is not kept: each of its licenses is then
                // refused with the error, as alone.
                if let Ok(decoded) = self.terms_versions(&r.package) {
                    versions.insert(r.package.clone(), decoded);
                }
            }
            let held = match versions.get(&r.package) {
                Some(held) => Ok(held.as_slice()),
                None if r.terms_version.is_some() => self.terms_versions(&r.package).map(|_| &[][..]),
                None => Ok(&[][..]),
            };
            match held.and_then(|held| self.charge(&r, held, period)) {
                Ok(Some(charge)) => billing.charges.push(charge),
                Ok(None) => {}
                Err(error) => billing.refused.push(RefusedCharge {
                    license_id: license,
                    package: r.package.clone(),
                    tier: r.tier.clone(),
                    code: escx::Fault::code(&error),
                    reason: error.to_string(),
                }),
            }
        }
        Ok(billing)
    }

    /// One license's charge for `period` (None: its tier is not metered), under the terms
    /// version the license is bound to (metering.md §6.5).
    /// A package's terms versions, decoded: (version, tiers).
    pub(super) fn terms_versions(&self, package: &str) -> Result<Vec<(String, Vec<TierTerms>)>, Error> {
        self.store
            .terms_history(package)?
            .into_iter()
            .map(|v| Ok((v.version, decode_terms(&v.terms)?.0)))
            .collect()
    }

    pub(super) fn charge(
        &self,
        r: &BillingRow,
        versions: &[(String, Vec<TierTerms>)],
        period: Period,
    ) -> Result<Option<UsageCharge>, Error> {
        let package = package_name(&r.package)?;
        let terms = match &r.terms_version {
            Some(version) => {
                let (_, tiers) = versions.iter().find(|(v, _)| v == version).ok_or_else(|| {
                    Error::stored(format!("a license is bound to terms {version}, which are not stored"))
                })?;
                tiers
                    .iter()
                    .find(|t| t.tier == r.tier)
                    .map(|t| (t.unit.clone(), t.price_micros.0, t.currency.clone()))
            }
            None => r.terms.clone(),
        };
        let Some((unit, price, currency)) = terms else {
            return Err(refuse(
                Refusal::UnknownTerms,
                format!("no terms for {package} tier {}; register the package", r.tier),
            ));
        };
        if unit != "hour" {
            return Ok(None);
        }
        // Read back as written (§7.1): no close can hold more minutes than its period.
        let most = (period.end().0 - period.start().0) / HOUR_SECS * MINUTES as u64;
        if r.minutes > most {
            return Err(refuse(
                Refusal::Impossible,
                format!("the close holds {} minutes of use; {period} has {most}", r.minutes),
            ));
        }
        let price = Micros(price);
        let gross = u128::from(r.minutes) * u128::from(price.0) / 60;
        let license = hex::encode(&r.license_id);
        Ok(Some(UsageCharge {
            id: format!("operator:{}:usage:{license}:{period}", self.id),
            license_id: license,
            package,
            tier: r.tier.clone(),
            period: period.to_string(),
            minutes: r.minutes,
            price_micros: price,
            gross_micros: u64::try_from(gross)
                .map(Micros)
                .map_err(|_| refuse(Refusal::Overflow, "the usage charge is above 2^64 - 1 micro-units"))?,
            currency,
            time: period.end() - 1,
            flagged: r.flagged,
        }))
    }
}
