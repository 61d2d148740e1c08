//! Offline verification (spec: licensing.md §5.5, §5.6): a license certificate against
//! its issuer's bundle, a CRL, the certificate's window and package, and a holder's proof
//! of possession with the verifier's log of used challenges. Nothing here needs the
//! network or the issuer; the wallet runs these checks, and so can any verifier.

use crate::LicenseCheck;
use escx::UnixSeconds;
use std::path::{Path, PathBuf};

use escx::envelope::Envelope;
use escx::sig::PublicKey;
use serde::Serialize;

use crate::Error;
use crate::messages::{
    self, CONTEXT_CRL, CONTEXT_LICENSE, CONTEXT_POSSESSION, CrlPayload, IssuerBundle, LicensePayload,
    PossessionPayload,
};
use crate::trust::Trust;

/// One check of a license verification and its outcome (for `--json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name.
    pub name: &'static str,
    /// Passed?
    pub ok: bool,
    /// What was established, or why it failed.
    pub detail: String,
}

/// Verifies a certificate's signature against an issuer bundle and returns its payload.
pub fn open_certificate(bytes: &[u8], issuer: &IssuerBundle) -> Result<LicensePayload, Error> {
    open_certificate_under(bytes, &issuer.signing_key, &issuer.payload.name)
}

/// [`open_certificate`] under the issuer signing key `key` (named `name` in errors).
pub(crate) fn open_certificate_under(
    bytes: &[u8],
    key: &escx::sig::PublicKey,
    name: &str,
) -> Result<LicensePayload, Error> {
    let envelope = Envelope::from_cbor(bytes)
        .map_err(|e| Error::LicenseRejected { check: LicenseCheck::Signature, reason: e.to_string() })?;
    if envelope.key_id() != key.id() {
        return Err(Error::LicenseRejected {
            check: LicenseCheck::Issuer,
            reason: format!("signed by {}, not by issuer {name} ({})", envelope.key_id(), key.id()),
        });
    }
    let payload = envelope
        .open(CONTEXT_LICENSE, key)
        .map_err(|e| Error::LicenseRejected { check: LicenseCheck::Signature, reason: e.to_string() })?;
    // A validly signed payload that breaks §3.4 is message-invalid (§9), never a
    // signature failure: the issuer signed it.
    let license: LicensePayload = messages::decode_payload(payload, "license")?;
    let malformed = |reason: &str| Error::Malformed { what: "license", reason: reason.to_owned() };
    match (license.v, &license.terms) {
        (1, None) => {}
        (2, Some(terms)) => {
            if terms.telemetry != "private" && terms.telemetry != "share" {
                return Err(malformed("terms.telemetry must be \"private\" or \"share\""));
            }
            if let Some(unit) = terms.metrics.iter().find(|m| !crate::messages::is_metric(m)) {
                return Err(malformed(&format!("terms.metrics: {unit:?} is not a unit a package meters")));
            }
        }
        (1 | 2, _) => {
            return Err(malformed("a version-1 license has no terms; a version-2 license has them"));
        }
        _ => return Err(malformed("unsupported license version (v must be 1 or 2)")),
    }
    if license.license_id.len() != 16 {
        return Err(malformed("license_id must be 16 bytes"));
    }
    if license.issuer_key_id.as_slice() != envelope.key_id().0.as_slice() {
        return Err(malformed("issuer_key_id is not the key id that signed the certificate"));
    }
    Ok(license)
}

/// Verifies a CRL's signature under `issuer` (licensing.md §3.5).
pub fn open_crl(bytes: &[u8], issuer: &IssuerBundle) -> Result<CrlPayload, Error> {
    let invalid = |reason: String| Error::LicenseRejected { check: LicenseCheck::CrlSignature, reason };
    let envelope = Envelope::from_cbor(bytes).map_err(|e| invalid(e.to_string()))?;
    if envelope.key_id() != issuer.issuer_id() {
        return Err(invalid(format!(
            "signed by {}, not by issuer {}",
            envelope.key_id(),
            issuer.issuer_id()
        )));
    }
    let payload = envelope.open(CONTEXT_CRL, &issuer.signing_key).map_err(|e| invalid(e.to_string()))?;
    // Every way a CRL can be unusable is crl-invalid (licensing.md §9), a malformed payload
    // under a valid signature included.
    let crl: CrlPayload = messages::decode_payload(payload, "CRL").map_err(|e| invalid(e.to_string()))?;
    if crl.v != 1 {
        return Err(invalid("unsupported CRL version (v must be 1)".into()));
    }
    for (index, entry) in crl.revoked.iter().enumerate() {
        if entry.license_id.len() != 16 {
            return Err(invalid(format!("revoked[{index}].license_id must be 16 bytes")));
        }
        if index > 0 && crl.revoked[index - 1].license_id >= entry.license_id {
            return Err(invalid(format!(
                "revoked[{index}] is not in strictly increasing license_id order (sorted, no duplicates)"
            )));
        }
    }
    Ok(crl)
}

/// The offline checks of licensing.md §5.5 that need no wallet state, in order: the
/// certificate's signature under `issuer`, its validity window at `now`, revocation in
/// `crl` (when one is held), and `package` (and `version`, when given). Clock rollback
/// and possession need the wallet ([`Wallet::verify`](crate::wallet::Wallet::verify)).
pub fn verify_certificate(
    certificate: &[u8],
    issuer: &IssuerBundle,
    crl: Option<&CrlPayload>,
    package: &str,
    version: Option<&semver::Version>,
    now: UnixSeconds,
) -> Result<(LicensePayload, Vec<Check>), Error> {
    verify_certificate_under(certificate, issuer, crl, None, package, version, now)
}

/// [`verify_certificate`], and with `freshness` also the revocation age rule of §5.5
/// step 4 (see [`check_crl_age`]) right after the revocation check.
pub(crate) fn verify_certificate_under(
    certificate: &[u8],
    issuer: &IssuerBundle,
    crl: Option<&CrlPayload>,
    freshness: Option<&Trust>,
    package: &str,
    version: Option<&semver::Version>,
    now: UnixSeconds,
) -> Result<(LicensePayload, Vec<Check>), Error> {
    let mut checks = Vec::new();
    let license = open_certificate(certificate, issuer)?;
    checks.push(Check {
        name: "signature",
        ok: true,
        detail: format!("signed by issuer {} ({})", issuer.payload.name, issuer.issuer_id()),
    });
    check_window(&license, now)?;
    checks.push(Check {
        name: "window",
        ok: true,
        detail: format!("valid until {}", escx::timestamp::format_rfc3339(license.not_after)),
    });
    match crl {
        Some(crl) => {
            if let Some(entry) = crl.revoked.iter().find(|r| r.license_id == license.license_id) {
                return Err(Error::LicenseRejected {
                    check: LicenseCheck::Revocation,
                    reason: format!("revoked by CRL {} ({})", crl.number, entry.reason),
                });
            }
            checks.push(Check {
                name: "revocation",
                ok: true,
                detail: format!("not in CRL number {}", crl.number),
            });
        }
        None => checks.push(Check { name: "revocation", ok: true, detail: "no CRL held yet".into() }),
    }
    if let Some(trust) = freshness {
        checks.push(check_crl_age(&license, crl, trust, now)?);
    }
    check_package(&license, package, version)?;
    checks.push(Check {
        name: "package",
        ok: true,
        detail: format!("{} {} (versions {})", license.package, license.tier, license.versions),
    });
    Ok((license, checks))
}

/// The revocation age rule (licensing.md §5.5 step 4): what the wallet knows of
/// revocations is as fresh as the newest time the issuer signed that it holds, the held
/// CRL's `issued_at` or the license's own `not_before` (an issuer does not issue a revoked
/// license). Up to `crl_max_age` after that time the check passes; up to `crl_grace` more
/// it passes with a warning in its detail; after that it fails with `crl-too-old`. A
/// customer who deletes the held CRL only moves that time back to `not_before`.
pub fn check_crl_age(
    license: &LicensePayload,
    crl: Option<&CrlPayload>,
    trust: &Trust,
    now: UnixSeconds,
) -> Result<Check, Error> {
    let (known, source) = match crl {
        Some(crl) if crl.issued_at >= license.not_before => (crl.issued_at, format!("CRL {}", crl.number)),
        _ => (license.not_before, "the license's issue".to_owned()),
    };
    let age = now.0.saturating_sub(known.0);
    let warn_after = known.0.saturating_add(trust.crl_max_age());
    let fail_after = warn_after.saturating_add(trust.crl_grace());
    let when = escx::timestamp::format_rfc3339;
    if now.0 > fail_after {
        return Err(Error::LicenseRejected {
            check: LicenseCheck::CrlAge,
            reason: format!(
                "revocations are known only as of {source} at {} ({} days ago); checks need a CRL issued \
                 after {}",
                when(known),
                age / 86_400,
                when(UnixSeconds(now.0.saturating_sub(trust.crl_max_age())))
            ),
        });
    }
    let detail = if now.0 > warn_after {
        format!(
            "warning: revocations known only as of {source} at {}; fetch a newer CRL before {}, when checks \
             start to fail",
            when(known),
            when(UnixSeconds(fail_after))
        )
    } else {
        format!("revocations known as of {source} at {}", when(known))
    };
    Ok(Check { name: "crl-age", ok: true, detail })
}

pub(crate) fn check_window(license: &LicensePayload, now: UnixSeconds) -> Result<(), Error> {
    if now < license.not_before {
        return Err(Error::LicenseRejected {
            check: LicenseCheck::NotYetValid,
            reason: format!("valid from {}", escx::timestamp::format_rfc3339(license.not_before)),
        });
    }
    if now >= license.not_after {
        return Err(Error::LicenseRejected {
            check: LicenseCheck::Window,
            reason: format!("expired at {}", escx::timestamp::format_rfc3339(license.not_after)),
        });
    }
    Ok(())
}

pub(crate) fn check_package(
    license: &LicensePayload,
    package: &str,
    version: Option<&semver::Version>,
) -> Result<(), Error> {
    if license.package != package {
        return Err(Error::LicenseRejected {
            check: LicenseCheck::Package,
            reason: format!("the license is for {}, not {package}", license.package),
        });
    }
    if let Some(version) = version {
        let covered = license.versions == "*"
            || semver::VersionReq::parse(&license.versions).is_ok_and(|req| req.matches(version));
        if !covered {
            return Err(Error::LicenseRejected {
                check: LicenseCheck::Package,
                reason: format!(
                    "the license covers {} versions {}, not {version}",
                    license.package, license.versions
                ),
            });
        }
    }
    Ok(())
}

/// Shortest challenge a verifier may send: 128 bits, so that a proof cannot be prepared
/// in advance for a guessed challenge.
pub const CHALLENGE_BYTES_MIN: usize = 16;

/// What a third party checks in a proof of possession (licensing.md §5.6).
pub struct ProofCheck<'a> {
    /// The issuer's bundle (its newest version the verifier holds).
    pub issuer: &'a IssuerBundle,
    /// The newest CRL the verifier holds for that issuer, if any.
    pub crl: Option<&'a CrlPayload>,
    /// The package the license must be for.
    pub package: &'a str,
    /// The installed version it must cover, if known.
    pub version: Option<&'a semver::Version>,
    /// The challenge the verifier sent.
    pub challenge: &'a [u8],
    /// Now.
    pub now: UnixSeconds,
}

/// Checks a proof of possession made by [`Wallet::prove`](crate::wallet::Wallet::prove) (licensing.md §5.6): the
/// certificate's offline checks (signature, window, revocation under `crl`, package),
/// then the holder's signature over exactly `challenge`, which must be at least
/// [`CHALLENGE_BYTES_MIN`] bytes. Whether the challenge is fresh is the verifier's to
/// track ([`ChallengeLog`]).
pub fn check_proof(proof: &[u8], check: &ProofCheck<'_>) -> Result<LicensePayload, Error> {
    if check.challenge.len() < CHALLENGE_BYTES_MIN {
        return Err(Error::LicenseRejected {
            check: LicenseCheck::Possession,
            reason: format!(
                "the challenge is {} bytes; send a fresh random challenge of at least {CHALLENGE_BYTES_MIN} bytes",
                check.challenge.len()
            ),
        });
    }
    let envelope = Envelope::from_cbor(proof)
        .map_err(|e| Error::LicenseRejected { check: LicenseCheck::Possession, reason: e.to_string() })?;
    let unverified: PossessionPayload =
        messages::decode_payload(envelope.payload_unverified(), "possession proof")?;
    let (license, _) = verify_certificate(
        &unverified.certificate,
        check.issuer,
        check.crl,
        check.package,
        check.version,
        check.now,
    )?;
    let holder = PublicKey::from_bytes(&license.holder_key)?;
    let payload: PossessionPayload = messages::decode_payload(
        envelope
            .open(CONTEXT_POSSESSION, &holder)
            .map_err(|e| Error::LicenseRejected { check: LicenseCheck::Possession, reason: e.to_string() })?,
        "possession proof",
    )?;
    if payload.v != 1 {
        return Err(Error::Malformed {
            what: "possession proof",
            reason: format!("version {} (this build reads 1)", payload.v),
        });
    }
    if payload.challenge.as_slice() != check.challenge || payload.certificate != unverified.certificate {
        return Err(Error::LicenseRejected {
            check: LicenseCheck::Possession,
            reason: "the proof answers another challenge".into(),
        });
    }
    Ok(license)
}

/// A verifier's record of the challenges it has accepted proofs for, so a proof replayed
/// for a challenge used before is refused (licensing.md §5.6): one empty file per
/// challenge, named by its hash and created with create-new, so two processes checking
/// the same challenge at once cannot both accept it.
pub struct ChallengeLog {
    dir: PathBuf,
}

/// `derive_key` context naming a used challenge in a [`ChallengeLog`].
pub const CONTEXT_CHALLENGE: &str = "escx v1 possession challenge";

impl ChallengeLog {
    /// A log kept in `dir` (created 0700 if needed).
    pub fn open(dir: &Path) -> Result<Self, Error> {
        escx::fsutil::create_private_dir(dir)?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// Records `challenge` as used; refuses one recorded before.
    pub fn record(&self, challenge: &[u8]) -> Result<(), Error> {
        let name = hex::encode(blake3::derive_key(CONTEXT_CHALLENGE, challenge));
        let path = self.dir.join(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::LicenseRejected {
                check: LicenseCheck::Possession,
                reason: "this challenge was used before: a replayed proof; send a fresh challenge".into(),
            }),
            Err(e) => Err(escx::Error::io(&path, e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 27 (17): what a license's `versions` covers (licensing.md §3.4): `*`, or a
    /// requirement as the semver crate reads it, wider than a dependency's; build metadata
    /// is ignored; text that is no requirement covers nothing.
    #[test]
    fn versions_are_requirements_build_metadata_ignored() {
        let license = |versions: &str| LicensePayload {
            v: 1,
            license_id: serde_bytes::ByteBuf::from(vec![1; 16]),
            package: "acme/thermal".parse().unwrap(),
            versions: versions.into(),
            tier: "standard".into(),
            features: vec![],
            seats: None,
            not_before: escx::UnixSeconds(0),
            not_after: escx::UnixSeconds(1),
            holder_key: serde_bytes::ByteBuf::new(),
            holder_kem_key: serde_bytes::ByteBuf::new(),
            wrapped_keys: vec![],
            issuer_key_id: serde_bytes::ByteBuf::from(vec![0; 16]),
            crl_location: String::new(),
            terms: None,
        };
        let covers = |versions: &str, version: &str| {
            check_package(&license(versions), "acme/thermal", Some(&semver::Version::parse(version).unwrap()))
                .is_ok()
        };
        assert!(covers("*", "9.0.0"));
        assert!(covers(">=1", "1.0.0") && covers(">=1", "7.3.1"), "several majors: wider than a dependency");
        assert!(covers("=1.4.0+b", "1.4.0") && covers("=1.4.0", "1.4.0+other"));
        assert!(!covers("=1.4.0", "1.4.1"));
        assert!(!covers("^1.2", "2.0.0") && covers("^1.2", "1.9.0"));
        assert!(!covers("not a requirement", "1.0.0"));
    }
}
