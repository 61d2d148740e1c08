//! Money as integer micro-units (spec: manifest.md §3).
//!
//! Amounts are written as decimal strings (`"49.99"`) and held as `u64` micro-units
//! (1 unit = 1 000 000 micros). No floating point is involved anywhere, so `"0.1"` +
//! `"0.2"` is exactly `"0.3"`.

use std::fmt;

/// Micro-units per unit of currency.
pub const MICROS_PER_UNIT: u64 = 1_000_000;
/// Most decimal places an amount may have.
pub const DECIMALS_MAX: usize = 6;
/// Largest amount accepted: 10^12 units (10^18 micros), leaving headroom in `u64` for sums.
pub const AMOUNT_MICROS_MAX: u64 = 1_000_000_000_000 * MICROS_PER_UNIT;

/// An amount of money in micro-units.
///
/// Every amount in the public APIs of this workspace is a `Micros`, so a price cannot be
/// passed where a time or a count is expected. It serializes as the bare integer (CBOR,
/// JSON and SQLite alike), so wire and storage formats are the integers the specs name;
/// its `Display` is the decimal form (`49.99`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Micros(pub u64);

impl Micros {
    /// Zero.
    pub const ZERO: Micros = Micros(0);

    /// Parses `digits[.digits]` with at most six decimals, no sign, no exponent, at most
    /// [`AMOUNT_MICROS_MAX`].
    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits_only(whole) || fraction.is_some_and(|f| !digits_only(f)) {
            return Err(MoneyError::Syntax);
        }
        let fraction = fraction.unwrap_or("");
        if fraction.len() > DECIMALS_MAX {
            return Err(MoneyError::TooManyDecimals { decimals: fraction.len() });
        }
        let whole_units: u64 = whole.parse().map_err(|_| MoneyError::TooLarge)?;
        let fraction_micros: u64 = format!("{fraction:0<6}").parse().map_err(|_| MoneyError::Syntax)?;
        let micros = whole_units
            .checked_mul(MICROS_PER_UNIT)
            .and_then(|m| m.checked_add(fraction_micros))
            .filter(|m| *m <= AMOUNT_MICROS_MAX)
            .ok_or(MoneyError::TooLarge)?;
        Ok(Self(micros))
    }

    /// Checked addition.
    pub fn checked_add(self, other: Micros) -> Option<Micros> {
        self.0.checked_add(other.0).map(Micros)
    }

    /// Checked subtraction.
    pub fn checked_sub(self, other: Micros) -> Option<Micros> {
        self.0.checked_sub(other.0).map(Micros)
    }

    /// The sum of `amounts`, or `None` when it overflows.
    pub fn checked_sum(amounts: impl IntoIterator<Item = Micros>) -> Option<Micros> {
        amounts.into_iter().try_fold(Micros::ZERO, Micros::checked_add)
    }

    /// Checked multiplication by a count.
    pub fn checked_mul(self, count: u64) -> Option<Micros> {
        self.0.checked_mul(count).map(Micros)
    }
}

/// `#[serde(serialize_with)]` for report fields that people read: the amount as a decimal
/// string (`"49.99"`; wire formats keep the integer micro-units).
pub fn serialize_decimal<S: serde::Serializer>(amount: &Micros, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(amount)
}

/// [`serialize_decimal`] for an optional amount (`null` when absent).
pub fn serialize_decimal_opt<S: serde::Serializer>(
    amount: &Option<Micros>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match amount {
        Some(amount) => serializer.collect_str(amount),
        None => serializer.serialize_none(),
    }
}

/// [`serialize_decimal`] for `(party, amount)` pairs: `[["acme", "22.95"], ...]`.
pub fn serialize_decimal_pairs<S: serde::Serializer>(
    pairs: &[(String, Micros)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(pairs.len()))?;
    for (party, amount) in pairs {
        seq.serialize_element(&(party, amount.to_string()))?;
    }
    seq.end()
}

impl From<Micros> for u64 {
    fn from(amount: Micros) -> u64 {
        amount.0
    }
}

/// For sums that must not overflow: a `u128` holds any total of `u64` amounts this
/// workspace forms.
impl From<Micros> for u128 {
    fn from(amount: Micros) -> u128 {
        u128::from(amount.0)
    }
}

impl From<Micros> for i128 {
    fn from(amount: Micros) -> i128 {
        i128::from(amount.0)
    }
}

#[cfg(feature = "rusqlite")]
impl rusqlite::types::ToSql for Micros {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

#[cfg(feature = "rusqlite")]
impl rusqlite::types::FromSql for Micros {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        u64::column_result(value).map(Micros)
    }
}

impl fmt::Display for Micros {
    /// At least two decimals, more only when needed: `49.99`, `0.000001`, `10.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_UNIT;
        let mut fraction = format!("{:06}", self.0 % MICROS_PER_UNIT);
        while fraction.len() > 2 && fraction.ends_with('0') {
            fraction.pop();
        }
        write!(f, "{whole}.{fraction}")
    }
}

/// Why a decimal string is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not `digits[.digits]`.
    #[error(
        "expected a decimal amount such as \"49.99\" (digits, optional '.' and up to 6 decimals, no sign)"
    )]
    Syntax,
    /// More than six decimals.
    #[error("{decimals} decimal places; amounts have at most 6 (micro-units)")]
    TooManyDecimals {
        /// How many were given.
        decimals: usize,
    },
    /// Above the maximum.
    #[error("amount exceeds the maximum of 1000000000000 units")]
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_are_exact() {
        let sum = Micros::parse("0.1").unwrap().checked_add(Micros::parse("0.2").unwrap()).unwrap();
        assert_eq!(sum, Micros::parse("0.3").unwrap());
        assert_eq!(sum.0, 300_000);
        assert_eq!(Micros::parse("1234.56").unwrap().0, 1_234_560_000);
        assert_eq!(Micros::parse("0.000001").unwrap().0, 1);
        assert_eq!(Micros::parse("7").unwrap().to_string(), "7.00");
        assert_eq!(Micros(1).to_string(), "0.000001");
        assert_eq!(Micros(49_990_000).to_string(), "49.99");
    }

    #[test]
    fn amounts_serialize_as_bare_integers_and_sums_are_checked() {
        assert_eq!(serde_json::to_string(&Micros(49_990_000)).unwrap(), "49990000");
        assert_eq!(serde_json::from_str::<Micros>("7").unwrap(), Micros(7));
        assert_eq!(escx::cbor::encode(&Micros(24)), escx::cbor::encode(&24u64));
        assert_eq!(Micros::checked_sum([Micros(1), Micros(2)]), Some(Micros(3)));
        assert_eq!(Micros::checked_sum([Micros(u64::MAX), Micros(1)]), None);
        assert_eq!(Micros(1).checked_sub(Micros(2)), None);
        assert_eq!(Micros(3).checked_mul(4), Some(Micros(12)));
    }

    #[test]
    fn malformed_amounts_are_rejected() {
        assert_eq!(Micros::parse("1.0000001"), Err(MoneyError::TooManyDecimals { decimals: 7 }));
        for bad in ["", ".5", "5.", "-1", "+1", "1e3", "1,00", " 1", "0x10", "1.2.3"] {
            assert_eq!(Micros::parse(bad), Err(MoneyError::Syntax), "{bad:?}");
        }
        assert_eq!(Micros::parse("1000000000001"), Err(MoneyError::TooLarge));
        assert_eq!(Micros::parse("99999999999999999999999"), Err(MoneyError::TooLarge));
    }
}
