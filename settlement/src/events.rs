//! Billing events (spec: settlement.md §1): what the ledger settles.

use escx::UnixSeconds;
use escx::header::PackageName;
use std::path::Path;

use escx_licensing::issuer::Sale;
use escx_manifest::Micros;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

crate::store::named_enum! {
    /// What kind of money movement an event records.
    Kind {
        /// A one-off purchase.
        Sale => "sale",
        /// Metered usage for a period.
        Usage => "usage",
        /// Gives back all or part of an earlier sale or usage event (`refund_of`).
        Refund => "refund",
    }
}

/// One billing event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingEvent {
    /// Globally unique id (1 to 256 bytes of printable ASCII); the settlement id derives
    /// from it.
    pub id: String,
    /// Unix seconds; picks the `[revenue]` version in force.
    pub time: UnixSeconds,
    /// Package name.
    pub package: PackageName,
    /// Package version whose manifest holds the waterfall (the newest known when absent).
    pub version: Option<String>,
    /// Pricing tier.
    pub tier: String,
    /// Sale, usage or refund.
    pub kind: Kind,
    /// Gross amount in micro-units (for a refund: the amount given back).
    pub gross_micros: Micros,
    /// ISO 4217 currency.
    pub currency: String,
    /// The solution bundle the sale went through, if any.
    pub solution: Option<String>,
    /// For a refund: the id of the event it gives back.
    pub refund_of: Option<String>,
}

impl BillingEvent {
    /// The billing event for an issuer's sale record: id `issuer:<issuer id>:sale:<n>`.
    pub fn from_sale(issuer_id: &str, sale: &Sale) -> Self {
        Self {
            id: format!("issuer:{issuer_id}:sale:{}", sale.id),
            time: sale.at,
            package: sale.package.clone(),
            version: None,
            tier: sale.tier.clone(),
            kind: Kind::Sale,
            gross_micros: sale.total_micros,
            currency: sale.currency.clone(),
            solution: None,
            refund_of: None,
        }
    }

    /// The billing event for an operator's usage charge (metering.md §7.2): kind `usage`,
    /// id `operator:<operator id>:usage:<license id>:<period>`, made from the charge's
    /// fields by the program that holds both a metering operator and a ledger (settlement
    /// and metering are siblings; neither depends on the other).
    pub fn usage(
        id: String,
        time: UnixSeconds,
        package: PackageName,
        tier: String,
        gross_micros: Micros,
        currency: String,
    ) -> Self {
        Self {
            id,
            time,
            package,
            version: None,
            tier,
            kind: Kind::Usage,
            gross_micros,
            currency,
            solution: None,
            refund_of: None,
        }
    }

    /// The JSON object of the events file.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "time": escx::timestamp::format_rfc3339(self.time),
            "package": self.package,
            "version": self.version,
            "tier": self.tier,
            "kind": self.kind.name(),
            "gross": self.gross_micros.to_string(),
            "currency": self.currency,
            "solution": self.solution,
            "refund_of": self.refund_of,
        })
    }

    /// Canonical bytes: what a settlement's content hash covers.
    pub fn canonical(&self) -> Vec<u8> {
        escx::cbor::encode(self)
    }
}

/// Reads an events file: a JSON array of event objects (settlement.md §1). Every problem
/// names the file, the record's position and id, and the field.
pub fn read_events(path: &Path) -> Result<Vec<BillingEvent>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.into(), error: e })?;
    parse_events(&text, path)
}

/// [`read_events`] on text already read.
pub fn parse_events(text: &str, path: &Path) -> Result<Vec<BillingEvent>, Error> {
    let file_error = |reason: String| Error::Event { path: path.into(), index: 0, id: None, reason };
    let value: Value =
        serde_json::from_str(text).map_err(|e| file_error(format!("not JSON (line {}): {e}", e.line())))?;
    let records = value
        .as_array()
        .or_else(|| value.get("events").and_then(Value::as_array))
        .ok_or_else(|| file_error("expected a JSON array of events (or {\"events\": [...]})".into()))?;
    let mut events = Vec::with_capacity(records.len());
    let mut seen = std::collections::HashSet::new();
    for (index, record) in records.iter().enumerate() {
        let index = index + 1;
        let id = record.get("id").and_then(Value::as_str).map(str::to_owned);
        let fail = |reason: String| Error::Event { path: path.into(), index, id: id.clone(), reason };
        let event = parse_record(record).map_err(fail)?;
        if !seen.insert(event.id.clone()) {
            return Err(fail("id: the same id appears earlier in this file".into()));
        }
        events.push(event);
    }
    Ok(events)
}

fn parse_record(record: &Value) -> Result<BillingEvent, String> {
    let object = record.as_object().ok_or("expected an object")?;
    const KEYS: [&str; 10] =
        ["id", "time", "package", "version", "tier", "kind", "gross", "currency", "solution", "refund_of"];
    if let Some(unknown) = object.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("{unknown}: unknown field (expected one of {})", KEYS.join(", ")));
    }
    let text = |key: &str| -> Result<String, String> {
        object
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{key}: required string"))
    };
    let optional = |key: &str| -> Result<Option<String>, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{key}: expected a string or null")),
        }
    };
    let id = text("id")?;
    if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err("id: 1 to 256 printable ASCII characters without spaces".into());
    }
    let time = match object.get("time") {
        Some(Value::String(s)) => escx::timestamp::parse(s).map_err(|r| format!("time: {r}"))?,
        Some(Value::Number(n)) => {
            UnixSeconds(n.as_u64().ok_or("time: expected Unix seconds or an RFC 3339 string")?)
        }
        _ => return Err("time: required (RFC 3339 string or Unix seconds)".into()),
    };
    let package = PackageName::parse(text("package")?).map_err(|e| format!("package: {e}"))?;
    let version = optional("version")?;
    if let Some(version) = &version {
        semver::Version::parse(version).map_err(|e| format!("version: {version:?}: {e}"))?;
    }
    let kind_text = text("kind")?;
    let kind =
        Kind::parse(&kind_text).ok_or_else(|| format!("kind: {kind_text:?} is not sale, usage or refund"))?;
    let gross = text("gross")?;
    let gross_micros = Micros::parse(&gross).map_err(|e| format!("gross: {gross:?}: {e}"))?;
    let currency = text("currency")?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("currency: {currency:?} is not an ISO 4217 code such as USD"));
    }
    let refund_of = optional("refund_of")?;
    match (kind, &refund_of) {
        (Kind::Refund, None) => return Err("refund_of: a refund names the event it gives back".into()),
        (Kind::Sale | Kind::Usage, Some(_)) => {
            return Err("refund_of: only a refund names another event".into());
        }
        _ => {}
    }
    Ok(BillingEvent {
        id,
        time,
        package,
        version,
        tier: text("tier")?,
        kind,
        gross_micros,
        currency,
        solution: optional("solution")?,
        refund_of,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<BillingEvent>, String> {
        parse_events(text, Path::new("events.json")).map_err(|e| e.to_string())
    }

    #[test]
    fn events_parse_and_round_trip_through_json() {
        let text = r#"[{"id": "s1", "time": "2026-11-01T10:00:00Z", "package": "acme/thermal",
            "tier": "standard", "kind": "sale", "gross": "49.00", "currency": "USD"}]"#;
        let events = parse(text).unwrap();
        assert_eq!(events[0].gross_micros, Micros(49_000_000));
        let again = parse(&serde_json::to_string(&[events[0].to_json()]).unwrap()).unwrap();
        assert_eq!(again, events);
    }

    #[test]
    fn errors_name_the_record_and_the_field() {
        let bad = r#"[{"id": "s1", "time": 1, "package": "acme/thermal", "tier": "t", "kind": "sale", "gross": "1", "currency": "USD"},
                      {"id": "s2", "time": 1, "package": "acme/thermal", "tier": "t", "kind": "sale", "gross": "-3", "currency": "USD"}]"#;
        let err = parse(bad).unwrap_err();
        assert!(err.contains("events.json: record 2 (id \"s2\"): gross"), "{err}");
        assert!(parse("{").unwrap_err().contains("not JSON"));
        let twice = r#"[{"id": "s", "time": 1, "package": "a/b", "tier": "t", "kind": "sale", "gross": "1", "currency": "USD"},
                        {"id": "s", "time": 1, "package": "a/b", "tier": "t", "kind": "sale", "gross": "1", "currency": "USD"}]"#;
        assert!(parse(twice).unwrap_err().contains("same id"));
        let refund = r#"[{"id": "r", "time": 1, "package": "a/b", "tier": "t", "kind": "refund", "gross": "1", "currency": "USD"}]"#;
        assert!(parse(refund).unwrap_err().contains("refund_of"));
        let extra = r#"[{"id": "r", "time": 1, "package": "a/b", "tier": "t", "kind": "sale", "gross": "1", "currency": "USD", "x": 1}]"#;
        assert!(parse(extra).unwrap_err().contains("x: unknown field"));
    }
}
