//! Timestamps: escx stores Unix seconds ([`crate::UnixSeconds`]) and shows RFC 3339 UTC.

use time::format_description::well_known::Rfc3339;

use crate::UnixSeconds;

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-23T11:08:18Z`).
pub fn format_rfc3339(seconds: UnixSeconds) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{seconds}"))
}

/// Parses an RFC 3339 date-time with offset (`2027-01-01T00:00:00Z`), a bare date
/// (`2027-01-01`, meaning midnight UTC) or `@<unix seconds>`.
pub fn parse(text: &str) -> Result<UnixSeconds, String> {
    if let Some(seconds) = text.strip_prefix('@') {
        return seconds.parse().map_err(|_| format!("{text:?}: expected @<unix seconds>"));
    }
    let parsed = if text.len() == 10 {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, &format).map(|d| d.midnight().assume_utc())
    } else {
        time::OffsetDateTime::parse(text, &Rfc3339)
    };
    let instant = parsed.map_err(|e| {
        format!("{text:?} is not a date (2027-01-01), an RFC 3339 time with offset (2027-01-01T00:00:00Z) or @<unix seconds>: {e}")
    })?;
    u64::try_from(instant.unix_timestamp()).map_err(|_| format!("{text:?} is before 1970"))
}

/// Converts a TOML date-time value (offset date-time or local date) to Unix seconds.
pub fn from_toml(value: &toml::value::Datetime) -> Result<UnixSeconds, String> {
    match (value.date, value.time, value.offset) {
        (Some(_), None, None) | (Some(_), Some(_), Some(_)) => parse(&value.to_string()),
        (Some(_), Some(_), None) => Err(format!("{value} has no offset; add Z for UTC")),
        _ => Err(format!("{value} is not a date")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates_times_and_epoch_seconds() {
        assert_eq!(parse("1970-01-02").unwrap(), 86_400);
        assert_eq!(parse("2001-09-09T01:46:40Z").unwrap(), 1_000_000_000);
        assert_eq!(parse("2001-09-09T03:46:40+02:00").unwrap(), 1_000_000_000);
        assert_eq!(parse("@42").unwrap(), 42);
        assert!(parse("2001-09-09T01:46:40").is_err());
        assert_eq!(format_rfc3339(1_000_000_000), "2001-09-09T01:46:40Z");
    }

    #[test]
    fn toml_local_datetime_needs_an_offset() {
        let value: toml::Value = toml::from_str("a = 2027-01-01T00:00:00").unwrap();
        let toml::Value::Datetime(dt) = &value["a"] else { panic!() };
        assert!(from_toml(dt).unwrap_err().contains("offset"));
        let value: toml::Value = toml::from_str("a = 2027-01-01").unwrap();
        let toml::Value::Datetime(dt) = &value["a"] else { panic!() };
        assert_eq!(from_toml(dt).unwrap(), parse("2027-01-01T00:00:00Z").unwrap());
    }
}
