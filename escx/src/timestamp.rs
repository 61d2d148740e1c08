//! Timestamps: escx stores Unix seconds ([`UnixSeconds`]) and shows RFC 3339 UTC.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use time::format_description::well_known::Rfc3339;

/// A point in time: whole seconds since the Unix epoch, UTC. Every time in the public APIs
/// of this workspace is one, so a time cannot be passed where an amount or a duration is
/// expected. It serializes as the bare integer (CBOR, JSON and, with the `rusqlite`
/// feature, SQLite), so formats are the integers the specs name; `Display` prints that
/// integer too, and [`UnixSeconds::rfc3339`] the text form.
///
/// Adding or subtracting a duration in seconds saturates at the ends of the `u64` range
/// ("never" and the epoch) instead of wrapping; the difference of two times is the
/// seconds from the earlier to the later, 0 when the later comes first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct UnixSeconds(pub u64);

impl UnixSeconds {
    /// 1970-01-01T00:00:00Z.
    pub const EPOCH: UnixSeconds = UnixSeconds(0);
    /// The last representable second, used for "never".
    pub const MAX: UnixSeconds = UnixSeconds(u64::MAX);

    /// The time as RFC 3339 UTC (`2026-11-23T11:08:18Z`).
    pub fn rfc3339(self) -> String {
        format_rfc3339(self)
    }

    /// The start of the `step`-second interval (counted from the epoch) holding `self`:
    /// `floor(HOUR)` is the start of its hour. A `step` of 0 leaves the time as it is.
    pub fn floor(self, step: u64) -> UnixSeconds {
        UnixSeconds(self.0 - self.0.checked_rem(step).unwrap_or(0))
    }

    /// `self + secs`, or `None` past [`Self::MAX`].
    pub fn checked_add(self, secs: u64) -> Option<UnixSeconds> {
        self.0.checked_add(secs).map(UnixSeconds)
    }

    /// Seconds from `earlier` to `self`, or `None` when `earlier` is later.
    pub fn since(self, earlier: UnixSeconds) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }
}

/// `#[serde(serialize_with)]` for report fields that people read: the time as RFC 3339 text
/// (wire formats keep the integer).
pub fn serialize_rfc3339<S: serde::Serializer>(time: &UnixSeconds, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.rfc3339())
}

/// [`serialize_rfc3339`] for an optional time (`null` when absent).
pub fn serialize_rfc3339_opt<S: serde::Serializer>(
    time: &Option<UnixSeconds>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.serialize_str(&time.rfc3339()),
        None => serializer.serialize_none(),
    }
}

impl fmt::Display for UnixSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Add<u64> for UnixSeconds {
    type Output = UnixSeconds;
    fn add(self, secs: u64) -> UnixSeconds {
        UnixSeconds(self.0.saturating_add(secs))
    }
}

impl AddAssign<u64> for UnixSeconds {
    fn add_assign(&mut self, secs: u64) {
        *self = *self + secs;
    }
}

impl Sub<u64> for UnixSeconds {
    type Output = UnixSeconds;
    fn sub(self, secs: u64) -> UnixSeconds {
        UnixSeconds(self.0.saturating_sub(secs))
    }
}

impl Sub for UnixSeconds {
    type Output = u64;
    fn sub(self, earlier: UnixSeconds) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl From<u64> for UnixSeconds {
    fn from(secs: u64) -> UnixSeconds {
        UnixSeconds(secs)
    }
}

impl From<UnixSeconds> for u64 {
    fn from(time: UnixSeconds) -> u64 {
        time.0
    }
}

#[cfg(feature = "rusqlite")]
impl rusqlite::types::ToSql for UnixSeconds {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

#[cfg(feature = "rusqlite")]
impl rusqlite::types::FromSql for UnixSeconds {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        u64::column_result(value).map(UnixSeconds)
    }
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-23T11:08:18Z`).
pub fn format_rfc3339(seconds: UnixSeconds) -> String {
    i64::try_from(seconds.0)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{seconds}"))
}

/// Parses an RFC 3339 date-time with offset (`2027-01-01T00:00:00Z`), a bare date
/// (`2027-01-01`, meaning midnight UTC) or `@<unix seconds>`.
pub fn parse(text: &str) -> Result<UnixSeconds, String> {
    if let Some(seconds) = text.strip_prefix('@') {
        return seconds.parse().map(UnixSeconds).map_err(|_| format!("{text:?}: expected @<unix seconds>"));
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
    u64::try_from(instant.unix_timestamp()).map(UnixSeconds).map_err(|_| format!("{text:?} is before 1970"))
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
        assert_eq!(parse("1970-01-02").unwrap(), UnixSeconds(86_400));
        assert_eq!(parse("2001-09-09T01:46:40Z").unwrap(), UnixSeconds(1_000_000_000));
        assert_eq!(parse("2001-09-09T03:46:40+02:00").unwrap(), UnixSeconds(1_000_000_000));
        assert_eq!(parse("@42").unwrap(), UnixSeconds(42));
        assert!(parse("2001-09-09T01:46:40").is_err());
        assert_eq!(UnixSeconds(1_000_000_000).rfc3339(), "2001-09-09T01:46:40Z");
    }

    #[test]
    fn times_saturate_and_serialize_as_integers() {
        assert_eq!(UnixSeconds(5) - 10, UnixSeconds::EPOCH);
        assert_eq!(UnixSeconds::MAX + 1, UnixSeconds::MAX);
        assert_eq!(UnixSeconds(10) - UnixSeconds(4), 6);
        assert_eq!(UnixSeconds(4) - UnixSeconds(10), 0);
        assert_eq!(UnixSeconds(4).since(UnixSeconds(10)), None);
        assert_eq!(serde_json::to_string(&UnixSeconds(7)).unwrap(), "7");
        assert_eq!(crate::cbor::encode(&UnixSeconds(1_000_000)), crate::cbor::encode(&1_000_000u64));
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
