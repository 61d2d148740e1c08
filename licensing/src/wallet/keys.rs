//! The wallet's side of licensed content: asking the issuer for content keys, keeping them,
//! opening a file's key (licensing.md §8.1).

use super::*;

impl Wallet {
    /// A request for the content key of the `package` file with signed `root` and
    /// `version`, from a license that covers it (licensing.md §8.1): signed by that
    /// license's holder key, for its issuer, which answers with the key wrapped to the
    /// license ([`Self::add_key`]). The license must pass every offline check of
    /// [`Self::verify`] for `version` under its own issuer; the newest such one asks.
    pub fn key_request(
        &self,
        package: &str,
        version: &semver::Version,
        root: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<Vec<u8>, Error> {
        self.observe_clock(now, UnixSeconds::EPOCH)?;
        let mut last = None;
        let mut held = self.licenses_for(package)?;
        held.sort_by_key(|(_, license)| std::cmp::Reverse(license.not_before));
        for (file, license) in held {
            let trust = Trust::issuer(messages::key_id(&license.issuer_key_id)?);
            if let Err(error) = self.check_one(&trust, &file, package, Some(version), now) {
                last = Some(error);
                continue;
            }
            let payload = messages::KeyRequestPayload {
                v: 1,
                certificate: file.certificate.clone(),
                package_root: ByteBuf::from(root.to_vec()),
            };
            return Ok(Envelope::seal(
                messages::CONTEXT_KEY_REQUEST,
                escx::cbor::encode(&payload),
                &file.holder.signing()?,
            )
            .to_cbor());
        }
        Err(last.unwrap_or_else(|| Error::NoLicense { package: package.to_owned() }))
    }

    /// Keeps the content key an issuer answered a key request with (licensing.md §8.1),
    /// after checking that it opens with the holder KEM key of the license it names, as
    /// `keys/<license id>-<root>.cbor` (mode 0600). A key already held is kept as it is.
    /// Returns the license id and the root, hex.
    pub fn add_key(&self, response: &[u8]) -> Result<(String, String), Error> {
        let response = messages::KeyResponse::from_cbor(response)?;
        let id = hex::encode(&response.license_id);
        let (file, _) = self
            .licenses_matching(None)?
            .into_iter()
            .find(|(_, l)| l.license_id == response.license_id)
            .ok_or_else(|| Error::UnknownLicense { license_id: id.clone() })?;
        let root: [u8; 32] = response.wrapped.package_root.as_slice().try_into().map_err(|_| {
            Error::Malformed { what: "key response", reason: "package_root must be 32 bytes".into() }
        })?;
        let key = kem::open_bound(
            &file.holder.kem()?,
            crate::issuer::PURPOSE_WRAPPED_KEY,
            &root,
            &response.wrapped.sealed,
        )?;
        ContentKey::from_bytes(&key)?;
        let dir = self.dir.join("keys");
        escx::fsutil::create_private_dir(&dir)?;
        let path = dir.join(format!("{id}-{}.cbor", hex::encode(root)));
        if !path.exists() {
            write_secret(&path, &escx::cbor::encode(&response.wrapped))?;
        }
        Ok((id, hex::encode(root)))
    }

    /// The wrapped key of `root` for a license: from its certificate, or kept since by
    /// [`Self::add_key`].
    pub(super) fn wrapped_key(
        &self,
        license: &LicensePayload,
        root: &[u8; 32],
    ) -> Result<Option<WrappedKey>, Error> {
        if let Some(wrapped) = license.wrapped_keys.iter().find(|w| w.package_root.as_slice() == root) {
            return Ok(Some(wrapped.clone()));
        }
        let path = self.dir.join("keys").join(format!(
            "{}-{}.cbor",
            hex::encode(&license.license_id),
            hex::encode(root)
        ));
        if !path.exists() {
            return Ok(None);
        }
        let wrapped: WrappedKey = messages::decode(&read(&path)?, "kept content key")?;
        Ok(Some(wrapped))
    }

    /// The content key for the package file with signed `root` (licensed content): taken
    /// only from a license that passes every offline check of [`Self::verify`] (signature,
    /// clock, window, revocation, package and `version`).
    pub fn content_key(
        &self,
        package: &str,
        version: &semver::Version,
        root: &[u8; 32],
        now: UnixSeconds,
    ) -> Result<ContentKey, Error> {
        self.observe_clock(now, UnixSeconds::EPOCH)?;
        let mut last = None;
        for (file, license) in self.licenses_for(package)? {
            let Some(wrapped) = self.wrapped_key(&license, root)? else {
                continue;
            };
            // The wrapped key itself names the issuer: only the issuer the package's
            // content key was sealed to can wrap it (§8.1), so the license's own signer is
            // the one to trust here, under the default revocation age rule.
            let trust = Trust::issuer(messages::key_id(&license.issuer_key_id)?);
            if let Err(error) = self.check_one(&trust, &file, package, Some(version), now) {
                last = Some(error);
                continue;
            }
            let bytes = kem::open_bound(
                &file.holder.kem()?,
                crate::issuer::PURPOSE_WRAPPED_KEY,
                root,
                &wrapped.sealed,
            )?;
            return Ok(ContentKey::from_bytes(&bytes)?);
        }
        Err(last.unwrap_or_else(|| Error::NoContentKey {
            package: package.to_owned(),
            version: version.to_string(),
        }))
    }
}
