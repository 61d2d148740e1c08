//! Monthly payout reports (spec: settlement.md §5.1): per party and currency, the gross of
//! the settlements it took part in, what went to others (fees), what it earned, what is
//! withheld by disputes, and what is payable once the carried balance reaches the ledger's
//! payout threshold. Every figure comes from transfers dated in the month, so a month's
//! report never changes once the month is over; each export writes an audit row.

use escx::UnixSeconds;
use std::collections::{BTreeMap, BTreeSet};

use escx_manifest::Micros;
use serde::Serialize;

use crate::Error;
use crate::ledger::Ledger;
use crate::store::{Store, Writer};

/// A calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period {
    /// Year.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u8,
}

impl Period {
    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Option<Self> {
        let (year, month) = text.split_once('-')?;
        // Digits only: `str::parse` would also take a sign (`2026-+1`).
        let digits = |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(year, 4) || !digits(month, 2) {
            return None;
        }
        let year: i32 = year.parse().ok()?;
        let month: u8 = month.parse().ok()?;
        (1970..=9999).contains(&year).then_some(())?;
        (1..=12).contains(&month).then_some(Self { year, month })
    }

    /// The month containing Unix time `at`.
    pub fn of(at: UnixSeconds) -> Self {
        let date =
            time::OffsetDateTime::from_unix_timestamp(i64::try_from(at.0.min(253_402_300_799)).unwrap_or(0))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Self { year: date.year(), month: date.month() as u8 }
    }

    /// `[first second, first second of the next month)`.
    pub fn range(self) -> (UnixSeconds, UnixSeconds) {
        let start = |year: i32, month: u8| {
            UnixSeconds(
                time::Month::try_from(month)
                    .ok()
                    .and_then(|m| time::Date::from_calendar_date(year, m, 1).ok())
                    .map_or(0, |d| u64::try_from(d.midnight().assume_utc().unix_timestamp()).unwrap_or(0)),
            )
        };
        let (next_year, next_month) =
            if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) };
        (start(self.year, self.month), start(next_year, next_month))
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// A signed amount of micro-units printed as an exact decimal (`-12.5`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Signed(pub i64);

impl std::fmt::Display for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 < 0 {
            write!(f, "-")?;
        }
        write!(f, "{}", Micros(self.0.unsigned_abs()))
    }
}

impl Serialize for Signed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One party's payout line for one month and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayoutLine {
    /// The party.
    pub party: String,
    /// Currency.
    pub currency: String,
    /// Settlements in the month that moved money to or from the party.
    pub settlements: u64,
    /// Their gross (refunds and reversals negative).
    pub gross: Signed,
    /// What went to other parties from those settlements.
    pub fees: Signed,
    /// The fees by receiving party.
    pub fees_by: BTreeMap<String, Signed>,
    /// The party's own transfers in the month: `gross - fees`.
    pub earned: Signed,
    /// Held back by disputes opened in the month, less what disputes resolved in the
    /// month release.
    pub withheld: Signed,
    /// `earned - withheld`.
    pub net: Signed,
    /// Balance carried in from earlier months (below the threshold, or negative).
    pub carried_in: Signed,
    /// Paid this month: `carried_in + net` when that reaches the threshold, else 0.
    pub payable: Signed,
    /// Carried to the next month.
    pub carried_out: Signed,
}

/// A payout report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayoutReport {
    /// The ledger id (hex).
    pub ledger: String,
    /// The month.
    pub period: String,
    /// The ledger's payout threshold.
    pub threshold: Signed,
    /// One line per party and currency, by party name.
    pub lines: Vec<PayoutLine>,
}

impl PayoutReport {
    /// The report as CSV: a header and one row per line; amounts are exact decimals.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "period,party,currency,settlements,gross,fees,earned,withheld,net,carried_in,payable,carried_out\n",
        );
        for line in &self.lines {
            out += &format!(
                "{},{},{},{},{},{},{},{},{},{},{},{}\n",
                self.period,
                csv_field(&line.party),
                line.currency,
                line.settlements,
                line.gross,
                line.fees,
                line.earned,
                line.withheld,
                line.net,
                line.carried_in,
                line.payable,
                line.carried_out
            );
        }
        out
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

type Key = (String, String);

impl<S: Store> Ledger<S> {
    /// The payout report for `period`, for every party or only `party`.
    pub fn payout_report(&self, period: Period, party: Option<&str>) -> Result<PayoutReport, Error> {
        let threshold = crate::num::signed(self.payout_threshold()?);
        let (_, end) = period.range();
        // Per settlement up to the end of the period: (time, kind, gross, currency, net per party).
        type Nets = (UnixSeconds, crate::store::RecordKind, i64, String, BTreeMap<String, i64>);
        let mut by_settlement: BTreeMap<String, Nets> = BTreeMap::new();
        for t in self.store.party_transfers(UnixSeconds::EPOCH, end)? {
            let entry = by_settlement
                .entry(t.settlement)
                .or_insert_with(|| (t.at, t.kind, crate::num::signed(t.gross), t.currency, BTreeMap::new()));
            *entry.4.entry(t.party).or_default() += t.amount;
        }

        // Month by month: what each (party, currency) earned; for the period, the detail.
        let mut monthly: BTreeMap<Key, BTreeMap<Period, i64>> = BTreeMap::new();
        let mut lines: BTreeMap<Key, PayoutLine> = BTreeMap::new();
        let new_line = |party: &str, currency: &str| PayoutLine {
            party: party.to_owned(),
            currency: currency.to_owned(),
            settlements: 0,
            gross: Signed(0),
            fees: Signed(0),
            fees_by: BTreeMap::new(),
            earned: Signed(0),
            withheld: Signed(0),
            net: Signed(0),
            carried_in: Signed(0),
            payable: Signed(0),
            carried_out: Signed(0),
        };
        for (at, kind, gross, currency, nets) in by_settlement.values() {
            let month = Period::of(*at);
            let sign = if kind.gives_back() { -1 } else { 1 };
            for (name, net) in nets {
                if *net == 0 {
                    continue;
                }
                *monthly.entry((name.clone(), currency.clone())).or_default().entry(month).or_default() +=
                    net;
                if month != period {
                    continue;
                }
                let line =
                    lines.entry((name.clone(), currency.clone())).or_insert_with(|| new_line(name, currency));
                line.settlements += 1;
                line.gross.0 += sign * gross;
                line.earned.0 += net;
                for (other, amount) in nets.iter().filter(|(other, _)| *other != name) {
                    line.fees.0 += amount;
                    line.fees_by.entry(other.clone()).or_default().0 += amount;
                }
            }
        }

        // Disputes: withheld in the month opened, released in the month resolved.
        let disputes: Vec<(String, UnixSeconds, Option<UnixSeconds>)> = self
            .store
            .disputes()?
            .into_iter()
            .filter(|(d, _)| d.opened_at < end)
            .map(|(d, _)| (d.settlement, d.opened_at, d.resolved_at))
            .collect();
        let mut withheld: BTreeMap<Key, BTreeMap<Period, i64>> = BTreeMap::new();
        for (settlement, opened, resolved) in disputes {
            let Some((_, _, _, currency, nets)) = by_settlement.get(&settlement) else { continue };
            for (name, net) in nets {
                let months = withheld.entry((name.clone(), currency.clone())).or_default();
                *months.entry(Period::of(opened)).or_default() += net;
                if let Some(resolved) = resolved.filter(|t| *t < end) {
                    *months.entry(Period::of(resolved)).or_default() -= net;
                }
            }
        }

        // Carry forward month by month up to the period.
        let keys: BTreeSet<Key> = monthly.keys().chain(withheld.keys()).cloned().collect();
        for key in keys {
            if party.is_some_and(|p| p != key.0) {
                continue;
            }
            let earned = monthly.get(&key);
            let held = withheld.get(&key);
            let months: BTreeSet<Period> = earned
                .into_iter()
                .flat_map(|m| m.keys())
                .chain(held.into_iter().flat_map(|m| m.keys()))
                .copied()
                .filter(|m| *m <= period)
                .collect();
            let mut carried = 0i64;
            let mut line = lines.remove(&key).unwrap_or_else(|| new_line(&key.0, &key.1));
            for month in months.iter().copied().chain(std::iter::once(period)) {
                if month > period {
                    break;
                }
                let month_earned = earned.and_then(|m| m.get(&month)).copied().unwrap_or(0);
                let month_withheld = held.and_then(|m| m.get(&month)).copied().unwrap_or(0);
                let total = carried + month_earned - month_withheld;
                let payable = if total >= threshold.max(1) { total } else { 0 };
                if month == period {
                    line.withheld = Signed(month_withheld);
                    line.net = Signed(month_earned - month_withheld);
                    line.carried_in = Signed(carried);
                    line.payable = Signed(payable);
                    line.carried_out = Signed(total - payable);
                    break;
                }
                carried = total - payable;
            }
            if line.settlements > 0 || line.carried_in.0 != 0 || line.withheld.0 != 0 {
                lines.insert(key, line);
            }
        }
        lines.retain(|key, _| party.is_none_or(|p| p == key.0));
        Ok(PayoutReport {
            ledger: hex::encode(self.ledger_id()?),
            period: period.to_string(),
            threshold: Signed(threshold),
            lines: lines.into_values().collect(),
        })
    }

    /// Records that `report` was exported (`format`, and the BLAKE3 hash of the bytes
    /// handed out) in the audit log.
    pub fn record_payout_export(
        &mut self,
        report: &PayoutReport,
        format: &str,
        bytes: &[u8],
        now: UnixSeconds,
    ) -> Result<(), Error> {
        crate::ledger::retrying(|| self.record_payout_export_once(report, format, bytes, now))
    }

    fn record_payout_export_once(
        &mut self,
        report: &PayoutReport,
        format: &str,
        bytes: &[u8],
        now: UnixSeconds,
    ) -> Result<(), Error> {
        let detail = serde_json::json!({
            "format": format,
            "parties": report.lines.iter().map(|l| &l.party).collect::<BTreeSet<_>>(),
            "lines": report.lines.len(),
            "payable": report.lines.iter().map(|l| (format!("{}/{}", l.party, l.currency), l.payable.to_string())).collect::<BTreeMap<_, _>>(),
            "blake3": blake3::hash(bytes).to_hex().to_string(),
        });
        let mut tx = self.store.begin()?;
        tx.audit(now, "payout-export", &report.period, &detail.to_string())?;
        tx.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_cover_whole_months() {
        let p = Period::parse("2026-11").unwrap();
        assert_eq!(p.to_string(), "2026-11");
        assert_eq!(p.range(), (UnixSeconds(1_793_491_200), UnixSeconds(1_796_083_200)));
        assert_eq!(Period::parse("2026-12").unwrap().range().1, escx::UnixSeconds(1_798_761_600));
        assert_eq!(Period::of(escx::UnixSeconds(1_793_491_200)), p);
        assert_eq!(Period::of(escx::UnixSeconds(1_793_491_199)), Period::parse("2026-10").unwrap());
        for bad in [
            "2026-13", "2026-00", "26-11", "2026-1", "2026/11", "abcd-ef", "", "2026-+1", "+202-11",
            " 2026-11",
        ] {
            assert!(Period::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn signed_amounts_print_as_exact_decimals() {
        assert_eq!(Signed(-12_500_000).to_string(), "-12.50");
        assert_eq!(Signed(1).to_string(), "0.000001");
        assert_eq!(Signed(0).to_string(), "0.00");
        assert_eq!(Signed(i64::MIN).to_string(), "-9223372036854.775808");
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("acme"), "acme");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
