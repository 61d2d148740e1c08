//! `[pricing]` (manifest.md §2).

use super::fields::*;
use super::raw::*;
use super::*;

pub(super) fn validate_pricing(
    raw: S<RawPricing>,
    features: &BTreeMap<String, Vec<FeatureItem>>,
    c: &mut Collector<'_>,
) -> Option<Pricing> {
    let span = raw.span();
    let raw = raw.into_inner();
    let license_type = match raw.license_type.as_ref().map(|l| (l.get_ref().as_str(), l.span())) {
        Some(("free", _)) => LicenseType::Free,
        Some(("paid", _)) => LicenseType::Paid,
        Some((other, at)) => {
            c.error(
                at,
                "pricing.license_type",
                format!("{other:?} is not a license type"),
                Some("use \"free\" or \"paid\"".into()),
            );
            return None;
        }
        None => {
            c.error(
                span.clone(),
                "pricing.license_type",
                "missing `license_type`",
                Some("add license_type = \"free\" or \"paid\"".into()),
            );
            return None;
        }
    };
    let currency = raw.currency.as_ref().and_then(|cur| check_currency(cur, "pricing.currency", c));
    if raw.tier.len() > TIERS_MAX {
        c.error(raw.tier[TIERS_MAX].span(), "pricing.tier", format!("more than {TIERS_MAX} tiers"), None);
    }
    match license_type {
        LicenseType::Free if !raw.tier.is_empty() => {
            c.error(
                raw.tier[0].span(),
                "pricing.tier",
                "a free package has no price tiers",
                Some("remove the tiers or set license_type = \"paid\"".into()),
            );
        }
        LicenseType::Paid if raw.tier.is_empty() => {
            c.error(span.clone(), "pricing.tier", "a paid package needs at least one [[pricing.tier]]", None);
        }
        LicenseType::Paid if raw.currency.is_none() => {
            c.error(
                span,
                "pricing.currency",
                "a paid package needs a currency",
                Some("add currency = \"USD\"".into()),
            );
        }
        _ => {}
    }
    let mut tiers = Vec::new();
    let mut names = BTreeSet::new();
    for (index, tier) in raw.tier.into_iter().enumerate() {
        let key = format!("pricing.tier[{index}]");
        let span = tier.span();
        let tier = tier.into_inner();
        let Some(name) = tier.name else {
            missing_at(c, span, &format!("{key}.name"), "add name = \"share\"");
            continue;
        };
        if !names.insert(name.get_ref().clone()) {
            c.error(
                name.span(),
                format!("{key}.name"),
                format!("tier {:?} is defined twice", name.get_ref()),
                None,
            );
        }
        let price = match &tier.price {
            Some(p) => money(p, &format!("{key}.price"), c),
            None => {
                missing_at(
                    c,
                    span.clone(),
                    &format!("{key}.price"),
                    "add price = \"49.00\" (a decimal string)",
                );
                None
            }
        };
        let unit = match tier.unit.as_ref().map(|u| (u.get_ref().as_str(), u.span())) {
            Some(("one-off", _)) => Some(PriceUnit::OneOff),
            Some(("hour", _)) => Some(PriceUnit::Hour),
            Some(("month", _)) => Some(PriceUnit::Month),
            Some(("year", _)) => Some(PriceUnit::Year),
            Some((other, at)) => {
                c.error(
                    at,
                    format!("{key}.unit"),
                    format!("{other:?} is not a price unit"),
                    Some("use \"one-off\", \"hour\", \"month\" or \"year\"".into()),
                );
                None
            }
            None => Some(PriceUnit::OneOff),
        };
        let telemetry = match tier.telemetry.as_ref().map(|t| (t.get_ref().as_str(), t.span())) {
            Some(("share", _)) => Some(TelemetryMode::Share),
            Some(("private", _)) | None => Some(TelemetryMode::Private),
            Some((other, at)) => {
                c.error(
                    at,
                    format!("{key}.telemetry"),
                    format!("{other:?} is not a telemetry mode"),
                    Some("use \"share\" or \"private\"".into()),
                );
                None
            }
        };
        let seats = match &tier.seats {
            Some(s) if !(1..=1_000_000).contains(s.get_ref()) => {
                c.error(
                    s.span(),
                    format!("{key}.seats"),
                    format!("{} seats; use 1 to 1000000", s.get_ref()),
                    None,
                );
                None
            }
            // In 1..=1000000, checked above.
            Some(s) => u32::try_from(*s.get_ref()).ok(),
            None => None,
        };
        for feature in &tier.features {
            if !features.contains_key(feature.get_ref()) {
                c.error(
                    feature.span(),
                    format!("{key}.features"),
                    format!("{:?} is not a feature of this package", feature.get_ref()),
                    Some("entitlements name features declared in [features]".into()),
                );
            }
        }
        if let (Some(price), Some(unit), Some(telemetry)) = (price, unit, telemetry) {
            tiers.push(Tier {
                name: name.into_inner(),
                price,
                unit,
                telemetry,
                seats,
                features: tier.features.into_iter().map(Spanned::into_inner).collect(),
            });
        }
    }
    Some(Pricing { license_type, currency, tiers })
}
