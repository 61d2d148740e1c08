//! The verification algorithm (spec: escx-format.md §8), in the spec's order:
//! structure, signatures, manifest, trust policy, then each selected section.
//!
//! Signatures are checked before any section is hashed, and every section is hashed
//! before any decoder reads it, so an unsigned or altered package costs the verifier at
//! most one pass over the bytes and never reaches zstd or tar with unauthenticated input.

use std::io::{Read, Seek};
use std::path::Path;

use crate::container::{PackageReader, SectionCheck, SectionType};
use crate::content::ContentKey;
use crate::hash::HASH_BYTES;
use crate::header::PackageId;
use crate::policy::{Decision, TrustPolicy};
use crate::progress::{NoProgress, Progress};
use crate::sig::{KeyId, SigningContext};
use crate::{Error, UnixSeconds};

/// Which sections to hash and check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SectionSelection {
    /// Every section (full verification).
    #[default]
    All,
    /// Only these (the manifest is always read: the policy needs the package name).
    Only(Vec<SectionType>),
}

/// Verification settings.
#[derive(Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// Sections to check.
    pub sections: &'a SectionSelection,
    /// Clock for key expiry (default: the system clock).
    pub now: Option<UnixSeconds>,
    /// Receives hashing progress.
    pub progress: &'a dyn Progress,
    /// Decrypts an encrypted payload so its content is checked (and, for extraction,
    /// written); without it an encrypted payload is only hashed.
    pub content_key: Option<&'a ContentKey>,
}

impl Default for VerifyOptions<'_> {
    fn default() -> Self {
        Self { sections: &SectionSelection::All, now: None, progress: &NoProgress, content_key: None }
    }
}

/// How each signature block fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerStatus {
    /// Verified with a key the policy knows, under this name.
    Valid(String),
    /// By a key the policy does not know; not checked.
    Unknown,
}

/// One signature block's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerReport {
    /// The signer.
    pub key_id: KeyId,
    /// The block's (untrusted) signing time.
    pub signed_at: UnixSeconds,
    /// Outcome.
    pub status: SignerStatus,
}

/// A successful verification.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Name and version from the (hash-checked, signed) manifest.
    pub package: PackageId,
    /// The signed root.
    pub root: [u8; HASH_BYTES],
    /// Every signature block.
    pub signers: Vec<SignerReport>,
    /// The policy rules that accepted the package.
    pub decision: Decision,
    /// The sections checked, in table order (always including the manifest).
    pub sections: Vec<SectionCheck>,
    /// Sections present but not checked (partial verification).
    pub skipped: Vec<SectionType>,
}

/// Opens and verifies a package file.
pub fn verify_file(
    path: &Path,
    policy: &TrustPolicy,
    options: &VerifyOptions<'_>,
) -> Result<VerifyReport, Error> {
    let mut reader = PackageReader::open_file(path)?;
    verify(&mut reader, policy, options)
}

/// Verifies an opened package (escx-format.md §8 steps 5–9).
pub fn verify<R: Read + Seek + Send>(
    reader: &mut PackageReader<R>,
    policy: &TrustPolicy,
    options: &VerifyOptions<'_>,
) -> Result<VerifyReport, Error> {
    let now = options.now.unwrap_or_else(crate::now_unix);
    let signers = check_signatures(reader, policy)?;
    let valid: Vec<KeyId> =
        signers.iter().filter(|s| matches!(s.status, SignerStatus::Valid(_))).map(|s| s.key_id).collect();
    if valid.is_empty() {
        return Err(Error::Untrusted { signers: signers.iter().map(|s| s.key_id).collect() });
    }

    let package = reader.package_id()?;
    let decision = policy.evaluate(&package.name, &valid, now)?;

    let wanted = |kind: SectionType| match options.sections {
        SectionSelection::All => true,
        SectionSelection::Only(kinds) => kind == SectionType::Manifest || kinds.contains(&kind),
    };
    if let SectionSelection::Only(kinds) = options.sections
        && let Some(absent) = kinds.iter().find(|k| reader.section(**k).is_none())
    {
        return Err(Error::SectionAbsent { section: absent.name() });
    }
    let kinds: Vec<SectionType> = reader.sections().iter().map(|s| s.kind).collect();
    let mut sections = Vec::new();
    let mut skipped = Vec::new();
    for kind in kinds {
        if wanted(kind) {
            sections.push(reader.check_section_with(kind, options.progress, options.content_key)?);
        } else {
            skipped.push(kind);
        }
    }
    Ok(VerifyReport { package, root: *reader.root(), signers, decision, sections, skipped })
}

/// Step 5: every block by a key the policy knows must verify; others are noted.
fn check_signatures<R: Read + Seek + Send>(
    reader: &PackageReader<R>,
    policy: &TrustPolicy,
) -> Result<Vec<SignerReport>, Error> {
    let root = reader.root();
    let mut reports = Vec::new();
    for block in reader.signatures() {
        let status = match policy.key(block.key_id) {
            Some(key) => {
                key.verify(SigningContext::PACKAGE, &block.message(root), &block.signature)?;
                SignerStatus::Valid(policy.key_name(block.key_id).unwrap_or_default().to_owned())
            }
            None => SignerStatus::Unknown,
        };
        reports.push(SignerReport { key_id: block.key_id, signed_at: block.signed_at, status });
    }
    Ok(reports)
}
