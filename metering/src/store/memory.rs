//! The operator store in memory: tests, and the reference the SQL store is compared with.

use super::*;

/// A license row in memory: what [`StoredLicense`] holds, the chain head and the flag.
#[derive(Debug, Clone)]
struct License {
    row: StoredLicense,
    head: Head,
    flagged: bool,
}

#[derive(Debug, Clone, Default)]
struct State {
    id: String,
    issuers: BTreeMap<Vec<u8>, Vec<u8>>,
    crls: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    owners: BTreeSet<(String, Vec<u8>)>,
    /// By (package, tier): the version and the terms.
    terms: BTreeMap<(String, String), TierTerms>,
    telemetry: BTreeMap<String, TelemetryTerms>,
    licenses: BTreeMap<Vec<u8>, License>,
    /// (license, seq) → (hour, hash, envelope).
    reports: BTreeMap<(Vec<u8>, u64), ReportRow>,
    /// (license, hour, unit) → (commitment, total).
    hour_sums: BTreeMap<SumKey, (Vec<u8>, Option<u64>)>,
    evidence: Vec<StoredEvidence>,
    evidence_hashes: BTreeSet<Vec<u8>>,
    closes: BTreeMap<(Vec<u8>, String), Vec<u8>>,
    close_totals: BTreeMap<(Vec<u8>, String, String), u64>,
    /// (id, package, window start, window end, epsilon).
    releases: Vec<(i64, String, u64, u64, u64)>,
    /// By package: every terms version, in registration order.
    terms_history: BTreeMap<String, Vec<TermsVersion>>,
    /// By license id: the terms version it is bound to.
    license_terms: BTreeMap<Vec<u8>, String>,
}

fn violation(what: String) -> Error {
    escx_store::Error::failed("(memory)", format!("constraint violated: {what}")).into()
}

/// An operator store that lives in memory only (tests, and the reference the SQL store
/// is compared with).
#[derive(Debug, Default)]
pub struct MemoryOperatorStore {
    state: RefCell<State>,
}

/// A write transaction on a [`MemoryOperatorStore`]: a working copy, which replaces the
/// store's state on commit.
pub struct MemoryOperatorTx<'a> {
    store: &'a RefCell<State>,
    work: RefCell<State>,
}

impl MemoryOperatorStore {
    /// An empty store with a random id.
    pub fn new() -> Result<Self, Error> {
        let mut id = [0u8; 16];
        escx::keyfile::fill_random(&mut id)?;
        Ok(Self { state: RefCell::new(State { id: hex::encode(id), ..State::default() }) })
    }
}

impl OperatorStore for MemoryOperatorStore {
    type Tx<'a> = MemoryOperatorTx<'a>;

    fn begin(&self) -> Result<MemoryOperatorTx<'_>, Error> {
        let work = RefCell::new(self.state.borrow().clone());
        Ok(MemoryOperatorTx { store: &self.state, work })
    }
}

impl OperatorReader for RefCell<State> {
    fn id(&self) -> Result<String, Error> {
        Ok(self.borrow().id.clone())
    }

    fn issuers(&self) -> Result<Vec<KeyedBytes>, Error> {
        Ok(self.borrow().issuers.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn issuer_chain(&self, id: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.borrow().issuers.get(id).cloned())
    }

    fn crl(&self, issuer: &[u8]) -> Result<Option<(u64, Vec<u8>)>, Error> {
        Ok(self.borrow().crls.get(issuer).cloned())
    }

    fn crls(&self) -> Result<Vec<KeyedBytes>, Error> {
        Ok(self.borrow().crls.iter().map(|(k, (_, b))| (k.clone(), b.clone())).collect())
    }

    fn owners(&self, scope: &str) -> Result<Vec<Vec<u8>>, Error> {
        Ok(self.borrow().owners.iter().filter(|(s, _)| s == scope).map(|(_, k)| k.clone()).collect())
    }

    fn tier_terms(&self, package: &str, tier: &str) -> Result<Option<TierTerms>, Error> {
        Ok(self.borrow().terms.get(&(package.to_owned(), tier.to_owned())).cloned())
    }

    fn telemetry_terms(&self, package: &str) -> Result<Option<TelemetryTerms>, Error> {
        Ok(self.borrow().telemetry.get(package).cloned())
    }

    fn license_by_cert(&self, cert_id: &[u8; 32]) -> Result<Option<StoredLicense>, Error> {
        Ok(self.borrow().licenses.values().find(|l| &l.row.cert_id == cert_id).map(|l| l.row.clone()))
    }

    fn head(&self, license_id: &[u8]) -> Result<Option<Head>, Error> {
        Ok(self.borrow().licenses.get(license_id).map(|l| l.head.clone()))
    }

    fn reports_between(&self, license_id: &[u8], start: u64, end: u64) -> Result<Vec<(u64, u64)>, Error> {
        Ok(self
            .borrow()
            .reports
            .iter()
            .filter(|((l, _), (hour, _, _))| l == license_id && (start..end).contains(hour))
            .map(|((_, seq), (hour, _, _))| (*seq, *hour))
            .collect())
    }

    fn report_at_seq(&self, license_id: &[u8], seq: u64) -> Result<Option<(Vec<u8>, u64)>, Error> {
        Ok(self
            .borrow()
            .reports
            .get(&(license_id.to_vec(), seq))
            .map(|(hour, hash, _)| (hash.clone(), *hour)))
    }

    fn report_of_hour(&self, license_id: &[u8], hour: u64) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .borrow()
            .reports
            .iter()
            .find(|((l, _), (h, _, _))| l == license_id && *h == hour)
            .map(|(_, (_, _, report))| report.clone()))
    }

    fn held_report(&self, license_id: &[u8], hour: u64, seq: u64) -> Result<Option<HeldReport>, Error> {
        // The map is ordered by (license, seq): the first match is the lowest seq.
        Ok(self
            .borrow()
            .reports
            .iter()
            .find(|((l, s), (h, _, _))| l == license_id && (*h == hour || *s == seq))
            .map(|((_, s), (_, hash, report))| (*s, hash.clone(), report.clone())))
    }

    fn hour_sums_between(
        &self,
        license_id: &[u8],
        start: u64,
        end: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        Ok(self
            .borrow()
            .hour_sums
            .iter()
            .filter(|((l, hour, _), _)| l == license_id && (start..end).contains(hour))
            .map(|((_, _, unit), (commitment, _))| (unit.clone(), commitment.clone()))
            .collect())
    }

    fn hour_sum(&self, license_id: &[u8], hour: u64, unit: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.borrow().hour_sums.get(&(license_id.to_vec(), hour, unit.to_owned())).map(|(c, _)| c.clone()))
    }

    fn close(&self, license_id: &[u8], period: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.borrow().closes.get(&(license_id.to_vec(), period.to_owned())).cloned())
    }

    fn billing_rows(&self, period: &str) -> Result<Vec<BillingRow>, Error> {
        let state = self.borrow();
        let mut rows = Vec::new();
        for (license_id, _) in state.closes.keys().filter(|(_, p)| p == period) {
            let Some(license) = state.licenses.get(license_id) else { continue };
            let minutes = state
                .close_totals
                .get(&(license_id.clone(), period.to_owned(), UNIT_MINUTES.to_owned()))
                .copied()
                .unwrap_or(0);
            let terms = state
                .terms
                .get(&(license.row.package.clone(), license.row.tier.clone()))
                .map(|t| (t.unit.clone(), t.price_micros.0, t.currency.clone()));
            rows.push(BillingRow {
                license_id: license_id.clone(),
                package: license.row.package.clone(),
                tier: license.row.tier.clone(),
                flagged: license.flagged,
                minutes,
                terms,
                terms_version: state.license_terms.get(license_id).cloned(),
            });
        }
        rows.sort_by(|a, b| a.license_id.cmp(&b.license_id));
        Ok(rows)
    }

    fn shared_totals(
        &self,
        package: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<(String, Vec<u8>, u64)>, Error> {
        let state = self.borrow();
        Ok(state
            .hour_sums
            .iter()
            .filter(|((l, hour, _), _)| {
                (start..end).contains(hour) && state.licenses.get(l).is_some_and(|l| l.row.package == package)
            })
            .filter_map(|((l, _, unit), (_, total))| total.map(|t| (unit.clone(), l.clone(), t)))
            .collect())
    }

    fn epsilon_spent(&self, package: &str, start: u64, end: u64) -> Result<u64, Error> {
        Ok(self
            .borrow()
            .releases
            .iter()
            .filter(|(_, p, s, e, _)| p == package && *s < end && *e > start)
            .map(|r| r.4)
            .sum())
    }

    fn terms_history(&self, package: &str) -> Result<Vec<TermsVersion>, Error> {
        let mut list = self.borrow().terms_history.get(package).cloned().unwrap_or_default();
        list.sort_by(|a, b| a.registered_at.cmp(&b.registered_at).then_with(|| a.version.cmp(&b.version)));
        Ok(list)
    }

    fn license_terms_version(&self, license_id: &[u8]) -> Result<Option<String>, Error> {
        Ok(self.borrow().license_terms.get(license_id).cloned())
    }

    fn evidence(&self) -> Result<Vec<StoredEvidence>, Error> {
        Ok(self.borrow().evidence.clone())
    }

    fn closed_periods(&self) -> Result<Vec<(Vec<u8>, String)>, Error> {
        Ok(self.borrow().closes.keys().cloned().collect())
    }
}

forward_operator_reader!(MemoryOperatorStore, self => self.state);
forward_operator_reader!(MemoryOperatorTx<'_>, self => self.work);

impl OperatorWriter for MemoryOperatorTx<'_> {
    fn put_issuer(&self, id: &[u8], chain: &[u8]) -> Result<(), Error> {
        self.work.borrow_mut().issuers.insert(id.to_vec(), chain.to_vec());
        Ok(())
    }

    fn put_crl(&self, issuer: &[u8], number: u64, bytes: &[u8]) -> Result<(), Error> {
        self.work.borrow_mut().crls.insert(issuer.to_vec(), (number, bytes.to_vec()));
        Ok(())
    }

    fn insert_owner(&self, scope: &str, key_id: &[u8]) -> Result<(), Error> {
        if !self.work.borrow_mut().owners.insert((scope.to_owned(), key_id.to_vec())) {
            return Err(violation(format!("owner of {scope} exists")));
        }
        Ok(())
    }

    fn replace_terms(
        &self,
        package: &str,
        _version: &str,
        tiers: &[TierTerms],
        telemetry: Option<&TelemetryTerms>,
    ) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        state.terms.retain(|(p, _), _| p != package);
        for tier in tiers {
            if state.terms.insert((package.to_owned(), tier.tier.clone()), tier.clone()).is_some() {
                return Err(violation(format!("terms of {package} tier {} exist", tier.tier)));
            }
        }
        state.telemetry.remove(package);
        if let Some(t) = telemetry {
            state.telemetry.insert(package.to_owned(), t.clone());
        }
        Ok(())
    }

    fn insert_license(&self, l: &StoredLicense) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        if state.licenses.contains_key(&l.license_id)
            || state.licenses.values().any(|h| h.row.cert_id == l.cert_id)
        {
            return Ok(());
        }
        let head = Head { seq: 0, hash: vec![0; 32], hour: None };
        state.licenses.insert(l.license_id.clone(), License { row: l.clone(), head, flagged: false });
        Ok(())
    }

    fn keep_evidence(&self, e: &NewEvidence<'_>) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        let held = state
            .evidence
            .iter_mut()
            .find(|r| r.license_id == e.license_id && r.kind == e.kind && r.hour == e.hour && r.seq == e.seq);
        if let Some(row) = held {
            if row.second != e.second {
                row.repeats += 1;
            }
        } else if state.evidence_hashes.insert(e.second_hash.to_vec()) {
            let id = state.evidence.last().map_or(1, |last| last.id + 1);
            state.evidence.push(StoredEvidence {
                id,
                kind: e.kind.to_owned(),
                license_id: e.license_id.to_vec(),
                holder: e.holder.to_vec(),
                hour: e.hour,
                seq: e.seq,
                at: e.at,
                first: e.first.to_vec(),
                second: e.second.to_vec(),
                repeats: 0,
            });
        }
        if let Some(license) = state.licenses.get_mut(e.license_id) {
            license.flagged = true;
        }
        Ok(())
    }

    fn store_report(&self, r: &NewReport<'_>) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        let key = (r.license_id.to_vec(), r.seq);
        let hour_held = state.reports.iter().any(|((l, _), (h, _, _))| l == r.license_id && *h == r.hour);
        if state.reports.contains_key(&key) || hour_held {
            return Err(violation(format!("report {} or its hour exists", r.seq)));
        }
        // The chain head only moves forward, one report at a time (metering.md §6.2).
        match state.licenses.get_mut(r.license_id) {
            Some(license) if license.head.seq + 1 == r.seq => {
                license.head = Head { seq: r.seq, hash: r.hash.to_vec(), hour: Some(r.hour) };
            }
            _ => {
                return Err(violation(format!(
                    "report {} is not the one after its license's chain head",
                    r.seq
                )));
            }
        }
        state.reports.insert(key, (r.hour, r.hash.to_vec(), r.report.to_vec()));
        for (unit, commitment, total) in &r.sums {
            let key = (r.license_id.to_vec(), r.hour, (*unit).to_owned());
            if state.hour_sums.insert(key, (commitment.to_vec(), *total)).is_some() {
                return Err(violation(format!("hour sum of {unit} exists")));
            }
        }
        Ok(())
    }

    fn insert_close(
        &self,
        license_id: &[u8],
        period: &str,
        close: &[u8],
        _through_seq: u64,
        _at: u64,
        totals: &[(String, u64)],
    ) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        if state.closes.insert((license_id.to_vec(), period.to_owned()), close.to_vec()).is_some() {
            return Err(violation(format!("the close of {period} exists")));
        }
        for (unit, total) in totals {
            let key = (license_id.to_vec(), period.to_owned(), unit.clone());
            if state.close_totals.insert(key, *total).is_some() {
                return Err(violation(format!("the close total of {unit} exists")));
            }
        }
        Ok(())
    }

    fn insert_release(
        &self,
        package: &str,
        start: u64,
        end: u64,
        epsilon_micros: u64,
        _clip: u64,
        _at: u64,
        _values: &[(String, u64)],
    ) -> Result<i64, Error> {
        let mut state = self.work.borrow_mut();
        let id = state.releases.last().map_or(1, |last| last.0 + 1);
        state.releases.push((id, package.to_owned(), start, end, epsilon_micros));
        Ok(id)
    }

    fn insert_terms_version(&self, package: &str, v: &TermsVersion) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        let list = state.terms_history.entry(package.to_owned()).or_default();
        if list.iter().any(|held| held.version == v.version) {
            return Err(violation(format!("terms {package} {} exist", v.version)));
        }
        list.push(v.clone());
        Ok(())
    }

    fn bind_license_terms(&self, license_id: &[u8], version: &str) -> Result<(), Error> {
        let mut state = self.work.borrow_mut();
        if state.licenses.contains_key(license_id) {
            state.license_terms.insert(license_id.to_vec(), version.to_owned());
        }
        Ok(())
    }

    fn compact_reports(&self, license_id: &[u8], start: u64, end: u64) -> Result<(u64, u64), Error> {
        let mut state = self.work.borrow_mut();
        let (mut count, mut bytes) = (0, 0);
        for ((license, _), (hour, _, report)) in state.reports.iter_mut() {
            if license == license_id && (start..end).contains(hour) && !report.is_empty() {
                count += 1;
                bytes += report.len() as u64;
                report.clear();
            }
        }
        Ok((count, bytes))
    }

    fn commit(self) -> Result<(), Error> {
        *self.store.borrow_mut() = self.work.into_inner();
        Ok(())
    }
}
