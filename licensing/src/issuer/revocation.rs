//! Revocation and the signed CRL (licensing.md §4.4, §3.5).

use super::*;

impl<S: IssuerStore> Issuer<S> {
    /// Revokes a license.
    pub fn revoke(&self, license_id: &[u8], reason: &str, now: UnixSeconds) -> Result<(), Error> {
        retrying(|| self.revoke_once(license_id, reason, now))
    }

    pub(super) fn revoke_once(&self, license_id: &[u8], reason: &str, now: UnixSeconds) -> Result<(), Error> {
        let mut tx = self.store.begin()?;
        if !tx.license_exists(license_id)? {
            return Err(Error::UnknownLicense { license_id: hex::encode(license_id) });
        }
        tx.insert_revocation(license_id, reason, now)?;
        tx.commit()
    }

    /// Signs a new CRL, numbered one more than the last. The number is taken and advanced
    /// inside one write transaction, so two processes never sign two CRLs with one number.
    pub fn crl(&self, now: UnixSeconds) -> Result<Vec<u8>, Error> {
        retrying(|| self.crl_once(now))
    }

    pub(super) fn crl_once(&self, now: UnixSeconds) -> Result<Vec<u8>, Error> {
        let mut tx = self.store.begin()?;
        let last = meta(&tx, "crl_number")?;
        let number = last
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_add(1))
            .ok_or_else(|| Error::stored(format!("bad crl_number {last:?} in the issuer store")))?;
        let revoked = tx.revocations()?;
        tx.set_meta("crl_number", &number.to_string())?;
        let payload = CrlPayload { v: 1, number, issued_at: now, revoked };
        let crl = Envelope::seal(CONTEXT_CRL, escx::cbor::encode(&payload), &self.signing).to_cbor();
        tx.insert_crl(number, &crl)?;
        tx.commit()?;
        Ok(crl)
    }

    /// The newest CRL [`Self::crl`] signed, byte for byte (what the service serves).
    pub fn latest_crl(&self) -> Result<Option<Vec<u8>>, Error> {
        self.store.latest_crl()
    }

    /// The CRL a service hands out (service.md §2): the newest one, or a new one signed
    /// now when none exists or the newest was issued `refresh` seconds ago or more.
    /// Wallets judge revocation by the age of the newest CRL they hold (licensing.md
    /// §5.5 step 4), so a quiet issuer must still sign fresh lists. Two nodes that refresh
    /// at once sign two CRLs with consecutive numbers, both valid.
    pub fn current_crl(&self, refresh: u64, now: UnixSeconds) -> Result<Vec<u8>, Error> {
        if let Some(bytes) = self.latest_crl()? {
            // The store's own CRL, read back under the issuer's key like any other.
            let unverified =
                |e: escx::Error| Error::stored(format!("the newest stored CRL does not verify: {e}"));
            let envelope = Envelope::from_cbor(&bytes).map_err(unverified)?;
            let payload = envelope.open(CONTEXT_CRL, self.signing_key()).map_err(unverified)?;
            let crl: CrlPayload = crate::messages::decode_payload(payload, "CRL")?;
            if now.0 < crl.issued_at.0.saturating_add(refresh) {
                return Ok(bytes);
            }
        }
        self.crl(now)
    }
}
