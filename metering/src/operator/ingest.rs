//! Ingest of hourly reports (metering.md §6.1–§6.2) and compaction of old ones (§6.6).

use super::*;

/// What happened to one report of a batch.
#[derive(Debug)]
pub enum Outcome {
    /// Verified and stored.
    Stored,
    /// The very report was stored before: nothing changed.
    Duplicate,
    /// A different report for a license-hour (or chain position) already held: both are
    /// kept as evidence, the license is flagged, this one is not counted.
    Equivocation,
    /// Refused.
    Refused(Error),
}

/// One report's result.
#[derive(Debug)]
pub struct Ingested {
    /// Position in the batch.
    pub index: usize,
    /// License id (hex), when the report could be read that far.
    pub license_id: Option<String>,
    /// Its seq.
    pub seq: Option<u64>,
    /// Its hour.
    pub hour: Option<UnixSeconds>,
    /// What happened.
    pub outcome: Outcome,
}

/// Reports an ingest verifies together: the range proofs of a chunk share batches, and a
/// chunk's store rules run while the next chunk is verified.
pub(super) const INGEST_CHUNK: usize = 128;

/// A report file read but not verified. The unverified license id and seq only order the
/// batch; nothing is refused here but the file's own shape, so the checks keep their
/// order (metering.md §6.1).
pub(super) struct Parsed {
    file: ReportFile,
    cert_id: [u8; 32],
    envelope: Result<Envelope, escx::Error>,
    /// The envelope's payload decoded unverified (`None` when it does not decode; the
    /// error is raised again in its place in the check order).
    payload: Option<ReportPayload>,
}

impl Parsed {
    fn read(bytes: &[u8]) -> Result<Self, Error> {
        let file = ReportFile::from_cbor(bytes)?;
        let cert_id = certificate_id(&file.certificate);
        let envelope = Envelope::from_cbor(&file.report);
        let payload = envelope
            .as_ref()
            .ok()
            .and_then(|e| crate::decode::<ReportPayload>(e.payload_unverified(), "meter report").ok());
        Ok(Self { file, cert_id, envelope, payload })
    }

    /// The order of the chain rules: license, then seq (as claimed; checked later).
    fn order(&self) -> (&[u8], u64) {
        self.payload.as_ref().map_or((&[][..], 0), |p| (p.license_id.as_slice(), p.seq))
    }
}

pub(super) struct Prepared {
    /// The report's hour and sums proofs, verified in batches with its chunk's.
    ranges: Vec<escx_licensing::rangeproof::Item>,
    info: LicenseInfo,
    certificate: Option<Vec<u8>>,
    hour: UnixSeconds,
    seq: u64,
    previous: [u8; 32],
    envelope: Vec<u8>,
    hash: [u8; 32],
    sums: Vec<SeriesSum>,
}

/// The shortest retention `escx operator compact` accepts: 35 days after a period ends,
/// the longest a report may arrive late (`REPORT_LATE_SECS`), so a customer can still open
/// an hour of a period as long as one of its reports could have been sent.
pub const RETENTION_MIN_SECS: u64 = crate::REPORT_LATE_SECS;

/// What [`Operator::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// (license, period) pairs with reports compacted now.
    pub periods: u64,
    /// Reports compacted now.
    pub reports: u64,
    /// The bytes those reports held.
    pub bytes: u64,
}

/// The store-dependent rules of one report, in the order of metering.md §6.2.
/// The store rules of each verified report, in order, onto `outcomes`; a rule's refusal is
/// the report's outcome, a store error ends the attempt.
pub(super) fn apply_each(
    db: &impl OperatorWriter,
    reports: &[(usize, Prepared)],
    crls: &HashMap<KeyId, CrlPayload>,
    now: UnixSeconds,
    outcomes: &mut Vec<Outcome>,
) -> Result<(), Error> {
    for (_, report) in reports {
        outcomes.push(match apply(db, report, crls, now) {
            Ok(outcome) => outcome,
            Err(error @ Error::Licensing(escx_licensing::Error::Store(_))) => return Err(error),
            Err(error) => Outcome::Refused(error),
        });
    }
    Ok(())
}

pub(super) fn apply(
    db: &impl OperatorWriter,
    report: &Prepared,
    crls: &HashMap<KeyId, CrlPayload>,
    now: UnixSeconds,
) -> Result<Outcome, Error> {
    let info = &report.info;
    let id = &info.license_id;
    if let Some(certificate) = &report.certificate {
        insert_license(db, info, certificate)?;
    }
    // 1. The same report again, or a different one for a held hour or chain position.
    if let Some((_, hash, envelope)) = db.held_report(id, report.hour.0, report.seq)? {
        if hash == report.hash {
            return Ok(Outcome::Duplicate);
        }
        // A compacted report (§6.6) kept only its hash: there is no first message to keep
        // as evidence, and the hour is long past the late window.
        if envelope.is_empty() {
            return Err(refuse(
                Refusal::TooLate,
                format!(
                    "hour {} of this license was reported and compacted; reports are accepted for {} days after their hour",
                    format_hour(report.hour),
                    crate::REPORT_LATE_SECS / 86_400
                ),
            ));
        }
        keep_evidence(
            db,
            info,
            "report",
            Some(report.hour),
            Some(report.seq),
            &envelope,
            &report.envelope,
            now,
        )?;
        return Ok(Outcome::Equivocation);
    }

    // 2. The license at the hour: its window and the CRL.
    if report.hour + HOUR_SECS <= info.not_before {
        return Err(escx_licensing::Error::LicenseRejected {
            check: LicenseCheck::NotYetValid,
            reason: format!(
                "hour {} ends before the license is valid (from {})",
                format_hour(report.hour),
                escx::timestamp::format_rfc3339(info.not_before)
            ),
        }
        .into());
    }
    if report.hour >= info.not_after {
        return Err(escx_licensing::Error::LicenseRejected {
            check: LicenseCheck::Window,
            reason: format!(
                "hour {} starts after the license expired ({})",
                format_hour(report.hour),
                escx::timestamp::format_rfc3339(info.not_after)
            ),
        }
        .into());
    }
    if let Some(crl) = crls.get(&info.issuer)
        && let Some(entry) = crl.revoked.iter().find(|r| r.license_id.as_slice() == id)
    {
        return Err(escx_licensing::Error::LicenseRejected {
            check: LicenseCheck::Revocation,
            reason: format!(
                "license {} is revoked by CRL {} ({})",
                hex::encode(id),
                crl.number,
                entry.reason
            ),
        }
        .into());
    }
    // 3. Time: after the hour ended, not later than the late limit.
    if report.hour + HOUR_SECS > now {
        return Err(refuse(
            Refusal::TooEarly,
            format!("hour {} has not ended; a report is accepted once it has", format_hour(report.hour)),
        ));
    }
    if now - (report.hour + HOUR_SECS) > REPORT_LATE_SECS {
        return Err(refuse(
            Refusal::TooLate,
            format!(
                "hour {} ended more than {} days ago; reports are accepted for {} days after their hour",
                format_hour(report.hour),
                REPORT_LATE_SECS / 86_400,
                REPORT_LATE_SECS / 86_400
            ),
        ));
    }
    // 4. Terms: the tier's telemetry mode and the package's metrics.
    let terms = license_tier_terms(db, info)?.ok_or_else(|| {
        refuse(
            Refusal::UnknownTerms,
            format!(
                "no terms for {} tier {}; register the package with the operator first",
                info.package, info.tier
            ),
        )
    })?;
    let opened = report.sums.iter().filter(|s| s.total.is_some()).count();
    if terms.share && opened != report.sums.len() {
        return Err(refuse(
            Refusal::TierMismatch,
            format!(
                "tier {} of {} shares telemetry: every series opens its hour total",
                info.tier, info.package
            ),
        ));
    }
    if !terms.share && opened > 0 {
        return Err(refuse(
            Refusal::TierMismatch,
            format!(
                "tier {} of {} keeps telemetry private: a report opens no hour total (refused so the total is not kept)",
                info.tier, info.package
            ),
        ));
    }
    let metrics = db.telemetry_terms(&info.package)?.map(|t| t.metrics).unwrap_or_default();
    if let Some(unit) = report.sums.iter().find(|s| s.unit != UNIT_MINUTES && !metrics.contains(&s.unit)) {
        return Err(refuse(Refusal::Invalid, format!("{} does not meter {:?}", info.package, unit.unit)));
    }
    if let Some(total) = report.sums.iter().filter_map(|s| s.total).find(|t| *t > i64::MAX as u64) {
        return Err(refuse(Refusal::Overflow, format!("an hour total of {total} is above 2^63 - 1")));
    }
    if let Some(minutes) = report
        .sums
        .iter()
        .filter(|s| s.unit == UNIT_MINUTES)
        .filter_map(|s| s.total)
        .find(|t| *t > MINUTES as u64)
    {
        return Err(refuse(
            Refusal::Impossible,
            format!("an hour opens {minutes} minutes of use; an hour holds at most {MINUTES}"),
        ));
    }
    // 5. The chain.
    let (head_seq, head_hash, head_hour) = head(db, id)?;
    if report.seq != head_seq + 1 {
        return Err(refuse(
            Refusal::OutOfOrder,
            if report.seq > head_seq + 1 {
                format!(
                    "report {} of license {} arrived before reports {}..={}; send those first",
                    report.seq,
                    hex::encode(id),
                    head_seq + 1,
                    report.seq - 1
                )
            } else {
                format!(
                    "report {} of license {} is behind the chain head {head_seq}",
                    report.seq,
                    hex::encode(id)
                )
            },
        ));
    }
    if report.previous != head_hash || head_hour.is_some_and(|h| report.hour <= h) {
        return Err(refuse(
            Refusal::OutOfOrder,
            format!(
                "report {} of license {} does not follow report {head_seq} (previous hash or hour order)",
                report.seq,
                hex::encode(id)
            ),
        ));
    }
    // 6. A closed period takes no more reports.
    if db.close(id, &Period::of(report.hour).to_string())?.is_some() {
        return Err(refuse(
            Refusal::PeriodClosed,
            format!("period {} of license {} is closed", Period::of(report.hour), hex::encode(id)),
        ));
    }
    db.store_report(&NewReport {
        license_id: id,
        seq: report.seq,
        hour: report.hour.0,
        hash: &report.hash,
        report: &report.envelope,
        received_at: now.0,
        sums: report.sums.iter().map(|s| (s.unit.as_str(), s.sum.as_slice(), s.total)).collect(),
    })?;
    Ok(Outcome::Stored)
}

impl<S: OperatorStore> Operator<S> {
    pub(super) fn known_license(
        store: &impl OperatorReader,
        cert_id: &[u8; 32],
    ) -> Result<Option<LicenseInfo>, Error> {
        let Some(stored) = store.license_by_cert(cert_id)? else {
            return Ok(None);
        };
        // The holder key is read back from the stored (verified) certificate.
        let envelope = Envelope::from_cbor(&stored.certificate)?;
        let payload: LicensePayload =
            escx_licensing::messages::decode_payload(envelope.payload_unverified(), "license")?;
        Ok(Some(LicenseInfo {
            license_id: stored
                .license_id
                .as_slice()
                .try_into()
                .map_err(|_| Error::stored("a stored license id is not 16 bytes"))?,
            cert_id: *cert_id,
            issuer: escx_licensing::messages::key_id(&stored.issuer)?,
            package: package_name(&stored.package)?,
            tier: stored.tier,
            holder: PublicKey::from_bytes(&payload.holder_key)?,
            not_before: UnixSeconds(stored.not_before),
            not_after: UnixSeconds(stored.not_after),
        }))
    }

    /// Verifies a certificate under a trusted issuer (the `issuer` and `signature` checks).
    pub(super) fn verify_certificate(
        issuers: &HashMap<KeyId, IssuerBundle>,
        certificate: &[u8],
        cert_id: [u8; 32],
    ) -> Result<LicenseInfo, Error> {
        let envelope = Envelope::from_cbor(certificate).map_err(|e| {
            escx_licensing::Error::LicenseRejected { check: LicenseCheck::Signature, reason: e.to_string() }
        })?;
        let issuer =
            issuers.get(&envelope.key_id()).ok_or_else(|| escx_licensing::Error::LicenseRejected {
                check: LicenseCheck::Issuer,
                reason: format!(
                    "signed by {}, which is not an issuer this operator trusts",
                    envelope.key_id()
                ),
            })?;
        let license = verify::open_certificate(certificate, issuer)?;
        LicenseInfo::from_payload(&license, cert_id, issuer.issuer_id())
    }

    /// Everything about one report that needs no store state (metering.md §6.1 steps
    /// 1–5): shape, certificate, holder signature, payload rules, the sums of the
    /// commitments and the openings of a shared hour. Runs in parallel.
    pub(super) fn prepare(
        issuers: &HashMap<KeyId, IssuerBundle>,
        parsed: Parsed,
        known: &HashMap<[u8; 32], LicenseInfo>,
    ) -> Result<Prepared, Error> {
        let Parsed { file, cert_id, envelope, payload } = parsed;
        let (info, certificate) = match known.get(&cert_id) {
            Some(info) => (info.clone(), None),
            None => (
                Self::verify_certificate(issuers, &file.certificate, cert_id)?,
                Some(file.certificate.to_vec()),
            ),
        };
        let envelope = envelope.map_err(|e| refuse(Refusal::Signature, e.to_string()))?;
        envelope.open(CONTEXT_REPORT, &info.holder).map_err(|e| {
            refuse(Refusal::Signature, format!("not signed by the license's holder key: {e}"))
        })?;
        // The payload the signature covers (decoded before, unverified, to order the batch).
        let payload: ReportPayload = match payload {
            Some(payload) => payload,
            None => crate::decode(envelope.payload_unverified(), "meter report")?,
        };
        let (sums, ranges) = crate::check_report_ranges(&payload, 0)?;
        if payload.license_id.as_slice() != info.license_id || payload.package != info.package {
            return Err(refuse(
                Refusal::Invalid,
                "the report names another license or package than its certificate",
            ));
        }
        let mut previous = [0u8; 32];
        previous.copy_from_slice(&payload.previous);
        Ok(Prepared {
            ranges,
            info,
            certificate,
            hour: payload.hour,
            seq: payload.seq,
            previous,
            hash: report_hash(&file.report),
            envelope: file.report.into_vec(),
            sums,
        })
    }

    /// [`Self::prepare`] for a chunk of the batch, then the hour and sums proofs of the
    /// chunk's reports, batch-verified (metering.md §6.1 step 6).
    pub(super) fn verify_chunk(
        issuers: &HashMap<KeyId, IssuerBundle>,
        known: &HashMap<[u8; 32], LicenseInfo>,
        chunk: Vec<(usize, Parsed)>,
    ) -> Vec<(usize, Result<Prepared, Error>)> {
        let mut prepared: Vec<(usize, Result<Prepared, Error>)> =
            chunk.into_par_iter().map(|(index, p)| (index, Self::prepare(issuers, p, known))).collect();
        let mut items = Vec::new();
        for (position, (_, p)) in prepared.iter_mut().enumerate() {
            if let Ok(p) = p {
                for mut item in std::mem::take(&mut p.ranges) {
                    item.id = u32::try_from(position).unwrap_or(u32::MAX);
                    items.push(item);
                }
            }
        }
        for id in escx_licensing::rangeproof::verify_each(items) {
            if let Some((_, slot)) = prepared.get_mut(id as usize) {
                *slot = Err(refuse(
                    Refusal::RangeInvalid,
                    "the report's range proofs do not verify: an hour holds more than 60 minutes of use, or another \
                     unit's hour sum is outside [0, 2^63 - 1]",
                ));
            }
        }
        prepared
    }

    /// Verifies and stores a batch of report files (metering.md §6). The batch is taken in
    /// chunks in the order the chain rules need (license, then seq): a chunk's store rules
    /// and inserts run while the next chunk is verified in parallel, and the batch is
    /// committed in one transaction. Idempotent: a report stored before is a
    /// [`Outcome::Duplicate`] and changes nothing.
    pub fn ingest(&mut self, files: &[Vec<u8>], now: UnixSeconds) -> Result<Vec<Ingested>, Error> {
        self.refresh_issuers()?;
        let refused = |index, error| Ingested {
            index,
            license_id: None,
            seq: None,
            hour: None,
            outcome: Outcome::Refused(error),
        };
        let mut results: Vec<Option<Ingested>> = (0..files.len()).map(|_| None).collect();
        // Each file is decoded once; certificates already verified are looked up once per
        // batch, not re-verified.
        let parsed: Vec<Result<Parsed, Error>> = files.par_iter().map(|bytes| Parsed::read(bytes)).collect();
        let mut queue: Vec<(usize, Parsed)> = Vec::with_capacity(files.len());
        for (index, parsed) in parsed.into_iter().enumerate() {
            match parsed {
                Ok(parsed) => queue.push((index, parsed)),
                Err(error) => results[index] = Some(refused(index, error)),
            }
        }
        queue.sort_by(|(i, a), (j, b)| a.order().cmp(&b.order()).then(i.cmp(j)));
        let cert_ids: BTreeSet<[u8; 32]> = queue.iter().map(|(_, p)| p.cert_id).collect();
        let mut known = HashMap::new();
        for id in cert_ids {
            if let Some(info) = Self::known_license(&self.store, &id)? {
                known.insert(id, info);
            }
        }
        let crls = self.crls()?;
        let mut chunks = Vec::new();
        while !queue.is_empty() {
            let rest = queue.split_off(INGEST_CHUNK.min(queue.len()));
            chunks.push(std::mem::replace(&mut queue, rest));
        }
        let mut chunks = chunks.into_iter();
        let (issuers, known) = (&self.issuers, &known);
        let verify = |chunk| Self::verify_chunk(issuers, known, chunk);

        // Verified reports, in the batch's order, and the refused ones to `results`.
        let mut ready: Vec<(usize, Prepared)> = Vec::new();
        let mut take = |verified: Vec<(usize, Result<Prepared, Error>)>,
                        ready: &mut Vec<(usize, Prepared)>| {
            for (index, result) in verified {
                match result {
                    Ok(p) => ready.push((index, p)),
                    Err(error) => results[index] = Some(refused(index, error)),
                }
            }
        };
        let mut next = chunks.next().map(verify);
        // First attempt: each chunk's rules run while the next chunk is verified.
        let attempt = self.store.begin().and_then(|tx| {
            let mut outcomes = Vec::new();
            let mut failure = None;
            while let Some(verified) = next.take() {
                let start = ready.len();
                take(verified, &mut ready);
                let following = chunks.next();
                let (verified, applied) = std::thread::scope(|scope| {
                    let handle = following.map(|chunk| scope.spawn(move || verify(chunk)));
                    let applied = match failure {
                        None => apply_each(&tx, &ready[start..], &crls, now, &mut outcomes),
                        Some(_) => Ok(()),
                    };
                    let verified =
                        handle.map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
                    (verified, applied)
                });
                next = verified;
                if let Err(error) = applied {
                    failure.get_or_insert(error);
                }
            }
            match failure {
                Some(error) => Err(error),
                None => tx.commit().map(|()| outcomes),
            }
        });
        let outcomes = match attempt {
            Ok(outcomes) => outcomes,
            // A concurrent writer (another node) made PostgreSQL refuse the transaction:
            // the rules run again, on everything verified, until it commits.
            Err(error) if <Error as escx_store::Retryable>::is_busy(&error) => {
                while let Some(verified) = next.take() {
                    take(verified, &mut ready);
                    next = chunks.next().map(verify);
                }
                retrying(|| {
                    let tx = self.store.begin()?;
                    let mut outcomes = Vec::with_capacity(ready.len());
                    apply_each(&tx, &ready, &crls, now, &mut outcomes)?;
                    tx.commit()?;
                    Ok(outcomes)
                })?
            }
            Err(error) => return Err(error),
        };
        for ((index, report), outcome) in ready.into_iter().zip(outcomes) {
            results[index] = Some(Ingested {
                index,
                license_id: Some(hex::encode(report.info.license_id)),
                seq: Some(report.seq),
                hour: Some(report.hour),
                outcome,
            });
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Compacts the reports of every closed period that ended at least `keep_secs` ago
    /// (metering.md §6.6): each report keeps its seq, hour, hash and arrival, and its hour
    /// sums; its bytes (the per-minute commitments, the proofs, the certificate copy) go.
    /// Billing, closes, chains, duplicates and the hour sums are unaffected; openings of a
    /// compacted hour can no longer be checked. Idempotent: a second run compacts nothing.
    pub fn compact(&mut self, keep_secs: u64, now: UnixSeconds) -> Result<Compacted, Error> {
        if keep_secs < RETENTION_MIN_SECS {
            return Err(refuse(
                Refusal::Invalid,
                format!(
                    "reports are kept at least {} days after their period ends (disputes and late openings)",
                    RETENTION_MIN_SECS / 86_400
                ),
            ));
        }
        retrying(|| {
            let tx = self.store.begin()?;
            let mut done = Compacted { periods: 0, reports: 0, bytes: 0 };
            for (license_id, period) in tx.closed_periods()? {
                let period = Period::parse(&period).map_err(|reason| refuse(Refusal::Invalid, reason))?;
                if period.end().0.saturating_add(keep_secs) > now.0 {
                    continue;
                }
                let (reports, bytes) = tx.compact_reports(&license_id, period.start().0, period.end().0)?;
                if reports > 0 {
                    done.periods += 1;
                    done.reports += reports;
                    done.bytes += bytes;
                }
            }
            tx.commit()?;
            Ok(done)
        })
    }
}
