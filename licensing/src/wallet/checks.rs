//! Checking licenses offline: CRLs, the clock, every check of licensing.md §5, possession
//! proofs.

use super::*;

impl Wallet {
    /// Every license installed, newest first, as the wallet read them (not verified:
    /// [`Self::verify`] checks one).
    pub fn licenses(&self) -> Result<Vec<LicensePayload>, Error> {
        let mut all: Vec<LicensePayload> =
            self.licenses_matching(None)?.into_iter().map(|(_, payload)| payload).collect();
        all.sort_by(|a, b| b.not_before.cmp(&a.not_before).then(a.license_id.cmp(&b.license_id)));
        Ok(all)
    }

    pub(super) fn licenses_for(
        &self,
        package: &str,
    ) -> Result<Vec<(Arc<LicenseFile>, LicensePayload)>, Error> {
        self.licenses_matching(Some(package))
    }

    pub(super) fn licenses_matching(
        &self,
        package: Option<&str>,
    ) -> Result<Vec<(Arc<LicenseFile>, LicensePayload)>, Error> {
        let mut out = Vec::new();
        let dir = self.dir.join("licenses");
        let dir_stamp = Stamp::of(&dir)?;
        let cached_listing = lock(&self.listing)
            .as_ref()
            .filter(|(held, _)| Some(held) == dir_stamp.as_ref())
            .map(|(_, l)| l.clone());
        let listing = match cached_listing {
            Some(listing) => listing,
            None => {
                let listing = files(&dir)?;
                if let Some(stamp) = dir_stamp {
                    *lock(&self.listing) = Some((stamp, listing.clone()));
                }
                listing
            }
        };
        for path in listing {
            let Some(stamp) = Stamp::of(&path)? else { continue };
            let mut cache = lock(&self.licenses);
            if let Some(cached) = cache.get(&path).filter(|c| c.stamp == stamp) {
                if package.is_none_or(|p| cached.payload.package == p) {
                    out.push((cached.file.clone(), cached.payload.clone()));
                }
                continue;
            }
            let file: LicenseFile = crate::messages::decode(&read(&path)?, "license")?;
            let envelope = Envelope::from_cbor(&file.certificate)?;
            let payload: LicensePayload =
                match messages::decode_payload(envelope.payload_unverified(), "license") {
                    Ok(payload) => payload,
                    // The signature is checked first (licensing.md §5.5 step 1): an altered
                    // certificate is license-signature; only a validly signed payload that
                    // does not decode is message-invalid.
                    Err(malformed) => {
                        let issuer = self.issuer(envelope.key_id())?;
                        verify::open_certificate(&file.certificate, &issuer)?;
                        return Err(malformed);
                    }
                };
            let file = Arc::new(file);
            cache.insert(
                path,
                CachedLicense { stamp, file: file.clone(), payload: payload.clone(), possession: None },
            );
            if package.is_none_or(|p| payload.package == p) {
                out.push((file, payload));
            }
        }
        Ok(out)
    }

    /// Accepts a CRL if it is signed by its issuer and newer than the one held (`crl`
    /// check): its number must be strictly greater. The very CRL already held is accepted
    /// again as a no-op; another CRL under the same number (an issuer that signed two) is
    /// refused like an older one. Returns the one now in force.
    pub fn accept_crl(&self, bytes: &[u8]) -> Result<CrlPayload, Error> {
        self.take_crl(bytes, false)
    }

    /// [`Wallet::accept_crl`]; with `older_is_held`, a valid CRL older than the one held
    /// is not an error but leaves the held one in force (a CRL shipped with a program
    /// must not lock its users out once a newer one was seen). Another CRL under the held
    /// number is refused either way: its issuer signed two lists under one number.
    pub(super) fn take_crl(&self, bytes: &[u8], older_is_held: bool) -> Result<CrlPayload, Error> {
        let envelope = Envelope::from_cbor(bytes).map_err(|e| Error::LicenseRejected {
            check: LicenseCheck::CrlSignature,
            reason: e.to_string(),
        })?;
        // A CRL from an issuer this wallet does not hold is not a CRL it can use
        // (licensing.md §5.6: any CRL not signed by the issuer is crl-invalid).
        let issuer = self.issuer(envelope.key_id()).map_err(|_| Error::LicenseRejected {
            check: LicenseCheck::CrlSignature,
            reason: format!("signed by {}, which is not an issuer this wallet holds", envelope.key_id()),
        })?;
        let payload = verify::open_crl(bytes, &issuer)?;
        let path = self.dir.join("crl").join(format!("{}.cbor", issuer.issuer_id()));
        if let Some(held) = self.crl(issuer.issuer_id())? {
            if payload.number == held.number && read(&path)?.as_slice() == bytes {
                return Ok(held);
            }
            if older_is_held && payload.number < held.number {
                return Ok(held);
            }
            if payload.number <= held.number {
                return Err(Error::LicenseRejected {
                    check: LicenseCheck::Crl,
                    reason: format!(
                        "CRL number {} is not newer than number {} already accepted",
                        payload.number, held.number
                    ),
                });
            }
        }
        escx::fsutil::write_atomic(&path, bytes, escx::fsutil::MODE_PUBLIC, true)?;
        Ok(payload)
    }

    /// Whether the CRL this wallet holds for the license's issuer lists it (no CRL held,
    /// or another issuer's license: false).
    pub fn is_revoked(&self, license: &LicensePayload) -> Result<bool, Error> {
        let Ok(issuer) = messages::key_id(&license.issuer_key_id) else {
            return Ok(false);
        };
        if self.chain(issuer).is_err() {
            return Ok(false);
        }
        Ok(self
            .crl(issuer)?
            .is_some_and(|crl| crl.revoked.iter().any(|r| r.license_id == license.license_id)))
    }

    pub(super) fn crl(&self, issuer: KeyId) -> Result<Option<CrlPayload>, Error> {
        let path = self.dir.join("crl").join(format!("{issuer}.cbor"));
        let Some(stamp) = Stamp::of(&path)? else { return Ok(None) };
        if let Some((_, crl)) = lock(&self.crls).get(&issuer).filter(|(held, _)| *held == stamp) {
            return Ok(Some(crl.clone()));
        }
        let crl = verify::open_crl(&read(&path)?, &self.issuer(issuer)?)?;
        lock(&self.crls).insert(issuer, (stamp, crl.clone()));
        Ok(Some(crl))
    }

    /// Reads and advances the wallet's clock: refuses a time more than the tolerance
    /// before the latest time seen (`clock` check).
    pub(super) fn observe_clock(&self, now: UnixSeconds, signed: UnixSeconds) -> Result<UnixSeconds, Error> {
        let path = self.dir.join("clock.toml");
        let stamp = Stamp::of(&path)?;
        let cached =
            lock(&self.clock).as_ref().filter(|(held, _)| Some(held) == stamp.as_ref()).map(|(_, t)| *t);
        let latest = match cached {
            Some(latest) => latest,
            None => {
                let latest = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| text.trim().strip_prefix("latest_seen = ").and_then(|n| n.parse().ok()))
                    .map_or(UnixSeconds::EPOCH, UnixSeconds);
                if let Some(stamp) = stamp {
                    *lock(&self.clock) = Some((stamp, latest));
                }
                latest
            }
        };
        if now + CLOCK_TOLERANCE_SECS < latest {
            return Err(Error::LicenseRejected {
                check: LicenseCheck::Clock,
                reason: format!(
                    "the clock reads {} but this wallet has already seen {}; the clock was set back",
                    escx::timestamp::format_rfc3339(now),
                    latest.rfc3339()
                ),
            });
        }
        if now + CLOCK_TOLERANCE_SECS < signed {
            return Err(Error::LicenseRejected {
                check: LicenseCheck::Clock,
                reason: format!(
                    "the clock reads {} but the issuer signed the CRL this wallet holds at {}; the clock was set \
                     back",
                    escx::timestamp::format_rfc3339(now),
                    signed.rfc3339()
                ),
            });
        }
        if now > latest {
            escx::fsutil::write_atomic(
                &path,
                format!("latest_seen = {now}\n").as_bytes(),
                escx::fsutil::MODE_PUBLIC,
                true,
            )?;
        }
        Ok(latest.max(now))
    }

    /// Verifies a license for `package` offline (licensing.md §5.5), accepting only
    /// licenses signed by an issuer `trust` names (what the program embeds; never what
    /// the wallet holds). With several licenses the newest (latest `not_before`, then
    /// smallest id) that passes every check wins; otherwise the error of the last tried. `crl` is accepted first if given.
    pub fn verify(
        &self,
        trust: &Trust,
        package: &str,
        version: Option<&semver::Version>,
        crl: Option<&[u8]>,
        now: UnixSeconds,
    ) -> Result<Verified, Error> {
        if let Some(bytes) = crl {
            self.take_crl(bytes, true)?;
        }
        // Signed times anchor the clock check: a CRL's issued_at is the issuer's clock,
        // which deleting clock.toml does not move back (§5.5 step 2).
        let mut signed = UnixSeconds::EPOCH;
        for issuer in trust.issuers() {
            if self.chain(*issuer).is_ok()
                && let Some(crl) = self.crl(*issuer)?
            {
                signed = signed.max(crl.issued_at);
            }
        }
        self.observe_clock(now, signed)?;
        let mut licenses = self.licenses_for(package)?;
        if licenses.is_empty() {
            return Err(Error::NoLicense { package: package.to_owned() });
        }
        // Newest first, so the verdict does not depend on file names: after a renewal the
        // new license is the one a program verifies (and meters against).
        licenses
            .sort_by(|a, b| b.1.not_before.cmp(&a.1.not_before).then(a.1.license_id.cmp(&b.1.license_id)));
        let mut last = None;
        for (file, _) in &licenses {
            match self.check_one(trust, file, package, version, now) {
                Ok(verified) => return Ok(verified),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| Error::NoLicense { package: package.to_owned() }))
    }

    pub(super) fn check_one(
        &self,
        trust: &Trust,
        file: &Arc<LicenseFile>,
        package: &str,
        version: Option<&semver::Version>,
        now: UnixSeconds,
    ) -> Result<Verified, Error> {
        // The envelope's signer must be an issuer the program trusts (§5.5 step 1), and
        // picks the bundle; the payload's issuer_key_id must then name the same key
        // (checked after the signature).
        let signer = Envelope::from_cbor(&file.certificate)
            .map_err(|e| Error::LicenseRejected { check: LicenseCheck::Signature, reason: e.to_string() })?
            .key_id();
        if !trust.accepts(signer) {
            let accepted = trust.issuers().iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            return Err(Error::LicenseRejected {
                check: LicenseCheck::Issuer,
                reason: format!(
                    "signed by issuer {signer}; this program accepts licenses only from {accepted}"
                ),
            });
        }
        let issuer = self.issuer(signer).map_err(|_| Error::LicenseRejected {
            check: LicenseCheck::Issuer,
            reason: format!("signed by {signer}, whose bundle this wallet does not hold"),
        })?;
        let crl = self.crl(issuer.issuer_id())?;
        let (license, mut checks) = verify::verify_certificate_under(
            &file.certificate,
            &issuer,
            crl.as_ref(),
            Some(trust),
            package,
            version,
            now,
        )?;
        checks.insert(
            0,
            Check {
                name: "issuer",
                ok: true,
                detail: format!("issuer {signer} is one this program accepts"),
            },
        );
        checks.insert(
            2,
            Check {
                name: "clock",
                ok: true,
                detail: "not earlier than the latest time this wallet has seen".into(),
            },
        );
        let proven = lock(&self.licenses)
            .values()
            .find(|cached| Arc::ptr_eq(&cached.file, file))
            .and_then(|cached| cached.possession.clone());
        let detail = match proven {
            Some(detail) => detail,
            None => {
                let holder_key = PublicKey::from_bytes(&license.holder_key)?;
                let holder = file.holder.signing()?;
                let mut challenge = [0u8; 32];
                escx::keyfile::fill_random(&mut challenge)?;
                let proof = Envelope::seal(CONTEXT_POSSESSION, challenge.to_vec(), &holder);
                proof.open(CONTEXT_POSSESSION, &holder_key).map_err(|e| Error::LicenseRejected {
                    check: LicenseCheck::Possession,
                    reason: e.to_string(),
                })?;
                let detail = format!("this wallet holds holder key {}", holder_key.id());
                if let Some(cached) = lock(&self.licenses).values_mut().find(|c| Arc::ptr_eq(&c.file, file)) {
                    cached.possession = Some(detail.clone());
                }
                detail
            }
        };
        checks.push(Check { name: "possession", ok: true, detail });
        Ok(Verified { license, checks })
    }

    /// The licenses for `package` whose validity window overlaps `[from, until)`, newest
    /// `not_before` first: the payload and the certificate bytes. Signatures are not
    /// checked here; whoever relies on a license verifies it ([`Self::verify`]).
    pub fn licenses_during(
        &self,
        package: &str,
        from: UnixSeconds,
        until: UnixSeconds,
    ) -> Result<Vec<(LicensePayload, Vec<u8>)>, Error> {
        let mut found: Vec<(LicensePayload, Vec<u8>)> = self
            .licenses_for(package)?
            .into_iter()
            .filter(|(_, l)| l.not_before < until && from < l.not_after)
            .map(|(file, license)| (license, file.certificate.to_vec()))
            .collect();
        found.sort_by(|a, b| b.0.not_before.cmp(&a.0.not_before).then(a.0.license_id.cmp(&b.0.license_id)));
        Ok(found)
    }

    /// Signs `payload` under `context` with the holder key of the license `license_id`
    /// of `package`; returns the envelope bytes.
    pub fn seal_as_holder(
        &self,
        package: &str,
        license_id: &[u8],
        context: escx::sig::SigningContext,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, Error> {
        let (file, _) = self
            .licenses_for(package)?
            .into_iter()
            .find(|(_, l)| l.license_id.as_slice() == license_id)
            .ok_or_else(|| Error::UnknownLicense { license_id: hex::encode(license_id) })?;
        Ok(Envelope::seal(context, payload, &file.holder.signing()?).to_cbor())
    }

    /// A proof of possession for `package` over a verifier's `challenge` (licensing.md §5.6).
    pub fn prove(&self, package: &str, challenge: &[u8]) -> Result<Vec<u8>, Error> {
        let (file, _) = self
            .licenses_for(package)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoLicense { package: package.to_owned() })?;
        let payload = PossessionPayload {
            v: 1,
            challenge: ByteBuf::from(challenge.to_vec()),
            certificate: file.certificate.clone(),
        };
        Ok(Envelope::seal(CONTEXT_POSSESSION, escx::cbor::encode(&payload), &file.holder.signing()?)
            .to_cbor())
    }
}
