//! Period closes (metering.md §7.1) and the openings a holder gives in a dispute (§5).

use super::*;

/// A period close the operator accepted.
#[derive(Debug, Clone)]
pub struct Closed {
    /// License id (hex).
    pub license_id: String,
    /// Package.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// Period.
    pub period: String,
    /// Totals per unit.
    pub totals: Vec<(String, u64)>,
    /// Reports in the period.
    pub reports: u64,
    /// True when this very close was accepted before.
    pub again: bool,
}

/// An opening that matched its commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpeningVerdict {
    /// License id (hex).
    pub license_id: String,
    /// Package.
    pub package: PackageName,
    /// Hour.
    pub hour: UnixSeconds,
    /// Minute, if one.
    pub minute: Option<u8>,
    /// Proven values per unit.
    pub values: Vec<(String, u64)>,
}

impl<S: OperatorStore> Operator<S> {
    /// Checks a period close against the stored reports and keeps it (metering.md §7).
    /// The same close again is a no-op; a different close for the same license and
    /// period is refused and kept as evidence.
    pub fn close(&mut self, bytes: &[u8], now: UnixSeconds) -> Result<Closed, Error> {
        // Another node or command may have trusted an issuer since (metering.md §6.4).
        self.refresh_issuers()?;
        let file = CloseFile::from_cbor(bytes)?;
        let cert_id = certificate_id(&file.certificate);
        let (info, certificate) = match Self::known_license(&self.store, &cert_id)? {
            Some(info) => (info, None),
            None => (
                Self::verify_certificate(&self.issuers, &file.certificate, cert_id)?,
                Some(file.certificate.to_vec()),
            ),
        };
        let envelope =
            Envelope::from_cbor(&file.close).map_err(|e| refuse(Refusal::Signature, e.to_string()))?;
        let payload = envelope.open(CONTEXT_CLOSE, &info.holder).map_err(|e| {
            refuse(Refusal::Signature, format!("not signed by the license's holder key: {e}"))
        })?;
        let payload: ClosePayload = crate::decode(payload, "period close")?;
        let invalid = |reason: String| refuse(Refusal::Invalid, reason);
        if payload.v != 1 {
            return Err(invalid(format!("unsupported close version {}", payload.v)));
        }
        if payload.license_id.as_slice() != info.license_id || payload.package != info.package {
            return Err(invalid("the close names another license or package than its certificate".into()));
        }
        let period = Period::parse(&payload.period).map_err(invalid)?;
        if payload.through_hash.len() != 32
            || (payload.through_seq == 0) != payload.through_hash.iter().all(|b| *b == 0)
        {
            return Err(invalid("through_hash is 32 bytes, zero exactly when through_seq is 0".into()));
        }
        for pair in payload.totals.windows(2) {
            if pair[0].unit >= pair[1].unit {
                return Err(invalid("totals are sorted by unit, each unit once".into()));
            }
        }
        let mut totals = Vec::with_capacity(payload.totals.len());
        for total in &payload.totals {
            let blinding = scalar(&total.blinding)
                .ok_or_else(|| invalid(format!("{}: the blinding is not a canonical scalar", total.unit)))?;
            if total.total > i64::MAX as u64 {
                return Err(refuse(
                    Refusal::Overflow,
                    format!("{}: totals above 2^63 - 1 are refused", total.unit),
                ));
            }
            totals.push((total.unit.clone(), total.total, blinding));
        }
        let id = info.license_id;
        let id_hex = hex::encode(id);
        let period_text = period.to_string();
        let closed = |reports: usize, again: bool| Closed {
            license_id: id_hex.clone(),
            package: info.package.clone(),
            tier: info.tier.clone(),
            period: period_text.clone(),
            totals: totals.iter().map(|(u, t, _)| (u.clone(), *t)).collect(),
            reports: reports as u64,
            again,
        };
        retrying(|| {
            let tx = self.store.begin()?;
            if let Some(certificate) = &certificate {
                insert_license(&tx, &info, certificate)?;
            }
            if let Some(held) = tx.close(&id, &period_text)? {
                if held == file.close.as_slice() {
                    return Ok(closed(period_reports(&tx, &id, period)?.len(), true));
                }
                // Close evidence is kept per period: its `hour` is the period's start.
                keep_evidence(&tx, &info, "close", Some(period.start()), None, &held, &file.close, now)?;
                tx.commit()?;
                return Err(refuse(
                    Refusal::CloseConflict,
                    format!(
                        "license {id_hex} closed {period_text} before with other totals; both closes are kept as evidence"
                    ),
                ));
            }
            let (head_seq, _, _) = head(&tx, &id)?;
            if head_seq < payload.through_seq {
                return Err(refuse(
                    Refusal::ReportMissing,
                    format!(
                        "the close covers reports up to {} but reports {}..={} of license {id_hex} have not been ingested; \
                         ingest them first",
                        payload.through_seq,
                        head_seq + 1,
                        payload.through_seq
                    ),
                ));
            }
            if payload.through_seq > 0 {
                let (hash, hour) = tx
                    .report_at_seq(&id, payload.through_seq)?
                    .ok_or_else(|| Error::stored("a report below the chain head is missing"))?;
                if hash != payload.through_hash.as_slice() || UnixSeconds(hour) >= period.end() {
                    return Err(refuse(
                        Refusal::CloseMismatch,
                        format!(
                            "report {} of license {id_hex} is not the one the close names",
                            payload.through_seq
                        ),
                    ));
                }
            }
            // through_seq names the last report before the period's end, not an earlier one.
            if let Some((_, hour)) = tx.report_at_seq(&id, payload.through_seq + 1)?
                && UnixSeconds(hour) < period.end()
            {
                return Err(refuse(
                    Refusal::CloseMismatch,
                    format!(
                        "the close stops at report {} of license {id_hex}, but report {} is of hour {}, before the end of {period_text}",
                        payload.through_seq,
                        payload.through_seq + 1,
                        format_hour(UnixSeconds(hour))
                    ),
                ));
            }
            let reports = period_reports(&tx, &id, period)?;
            if let Some((seq, hour)) = reports.iter().find(|(seq, _)| *seq > payload.through_seq) {
                return Err(refuse(
                    Refusal::CloseMismatch,
                    format!(
                        "report {seq} (hour {}) lies in {period_text} but the close stops at report {}",
                        format_hour(*hour),
                        payload.through_seq
                    ),
                ));
            }
            let mut sums: BTreeMap<String, RistrettoPoint> = BTreeMap::new();
            for (unit, commitment) in tx.hour_sums_between(&id, period.start().0, period.end().0)? {
                let p =
                    point(&commitment).ok_or_else(|| Error::stored("a stored hour sum is not a point"))?;
                *sums.entry(unit).or_default() += p;
            }
            let units: Vec<&String> = sums.keys().collect();
            let claimed: Vec<&String> = totals.iter().map(|(u, _, _)| u).collect();
            if units != claimed {
                return Err(refuse(
                    Refusal::CloseMismatch,
                    format!(
                        "the close totals units [{}] but the period's reports hold [{}]",
                        claimed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                        units.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            // What the hours can hold: at most 60 minutes of use per reported hour. (The
            // commitments bind the total only mod ℓ, so this is checked on the total.)
            let hours = reports.len() as u64;
            if let Some((_, minutes, _)) =
                totals.iter().find(|(unit, total, _)| unit == UNIT_MINUTES && *total > hours * MINUTES as u64)
            {
                return Err(refuse(
                    Refusal::Impossible,
                    format!(
                        "license {id_hex} closes {period_text} with {minutes} minutes of use over {hours} reported \
                         hours; at most {} are possible",
                        hours * MINUTES as u64
                    ),
                ));
            }
            for (unit, total, blinding) in &totals {
                if commit(*total, blinding) != sums[unit] {
                    return Err(refuse(
                        Refusal::CloseMismatch,
                        format!(
                            "{unit}: the total {total} does not open the sum of the {} stored hourly commitments of {period_text}",
                            reports.len()
                        ),
                    ));
                }
            }
            let stored: Vec<(String, u64)> = totals.iter().map(|(u, t, _)| (u.clone(), *t)).collect();
            tx.insert_close(&id, &period_text, &file.close, payload.through_seq, now.0, &stored)?;
            tx.commit()?;
            Ok(closed(reports.len(), false))
        })
    }

    /// Checks an opening against the stored commitment of its hour or minute.
    pub fn check_opening(&self, bytes: &[u8]) -> Result<OpeningVerdict, Error> {
        let opening = OpeningFile::from_cbor(bytes)?;
        let id_hex = hex::encode(&opening.license_id);
        let stored = self.store.report_of_hour(&opening.license_id, opening.hour.0)?.ok_or_else(|| {
            refuse(
                Refusal::NotFound,
                format!("no report of license {id_hex} for hour {} is stored", format_hour(opening.hour)),
            )
        })?;
        if stored.is_empty() {
            return Err(refuse(
                Refusal::NotFound,
                format!(
                    "the report of license {id_hex} for hour {} was compacted after its period's retention; \
                     its openings can no longer be checked (metering.md §6.6)",
                    format_hour(opening.hour)
                ),
            ));
        }
        // Stored reports were verified at ingest.
        let envelope = Envelope::from_cbor(&stored)?;
        let payload: ReportPayload = crate::decode(envelope.payload_unverified(), "meter report")?;
        if payload.package != opening.package {
            return Err(refuse(
                Refusal::OpeningMismatch,
                format!("license {id_hex} is for {}", payload.package),
            ));
        }
        // A single minute of `minutes` says whether that minute was used only if every
        // minute of the report is proven 0 or 1: its per-minute proof is checked now.
        if opening.minute.is_some() && opening.openings.iter().any(|o| o.unit == crate::UNIT_MINUTES) {
            let item = crate::minutes_range_item(&payload, 0)?;
            if escx_licensing::rangeproof::verify(vec![item]).is_err() {
                return Err(refuse(
                    Refusal::RangeInvalid,
                    format!(
                        "the report of license {id_hex} for hour {} carries a per-minute proof that does not verify: \
                         its minutes are not proven 0 or 1, so one minute's opening does not say whether that \
                         minute was used (the holder's meter did not make this report)",
                        format_hour(opening.hour)
                    ),
                ));
            }
        }
        let mut values = Vec::new();
        for unit in &opening.openings {
            let series = payload.series.iter().find(|s| s.unit == unit.unit).ok_or_else(|| {
                refuse(Refusal::OpeningMismatch, format!("the stored report has no {} series", unit.unit))
            })?;
            let blinding =
                scalar(&unit.blinding).ok_or_else(|| refuse(Refusal::Invalid, "blinding not canonical"))?;
            let commitment = match opening.minute {
                Some(m) => point(&series.commitments[usize::from(m) % MINUTES]),
                None => point(
                    &self
                        .store
                        .hour_sum(&opening.license_id, opening.hour.0, &unit.unit)?
                        .ok_or_else(|| Error::stored("the hour sum of a stored report is missing"))?,
                ),
            }
            .ok_or_else(|| Error::stored("a stored commitment is not a point"))?;
            if commit(unit.value, &blinding) != commitment {
                let at = match opening.minute {
                    Some(m) => format!("minute {m} of hour {}", format_hour(opening.hour)),
                    None => format!("hour {}", format_hour(opening.hour)),
                };
                return Err(refuse(
                    Refusal::OpeningMismatch,
                    format!(
                        "{}: {} does not open the commitment of {at} of license {id_hex}",
                        unit.unit, unit.value
                    ),
                ));
            }
            values.push((unit.unit.clone(), unit.value));
        }
        Ok(OpeningVerdict {
            license_id: id_hex,
            package: payload.package,
            hour: opening.hour,
            minute: opening.minute,
            values,
        })
    }
}
