//! Selling and redeeming: blinded token requests, redemptions into sealed licenses, content
//! keys for licensed files (licensing.md §4.2, §4.3, §8.1).

use super::*;

impl<S: IssuerStore> Issuer<S> {
    pub(super) fn offer(&self, package: &PackageName, tier: &str) -> Result<Offer, Error> {
        self.store
            .offer(package, tier)?
            .ok_or_else(|| Error::NotForSale { package: package.to_string(), tier: tier.into() })
    }

    pub(super) fn epoch_key(&self, epoch: u32) -> Result<(IssuerKey, UnixSeconds, UnixSeconds), Error> {
        let published = self.store.epoch(epoch)?.ok_or(Error::UnknownEpoch { epoch })?;
        let key = self.poprf.key(epoch)?;
        // The bundle's key is what customers check evaluations against: a different key
        // would answer with proofs that fail on their side.
        if key.public_key()[..] != published.poprf_key[..] {
            return Err(epoch_key_mismatch(&self.dir, epoch));
        }
        Ok((key, published.not_before, published.not_after))
    }

    /// Evaluates a purchase and records the sale (licensing.md §4.2). The issuer learns who
    /// paid (from its payment system) and for what; it never sees the token inputs.
    ///
    /// Idempotent: a request answered before (a retry after a lost response) gets the
    /// stored answer back and records no second sale; concurrent retries record one.
    pub fn issue(&self, request: &TokenRequest, now: UnixSeconds) -> Result<TokenResponse, Error> {
        self.issue_for(request, None, now)
    }

    /// [`Self::issue`] for a purchase made by `account` (service.md §3), which is recorded
    /// with the sale. A retry gets the stored answer whoever sends it: the request id,
    /// not the account, names the purchase.
    pub fn issue_for(
        &self,
        request: &TokenRequest,
        account: Option<&str>,
        now: UnixSeconds,
    ) -> Result<TokenResponse, Error> {
        retrying(|| self.issue_for_once(request, account, now))
    }

    pub(super) fn issue_for_once(
        &self,
        request: &TokenRequest,
        account: Option<&str>,
        now: UnixSeconds,
    ) -> Result<TokenResponse, Error> {
        let request_id = blake3::derive_key(CONTEXT_REQUEST_ID, &request.to_cbor());
        if let Some(stored) = issued_in(&self.store, &request_id)? {
            return Ok(stored);
        }
        let offer = self.offer(&request.package, &request.tier)?;
        let (key, not_before, not_after) = self.epoch_key(request.epoch)?;
        if now < not_before || now >= not_after {
            return Err(Error::UnknownEpoch { epoch: request.epoch });
        }
        let evaluated = key.evaluate_batch(&request.elements()?, &request.info())?;
        let count = u32::try_from(request.blinded.len())
            .map_err(|_| Error::BatchSize { count: request.blinded.len(), max: crate::poprf::BATCH_MAX })?;
        // A metered tier (`unit = "hour"`) is billed on use from the meter's period
        // closes (metering.md §7.2): its licenses cost nothing at purchase.
        let unit_price = if offer.unit == "hour" { Micros::ZERO } else { offer.price_micros };
        let total = unit_price.checked_mul(u64::from(count)).ok_or_else(|| Error::Pricing {
            package: request.package.to_string(),
            reason: "the sale total overflows".into(),
        })?;
        let response = TokenResponse {
            v: 1,
            package: request.package.clone(),
            tier: request.tier.clone(),
            epoch: request.epoch,
            evaluated: evaluated.elements.iter().map(|e| ByteBuf::from(e.to_vec())).collect(),
            proof: ByteBuf::from(evaluated.proof.to_vec()),
        };
        let mut tx = self.store.begin()?;
        // A concurrent retry may have committed while we evaluated.
        if let Some(stored) = issued_in(&tx, &request_id)? {
            return Ok(stored);
        }
        let sale_id = tx.insert_sale(&Sale {
            id: 0,
            package: request.package.clone(),
            tier: request.tier.clone(),
            epoch: request.epoch,
            count,
            unit_price_micros: unit_price,
            total_micros: total,
            currency: offer.currency.clone(),
            at: now,
        })?;
        tx.insert_issued(&request_id, sale_id, &response.to_cbor())?;
        if let Some(account) = account {
            tx.insert_sale_account(sale_id, account)?;
        }
        tx.commit()?;
        Ok(response)
    }

    /// Redeems a sealed request into a certificate sealed to the holder (licensing.md §4.3).
    /// The token is checked against the POPRF and atomically added to the spent set: of any
    /// number of concurrent redemptions of one token, exactly one succeeds.
    ///
    /// Idempotent: the same request again (a retry after a lost response, sealed anew or
    /// not) gets the stored sealed answer back and spends nothing more; any other request
    /// with a spent token is `token-spent`.
    pub fn redeem(&self, sealed: &SealedRedeemRequest, now: UnixSeconds) -> Result<SealedLicense, Error> {
        retrying(|| self.redeem_once(sealed, now))
    }

    pub(super) fn redeem_once(
        &self,
        sealed: &SealedRedeemRequest,
        now: UnixSeconds,
    ) -> Result<SealedLicense, Error> {
        let request = self.open_redeem_request(sealed)?;
        let info = request.info();
        let token_id = token_id(&info, &request.input);
        let redemption_id = blake3::derive_key(CONTEXT_REDEMPTION_ID, &escx::cbor::encode(&request));
        if let Some(answer) = self.redeemed(&token_id, &redemption_id)? {
            return Ok(SealedLicense::from_bytes(answer));
        }
        let (key, _, not_after) = self.epoch_key(request.epoch)?;
        if now >= not_after + EPOCH_GRACE_SECS {
            return Err(Error::UnknownEpoch { epoch: request.epoch });
        }
        let expected = key.evaluate(&request.input, &info)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &request.output[..])) {
            return Err(Error::TokenInvalid);
        }
        let offer = self.offer(&request.package, &request.tier)?;
        let holder = PublicKey::from_bytes(&request.holder_key)?;
        let holder_kem = KemPublicKey::from_bytes(&request.holder_kem_key)?;

        let mut license_id = [0u8; 16];
        escx::keyfile::fill_random(&mut license_id)?;
        let wrapped_keys = self.wrap_content_keys(&request.package, &holder_kem)?;
        let payload = LicensePayload {
            v: if offer.terms.is_some() { 2 } else { 1 },
            license_id: ByteBuf::from(license_id.to_vec()),
            package: request.package.clone(),
            versions: "*".into(),
            tier: request.tier.clone(),
            features: offer.features.clone(),
            seats: offer.seats,
            not_before: now,
            not_after: now + lifetime_secs(&offer.unit),
            holder_key: ByteBuf::from(holder.as_bytes().to_vec()),
            holder_kem_key: ByteBuf::from(holder_kem.as_bytes().to_vec()),
            wrapped_keys,
            issuer_key_id: ByteBuf::from(self.signing.id().0.to_vec()),
            crl_location: self.dir.join("crl.cbor").display().to_string(),
            terms: offer.terms.clone(),
        };
        let certificate =
            Envelope::seal(CONTEXT_LICENSE, escx::cbor::encode(&payload), &self.signing).to_cbor();
        let response = escx::cbor::encode(&crate::messages::LicenseResponse {
            v: 1,
            certificate: ByteBuf::from(certificate),
        });
        let answer = kem::seal(&holder_kem, PURPOSE_LICENSE, &response)?;

        // Check-and-insert in one transaction: a second spend of the same token changes
        // nothing, whichever process gets there first.
        let mut tx = self.store.begin()?;
        if !tx.spend(&token_id, now, &redemption_id, &answer)? {
            drop(tx);
            return self
                .redeemed(&token_id, &redemption_id)?
                .map(SealedLicense::from_bytes)
                .ok_or(Error::AlreadySpent);
        }
        tx.insert_license(&LicenseRecord {
            license_id,
            package: payload.package.clone(),
            tier: payload.tier.clone(),
            not_before: payload.not_before,
            not_after: payload.not_after,
        })?;
        tx.commit()?;
        Ok(SealedLicense::from_bytes(answer))
    }

    /// The stored answer for a spent token: `Some` when the same request spent it,
    /// `AlreadySpent` when another did, `None` when it is unspent.
    pub(super) fn redeemed(
        &self,
        token_id: &[u8; 32],
        redemption_id: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, Error> {
        match self.store.spent(token_id)? {
            None => Ok(None),
            Some(spent) => match (spent.redemption_id, spent.answer) {
                (Some(by), Some(answer)) if &by == redemption_id => Ok(Some(answer)),
                // Another redemption, or a token spent before answers were kept.
                _ => Err(Error::AlreadySpent),
            },
        }
    }

    /// Opens a sealed redemption request: exactly what the issuer learns from it.
    pub fn open_redeem_request(&self, sealed: &SealedRedeemRequest) -> Result<RedeemRequest, Error> {
        let plain = kem::open(&self.kem, PURPOSE_REDEEM, sealed.as_bytes())?;
        RedeemRequest::from_cbor(&plain)
    }

    /// Every content key registered for `package`, re-sealed to `holder` and bound to the
    /// root of the file it decrypts.
    pub(super) fn wrap_content_keys(
        &self,
        package: &PackageName,
        holder: &KemPublicKey,
    ) -> Result<Vec<WrappedKey>, Error> {
        self.store
            .content_keys(package)?
            .into_iter()
            .map(|key| self.wrap_content_key(package, key, holder))
            .collect()
    }

    /// One stored content key, opened with the issuer's KEM key for its binding and sealed
    /// to `holder` bound to its package root (licensing.md §8.1 step 2).
    pub(super) fn wrap_content_key(
        &self,
        package: &PackageName,
        key: StoredContentKey,
        holder: &KemPublicKey,
    ) -> Result<WrappedKey, Error> {
        let binding =
            ContentBinding { name: package.to_owned(), version: key.version, payload_hash: key.payload_hash };
        let content_key = content::open_sealed(&self.kem, &key.sealed, &binding)?;
        Ok(WrappedKey {
            sealed: ByteBuf::from(kem::seal_bound(
                holder,
                PURPOSE_WRAPPED_KEY,
                &key.root,
                content_key.as_bytes(),
            )?),
            package_root: ByteBuf::from(key.root.to_vec()),
        })
    }

    /// Answers a holder's request for the content key of one package file (licensing.md
    /// §8.1): a license this issuer signed, for the file's package, valid now, not revoked,
    /// whose versions cover the file's version, asking by the holder key it names, gets the
    /// file's key wrapped to its holder KEM key. Nothing is spent or recorded, so a retry
    /// is answered again; the wrapped key opens only with the holder's KEM key.
    pub fn content_key_for(&self, request: &[u8], now: UnixSeconds) -> Result<Vec<u8>, Error> {
        let invalid = |reason: String| Error::KeyRequest { reason };
        let envelope = Envelope::from_cbor(request).map_err(|e| invalid(e.to_string()))?;
        let asked: crate::messages::KeyRequestPayload =
            crate::messages::decode_payload(envelope.payload_unverified(), "key request")?;
        if asked.v != 1 {
            return Err(invalid("v must be 1".into()));
        }
        let root: [u8; 32] = asked
            .package_root
            .as_slice()
            .try_into()
            .map_err(|_| invalid("package_root must be 32 bytes".into()))?;
        let license =
            crate::verify::open_certificate_under(&asked.certificate, self.signing_key(), "this issuer")?;
        let holder = PublicKey::from_bytes(&license.holder_key)?;
        envelope
            .open(crate::messages::CONTEXT_KEY_REQUEST, &holder)
            .map_err(|e| invalid(format!("not signed by the license's holder key: {e}")))?;
        crate::verify::check_window(&license, now)?;
        if let Some(revoked) = self.store.revocations()?.iter().find(|r| r.license_id == license.license_id) {
            return Err(Error::LicenseRejected {
                check: LicenseCheck::Revocation,
                reason: format!("revoked: {}", revoked.reason),
            });
        }
        let stored =
            self.store.content_keys(&license.package)?.into_iter().find(|k| k.root == root).ok_or_else(
                || Error::NoContentKey {
                    package: license.package.to_string(),
                    version: format!("file {}", hex::encode(&root[..8])),
                },
            )?;
        let version = semver::Version::parse(&stored.version)
            .map_err(|e| invalid(format!("stored version {:?}: {e}", stored.version)))?;
        crate::verify::check_package(&license, license.package.as_str(), Some(&version))?;
        let holder_kem = KemPublicKey::from_bytes(&license.holder_kem_key)?;
        let wrapped = self.wrap_content_key(&license.package, stored, &holder_kem)?;
        Ok(escx::cbor::encode(&crate::messages::KeyResponse {
            v: 1,
            license_id: license.license_id,
            wrapped,
        }))
    }
}
