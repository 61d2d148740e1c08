//! Buying: token requests, finalizing the issuer's answer, redeeming tokens into licenses,
//! renewing, installing (licensing.md §5, §8.2).

use super::*;

impl Wallet {
    /// Starts a purchase of `count` tokens (licensing.md §5.1) under the newest bundle of
    /// `chain` the wallet accepts (see [`Self::add_issuer`]).
    pub fn request(
        &self,
        chain: &BundleChain,
        package: &PackageName,
        tier: &str,
        count: usize,
        now: UnixSeconds,
    ) -> Result<TokenRequest, Error> {
        let bundle = self.add_issuer(chain)?;
        self.request_at(&bundle, package, tier, count, now)
    }

    /// Starts a purchase under `bundle`, a version of a chain this wallet holds (for
    /// example the one [`Self::published`] returned): blinds fresh inputs and keeps them
    /// until the issuer answers.
    pub fn request_at(
        &self,
        bundle: &IssuerBundle,
        package: &PackageName,
        tier: &str,
        count: usize,
        now: UnixSeconds,
    ) -> Result<TokenRequest, Error> {
        let held = self.chain(bundle.issuer_id())?;
        if held.version(bundle.version()).is_none_or(|b| b.hash != bundle.hash) {
            return Err(Error::BundleFork { issuer: bundle.issuer_id(), version: bundle.version() });
        }
        let epoch = bundle
            .epoch_at(now)
            .ok_or_else(|| Error::NoEpoch { issuer: bundle.payload.name.clone(), version: bundle.version() })?
            .epoch;
        let blinded = Blinded::new(count)?;
        let request = TokenRequest {
            v: 1,
            package: package.clone(),
            tier: tier.to_owned(),
            epoch,
            blinded: blinded.elements.iter().map(|e| ByteBuf::from(e.to_vec())).collect(),
        };
        let parts = blinded.to_parts();
        let pending = PendingFile {
            v: 1,
            issuer: ByteBuf::from(bundle.issuer_id().0.to_vec()),
            package: package.clone(),
            tier: tier.to_owned(),
            epoch,
            inputs: parts.iter().map(|(input, _)| ByteBuf::from(input.to_vec())).collect(),
            clients: parts.iter().map(|(_, client)| ByteBuf::from(client.to_vec())).collect(),
        };
        let request_bytes = request.to_cbor();
        let path = self.dir.join("pending").join(format!("{}.cbor", short_id(&request_bytes)));
        write_secret(&path, &escx::cbor::encode(&pending))?;
        Ok(request)
    }

    /// Forgets a purchase the issuer definitely refused (nothing was sold): its pending
    /// inputs and blinds are removed. A purchase whose answer was lost must not be
    /// abandoned: the issuer may have sold it, and answers it again.
    pub fn abandon(&self, request: &TokenRequest) -> Result<(), Error> {
        let path = self.dir.join("pending").join(format!("{}.cbor", short_id(&request.to_cbor())));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(escx::Error::io(path, e).into()),
            _ => Ok(()),
        }
    }

    /// Checks the issuer's proof and stores the tokens (licensing.md §5.2). Returns how
    /// many tokens were added.
    pub fn finalize(&self, response: &TokenResponse) -> Result<usize, Error> {
        let mut last_error = None;
        for path in files(&self.dir.join("pending"))? {
            let pending: PendingFile = crate::messages::decode(&read(&path)?, "pending purchase")?;
            if pending.package != response.package
                || pending.tier != response.tier
                || pending.epoch != response.epoch
                || pending.inputs.len() != response.evaluated.len()
            {
                continue;
            }
            let issuer = self.issuer(messages::key_id(&pending.issuer)?)?;
            let epoch = issuer.epoch(pending.epoch).ok_or(Error::UnknownEpoch { epoch: pending.epoch })?;
            let poprf_key: [u8; ELEMENT_BYTES] = epoch
                .poprf_key
                .as_slice()
                .try_into()
                .map_err(|_| Error::Malformed { what: "issuer bundle", reason: "bad POPRF key".into() })?;
            let parts: Vec<PendingPart> = pending
                .inputs
                .iter()
                .zip(&pending.clients)
                .map(|(input, client)| {
                    let input: [u8; INPUT_BYTES] = input.as_slice().try_into().unwrap_or([0; INPUT_BYTES]);
                    (Zeroizing::new(input), Zeroizing::new(client.to_vec()))
                })
                .collect();
            let blinded = Blinded::from_parts(&parts)?;
            let evaluated = crate::poprf::Evaluated {
                elements: response
                    .evaluated
                    .iter()
                    .map(|e| {
                        e.as_slice().try_into().map_err(|_| Error::Malformed {
                            what: "token response",
                            reason: "bad evaluated element".into(),
                        })
                    })
                    .collect::<Result<_, _>>()?,
                proof: response
                    .proof
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Malformed { what: "token response", reason: "bad proof".into() })?,
            };
            let info = TokenInfo {
                package: pending.package.clone(),
                tier: pending.tier.clone(),
                epoch: pending.epoch,
            };
            match blinded.finalize(&evaluated, &poprf_key, &info) {
                Ok(tokens) => {
                    for token in &tokens {
                        let file = TokenFile {
                            v: 1,
                            issuer: pending.issuer.clone(),
                            package: pending.package.clone(),
                            tier: pending.tier.clone(),
                            epoch: pending.epoch,
                            input: ByteBuf::from(token.input.to_vec()),
                            output: ByteBuf::from(token.output.to_vec()),
                        };
                        let token_path =
                            self.dir.join("tokens").join(format!("{}.cbor", short_id(&token.output)));
                        write_secret(&token_path, &escx::cbor::encode(&file))?;
                    }
                    std::fs::remove_file(&path).map_err(|e| escx::Error::io(&path, e))?;
                    return Ok(tokens.len());
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(Error::NoPendingPurchase))
    }

    /// Unspent tokens per (package, tier).
    pub fn token_counts(&self) -> Result<Vec<(PackageName, String, usize)>, Error> {
        let mut counts: std::collections::BTreeMap<(PackageName, String), usize> = Default::default();
        for path in files(&self.dir.join("tokens"))? {
            let token: TokenFile = crate::messages::decode(&read(&path)?, "token")?;
            *counts.entry((token.package.clone(), token.tier.clone())).or_default() += 1;
        }
        Ok(counts.into_iter().map(|((p, t), n)| (p, t, n)).collect())
    }

    /// Spends one token for `package` into a sealed redemption request with fresh holder
    /// keys (licensing.md §5.3). The token stays in the wallet (under `redeeming/`) until
    /// the license arrives, so a lost response can be retried.
    pub fn redeem(&self, package: &str) -> Result<SealedRedeemRequest, Error> {
        self.redeem_tier(package, None)
    }

    /// [`Self::redeem`] with a token of `tier` when given.
    pub fn redeem_tier(&self, package: &str, tier: Option<&str>) -> Result<SealedRedeemRequest, Error> {
        let (token_path, token) = self.find_token(package, tier)?;
        let issuer = self.issuer(messages::key_id(&token.issuer)?)?;
        let holder = HolderKeys::generate();
        let request = RedeemRequest {
            v: 1,
            package: token.package.clone(),
            tier: token.tier.clone(),
            epoch: token.epoch,
            input: token.input.clone(),
            output: token.output.clone(),
            holder_key: holder.signing_public.clone(),
            holder_kem_key: holder.kem_public.clone(),
        };
        let sealed =
            kem::seal(&issuer.kem_key, PURPOSE_REDEEM, &Zeroizing::new(escx::cbor::encode(&request)))?;
        let holder_id = short_id(&holder.signing_public);
        let record = RedeemingFile { v: 1, issuer: token.issuer.clone(), token, holder };
        write_secret(
            &self.dir.join("redeeming").join(format!("{holder_id}.cbor")),
            &escx::cbor::encode(&record),
        )?;
        std::fs::remove_file(&token_path).map_err(|e| escx::Error::io(&token_path, e))?;
        Ok(SealedRedeemRequest::from_bytes(sealed))
    }

    /// The redemption of `package` this wallet sent and never got an answer to (its token
    /// is in `redeeming/`), sealed anew to the issuer: the issuer answers a request it
    /// answered before with the stored license (licensing.md §4.3), and a request it never
    /// received like any other. `None` when no redemption of the package is unanswered.
    pub fn resend_redemption(&self, package: &str) -> Result<Option<SealedRedeemRequest>, Error> {
        for path in files(&self.dir.join("redeeming"))? {
            let record: RedeemingFile = crate::messages::decode(&read(&path)?, "pending redemption")?;
            if record.token.package.as_str() != package {
                continue;
            }
            let issuer = self.issuer(messages::key_id(&record.issuer)?)?;
            let request = RedeemRequest {
                v: 1,
                package: record.token.package.clone(),
                tier: record.token.tier.clone(),
                epoch: record.token.epoch,
                input: record.token.input.clone(),
                output: record.token.output.clone(),
                holder_key: record.holder.signing_public.clone(),
                holder_kem_key: record.holder.kem_public.clone(),
            };
            let sealed =
                kem::seal(&issuer.kem_key, PURPOSE_REDEEM, &Zeroizing::new(escx::cbor::encode(&request)))?;
            return Ok(Some(SealedRedeemRequest::from_bytes(sealed)));
        }
        Ok(None)
    }

    /// Renewal (licensing.md §8.2): spends the next token for the tier of the newest license
    /// held for `package` into a redemption request, exactly like [`Self::redeem`]: fresh
    /// holder keys, nothing shared with the old license, so the issuer cannot link the two.
    /// Returns the request and the seconds left on the newest license (0 when it ended).
    pub fn renew(&self, package: &str, now: UnixSeconds) -> Result<(SealedRedeemRequest, u64), Error> {
        let newest = self
            .licenses_for(package)?
            .into_iter()
            .map(|(_, license)| license)
            .max_by_key(|license| license.not_after)
            .ok_or_else(|| Error::NoLicense { package: package.to_owned() })?;
        let sealed = self.redeem_tier(package, Some(&newest.tier))?;
        Ok((sealed, newest.not_after - now))
    }

    pub(super) fn find_token(
        &self,
        package: &str,
        tier: Option<&str>,
    ) -> Result<(PathBuf, TokenFile), Error> {
        for path in files(&self.dir.join("tokens"))? {
            let token: TokenFile = escx::cbor::decode_exact(&read(&path)?, "token").map_err(|reason| {
                Error::Malformed { what: "token", reason: format!("{}: {reason}", path.display()) }
            })?;
            if token.package == package && tier.is_none_or(|t| t == token.tier) {
                return Ok((path, token));
            }
        }
        Err(Error::NoToken { package: package.to_owned(), tier: tier.map(str::to_owned) })
    }

    /// Installs the issuer's sealed answer to a redemption (licensing.md §5.4): opens it
    /// with the matching holder key and checks the certificate before keeping it.
    pub fn install(&self, sealed: &SealedLicense) -> Result<LicensePayload, Error> {
        for path in files(&self.dir.join("redeeming"))? {
            let record: RedeemingFile = crate::messages::decode(&read(&path)?, "redemption")?;
            let Ok(plain) = kem::open(&record.holder.kem()?, PURPOSE_LICENSE, sealed.as_bytes()) else {
                continue;
            };
            let response: LicenseResponse = messages::decode_payload(&plain, "license response")?;
            let issuer = self.issuer(messages::key_id(&record.issuer)?)?;
            let license = verify::open_certificate(&response.certificate, &issuer)?;
            if license.holder_key.as_slice() != record.holder.signing_public.as_slice()
                || license.holder_kem_key.as_slice() != record.holder.kem_public.as_slice()
                || license.package != record.token.package
            {
                return Err(Error::LicenseRejected {
                    check: LicenseCheck::Package,
                    reason: "the certificate names other holder keys or another package than the redemption"
                        .into(),
                });
            }
            let file = LicenseFile { v: 1, certificate: response.certificate.clone(), holder: record.holder };
            let id = messages::id_hex(&license.license_id);
            write_secret(&self.dir.join("licenses").join(format!("{id}.cbor")), &escx::cbor::encode(&file))?;
            std::fs::remove_file(&path).map_err(|e| escx::Error::io(&path, e))?;
            return Ok(license);
        }
        Err(Error::NoPendingRedemption)
    }
}
