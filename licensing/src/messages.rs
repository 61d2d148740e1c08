//! The objects issuer and customer exchange (spec: licensing.md §3). Every one is a CBOR
//! map; the signed ones travel in escx envelopes, the private ones in sealed boxes.

use escx::UnixSeconds;
use escx::envelope::Envelope;
use escx::header::PackageName;
use escx::kem::KemPublicKey;
use escx::sig::{KeyId, PublicKey, SecretKey, SigningContext};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::Error;
use crate::poprf::{ELEMENT_BYTES, INPUT_BYTES, OUTPUT_BYTES, PROOF_BYTES, TokenInfo};

/// Signing context of the issuer's public bundle (one version of its chain).
pub const CONTEXT_BUNDLE: SigningContext = SigningContext::new("escx/issuer-bundle/v2");
/// `derive_key` context of a bundle's hash, which the next version names as `previous`
/// and a registry index publishes (licensing.md §3.1).
pub const CONTEXT_BUNDLE_HASH: &str = "escx v1 issuer bundle hash";
/// Most versions in one bundle chain (a new version per key epoch: centuries of them).
pub const BUNDLE_CHAIN_VERSIONS_MAX: usize = 1024;
/// Most POPRF epochs one bundle lists.
pub const BUNDLE_EPOCHS_MAX: usize = 1024;
/// Signing context of license certificates.
pub const CONTEXT_LICENSE: SigningContext = SigningContext::new("escx/license/v1");
/// Signing context of certificate revocation lists.
pub const CONTEXT_CRL: SigningContext = SigningContext::new("escx/crl/v1");
/// Signing context of proofs of possession.
pub const CONTEXT_POSSESSION: SigningContext = SigningContext::new("escx/possession/v1");
/// Signature context of a holder's request for the content key of a later file
/// (licensing.md §8.1).
pub const CONTEXT_KEY_REQUEST: SigningContext = SigningContext::new("escx/key-request/v1");
/// Sealed-box purpose of redemption requests (to the issuer).
pub const PURPOSE_REDEEM: &str = "escx/redeem-request/v1";
/// Sealed-box purpose of redemption responses (to the holder).
pub const PURPOSE_LICENSE: &str = "escx/license-response/v1";
/// Sealed-box purpose of an unspent token given to another wallet.
pub const PURPOSE_TRANSFER: &str = "escx/token-transfer/v1";

/// Every `derive_key` context this crate uses (for the spec test).
pub const ALL_HASH_CONTEXTS: &[&str] = &[CONTEXT_BUNDLE_HASH];

/// Every signing context this crate uses (for the spec test).
pub const ALL_CONTEXTS: &[SigningContext] =
    &[CONTEXT_BUNDLE, CONTEXT_LICENSE, CONTEXT_CRL, CONTEXT_POSSESSION];

fn fixed<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N], Error> {
    bytes.try_into().map_err(|_| Error::Malformed {
        what,
        reason: format!("{what} must be {N} bytes, found {}", bytes.len()),
    })
}

pub(crate) fn decode<T: serde::de::DeserializeOwned + Serialize>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, Error> {
    escx::cbor::decode_exact(bytes, what).map_err(|reason| Error::Malformed { what, reason })
}

/// One POPRF key epoch in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Epoch {
    /// Epoch number.
    pub epoch: u32,
    /// POPRF public key (32 bytes).
    pub poprf_key: ByteBuf,
    /// Tokens are issued under this epoch from here (Unix seconds).
    pub not_before: UnixSeconds,
    /// ... until here.
    pub not_after: UnixSeconds,
}

/// The issuer's signed public bundle payload: one version of its bundle chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlePayload {
    /// Format version, 2.
    pub v: u8,
    /// Issuer's display name.
    pub name: String,
    /// ML-DSA-87 key that signs bundles, certificates and CRLs.
    pub signing_key: ByteBuf,
    /// ML-KEM-1024 key redemption requests are sealed to (the same in every version).
    pub kem_key: ByteBuf,
    /// 1, 2, 3, ...: the position in the chain.
    pub version: u64,
    /// The previous version's bundle hash (32 zero bytes for version 1).
    pub previous: ByteBuf,
    /// POPRF keys, one per epoch, consecutive numbers, windows that never overlap; a later
    /// version keeps every epoch of the one before unchanged and may only append.
    pub epochs: Vec<Epoch>,
    /// When the bundle was signed.
    pub issued_at: UnixSeconds,
}

/// One verified version of an issuer's bundle.
#[derive(Debug, Clone)]
pub struct IssuerBundle {
    /// The payload.
    pub payload: BundlePayload,
    /// The signing key.
    pub signing_key: PublicKey,
    /// The KEM key.
    pub kem_key: KemPublicKey,
    /// The exact envelope bytes (for re-distribution).
    pub bytes: Vec<u8>,
    /// `derive_key("escx v1 issuer bundle hash", bytes)`.
    pub hash: [u8; 32],
}

impl IssuerBundle {
    /// Signs a payload with the issuer key (which must be the payload's signing key).
    pub fn sign(payload: BundlePayload, key: &SecretKey) -> Result<Self, Error> {
        let bytes = Envelope::seal(CONTEXT_BUNDLE, escx::cbor::encode(&payload), key).to_cbor();
        Self::parse(&bytes)
    }

    /// Parses and verifies one bundle version (self-signed by its own signing key) and the
    /// rules every version obeys (licensing.md §3.1). Callers that pin an issuer compare
    /// [`Self::issuer_id`] with the pinned id.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let invalid = |reason: String| Error::BundleInvalid { reason };
        let envelope = Envelope::from_cbor(bytes).map_err(|e| invalid(e.to_string()))?;
        let unverified: BundlePayload =
            escx::cbor::decode_exact(&envelope_payload(&envelope), "issuer bundle").map_err(invalid)?;
        let signing_key =
            PublicKey::from_bytes(&unverified.signing_key).map_err(|e| invalid(e.to_string()))?;
        let payload: BundlePayload = escx::cbor::decode_exact(
            envelope.open(CONTEXT_BUNDLE, &signing_key).map_err(|e| invalid(e.to_string()))?,
            "issuer bundle",
        )
        .map_err(invalid)?;
        if payload.v != 2 {
            return Err(invalid(format!(
                "unsupported issuer bundle version {} (this build reads 2)",
                payload.v
            )));
        }
        let kem_key = KemPublicKey::from_bytes(&payload.kem_key).map_err(|e| invalid(e.to_string()))?;
        if payload.version == 0 || payload.previous.len() != 32 {
            return Err(invalid("version must be at least 1 and previous 32 bytes".into()));
        }
        if (payload.version == 1) != payload.previous.iter().all(|b| *b == 0) {
            return Err(invalid("only version 1 has no previous version".into()));
        }
        check_epochs(&payload.epochs).map_err(invalid)?;
        Ok(Self {
            payload,
            signing_key,
            kem_key,
            bytes: bytes.to_vec(),
            hash: blake3::derive_key(CONTEXT_BUNDLE_HASH, bytes),
        })
    }

    /// The issuer's identity: its signing key id.
    pub fn issuer_id(&self) -> KeyId {
        self.signing_key.id()
    }

    /// The version in its chain.
    pub fn version(&self) -> u64 {
        self.payload.version
    }

    /// The epoch in force at `now` (the one whose window contains it).
    pub fn epoch_at(&self, now: UnixSeconds) -> Option<&Epoch> {
        self.payload.epochs.iter().find(|e| e.not_before <= now && now < e.not_after)
    }

    /// An epoch by number.
    pub fn epoch(&self, number: u32) -> Option<&Epoch> {
        self.payload.epochs.iter().find(|e| e.epoch == number)
    }
}

/// Epochs are numbered consecutively, each window is non-empty, and windows never overlap,
/// so at any moment at most one POPRF key is in force: every customer buys under the same
/// key, and none can be given a key of its own (licensing.md §6.1).
fn check_epochs(epochs: &[Epoch]) -> Result<(), String> {
    if epochs.is_empty() || epochs.len() > BUNDLE_EPOCHS_MAX {
        return Err(format!("a bundle lists 1 to {BUNDLE_EPOCHS_MAX} epochs, not {}", epochs.len()));
    }
    for epoch in epochs {
        fixed::<ELEMENT_BYTES>(&epoch.poprf_key, "POPRF key").map_err(|e| e.to_string())?;
        if epoch.epoch == 0 || epoch.not_before >= epoch.not_after {
            return Err(format!("epoch {}: numbers start at 1 and windows are non-empty", epoch.epoch));
        }
    }
    for pair in epochs.windows(2) {
        if pair[1].epoch != pair[0].epoch + 1 {
            return Err(format!(
                "epoch {} follows epoch {}: numbers are consecutive",
                pair[1].epoch, pair[0].epoch
            ));
        }
        if pair[1].not_before < pair[0].not_after {
            return Err(format!("epochs {} and {} overlap", pair[0].epoch, pair[1].epoch));
        }
    }
    Ok(())
}

/// An issuer's bundle chain (licensing.md §3.1): every version from 1 to the newest, each
/// naming the hash of the one before, with the same signing and KEM keys, each keeping
/// the epochs of the one before. The file customers are given (`issuer.pub`) holds it.
#[derive(Debug, Clone)]
pub struct BundleChain {
    versions: Vec<IssuerBundle>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainFile {
    v: u8,
    bundles: Vec<ByteBuf>,
}

/// How a chain stands to one already held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainRelation {
    /// The same chain.
    Same,
    /// The held chain is a prefix of this one: this one extends it.
    Extends,
    /// This chain is a prefix of the held one (older).
    Older,
    /// They differ at this version: two histories.
    Fork(u64),
}

impl BundleChain {
    /// Verifies a chain of bundles, oldest first.
    pub fn from_bundles(versions: Vec<IssuerBundle>) -> Result<Self, Error> {
        let invalid = |reason: String| Error::BundleInvalid { reason };
        let first = versions.first().ok_or_else(|| invalid("an empty bundle chain".into()))?;
        if versions.len() > BUNDLE_CHAIN_VERSIONS_MAX {
            return Err(invalid(format!("more than {BUNDLE_CHAIN_VERSIONS_MAX} versions")));
        }
        if first.version() != 1 {
            return Err(invalid(format!("the chain starts at version {}, not 1", first.version())));
        }
        for pair in versions.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let at = b.version();
            if at != a.version() + 1 || b.payload.previous[..] != a.hash[..] {
                return Err(invalid(format!("version {at} does not follow version {}", a.version())));
            }
            if b.issuer_id() != a.issuer_id() || b.payload.kem_key != a.payload.kem_key {
                return Err(invalid(format!("version {at} changes the signing or KEM key")));
            }
            if b.payload.epochs.len() < a.payload.epochs.len()
                || b.payload.epochs[..a.payload.epochs.len()] != a.payload.epochs[..]
            {
                return Err(invalid(format!("version {at} changes an epoch of version {}", a.version())));
            }
            if b.payload.issued_at < a.payload.issued_at {
                return Err(invalid(format!("version {at} is dated before version {}", a.version())));
            }
        }
        Ok(Self { versions })
    }

    /// Parses and verifies a chain file.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let file: ChainFile = escx::cbor::decode_exact(bytes, "issuer bundle chain").map_err(|reason| {
            let reason = match escx::keyfile::describe_text_file(bytes) {
                Some(what) => format!(
                    "{what}, where the issuer's bundle chain is expected (the file `escx issuer publish` writes)"
                ),
                None => reason,
            };
            Error::BundleInvalid { reason }
        })?;
        if file.v != 1 {
            return Err(Error::BundleInvalid {
                reason: format!("unsupported chain file version {}", file.v),
            });
        }
        if file.bundles.len() > BUNDLE_CHAIN_VERSIONS_MAX {
            return Err(Error::BundleInvalid {
                reason: format!("more than {BUNDLE_CHAIN_VERSIONS_MAX} versions"),
            });
        }
        Self::from_bundles(file.bundles.iter().map(|b| IssuerBundle::parse(b)).collect::<Result<_, _>>()?)
    }

    /// The chain file.
    pub fn to_cbor(&self) -> Vec<u8> {
        escx::cbor::encode(&ChainFile {
            v: 1,
            bundles: self.versions.iter().map(|b| ByteBuf::from(b.bytes.clone())).collect(),
        })
    }

    /// The newest version.
    pub fn head(&self) -> &IssuerBundle {
        // Never empty: `from_bundles` refuses an empty chain.
        &self.versions[self.versions.len() - 1]
    }

    /// A version by number.
    pub fn version(&self, version: u64) -> Option<&IssuerBundle> {
        version.checked_sub(1).and_then(|i| self.versions.get(usize::try_from(i).ok()?))
    }

    /// The issuer's identity.
    pub fn issuer_id(&self) -> KeyId {
        self.head().issuer_id()
    }

    /// How this chain stands to `held` (of the same issuer).
    pub fn relation(&self, held: &BundleChain) -> ChainRelation {
        for (mine, theirs) in self.versions.iter().zip(&held.versions) {
            if mine.hash != theirs.hash {
                return ChainRelation::Fork(mine.version());
            }
        }
        match self.versions.len().cmp(&held.versions.len()) {
            std::cmp::Ordering::Equal => ChainRelation::Same,
            std::cmp::Ordering::Greater => ChainRelation::Extends,
            std::cmp::Ordering::Less => ChainRelation::Older,
        }
    }
}

/// The payload of an envelope before its signature is checked (to learn which key to
/// check it with; the result is only trusted after `open`).
fn envelope_payload(envelope: &Envelope) -> Vec<u8> {
    envelope.payload_unverified().to_vec()
}

/// A customer's purchase: blinded elements for `count` tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Format version, 1.
    pub v: u8,
    /// Package name.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// Issuer epoch.
    pub epoch: u32,
    /// Blinded elements (32 bytes each).
    pub blinded: Vec<ByteBuf>,
}

/// The issuer's answer: evaluated elements and one batched DLEQ proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenResponse {
    /// Format version, 1.
    pub v: u8,
    /// Package name (echoed).
    pub package: PackageName,
    /// Tier (echoed).
    pub tier: String,
    /// Epoch (echoed).
    pub epoch: u32,
    /// Evaluated elements, in request order.
    pub evaluated: Vec<ByteBuf>,
    /// Batched DLEQ proof (64 bytes).
    pub proof: ByteBuf,
}

impl TokenRequest {
    /// The token info.
    pub fn info(&self) -> TokenInfo {
        TokenInfo { package: self.package.clone(), tier: self.tier.clone(), epoch: self.epoch }
    }

    /// CBOR encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        escx::cbor::encode(self)
    }

    /// Parses and checks sizes.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let request: Self = decode(bytes, "token request")?;
        if request.v != 1 {
            return Err(Error::Malformed {
                what: "token request",
                reason: "unsupported token request version".into(),
            });
        }
        for element in &request.blinded {
            fixed::<ELEMENT_BYTES>(element, "blinded element")?;
        }
        crate::poprf::TokenInfo::check_tier(&request.tier)?;
        Ok(request)
    }

    /// The blinded elements as arrays.
    pub fn elements(&self) -> Result<Vec<[u8; ELEMENT_BYTES]>, Error> {
        self.blinded.iter().map(|e| fixed(e, "blinded element")).collect()
    }
}

impl TokenResponse {
    /// CBOR encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        escx::cbor::encode(self)
    }

    /// Parses and checks sizes.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let response: Self = decode(bytes, "token response")?;
        if response.v != 1 {
            return Err(Error::Malformed {
                what: "token response",
                reason: "unsupported token response version".into(),
            });
        }
        fixed::<PROOF_BYTES>(&response.proof, "proof")?;
        for element in &response.evaluated {
            fixed::<ELEMENT_BYTES>(element, "evaluated element")?;
        }
        Ok(response)
    }
}

/// A redemption request (sealed to the issuer's KEM key): one token and the fresh
/// holder keys the license will name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// Format version, 1.
    pub v: u8,
    /// Package name.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// Epoch of the token.
    pub epoch: u32,
    /// Token input (32 bytes).
    pub input: ByteBuf,
    /// Token output (64 bytes).
    pub output: ByteBuf,
    /// Holder ML-DSA-87 public key.
    pub holder_key: ByteBuf,
    /// Holder ML-KEM-1024 public key.
    pub holder_kem_key: ByteBuf,
}

impl RedeemRequest {
    /// Parses and checks sizes.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let request: Self = decode(bytes, "redemption request")?;
        if request.v != 1 {
            return Err(Error::Malformed {
                what: "redemption request",
                reason: "unsupported redemption request version".into(),
            });
        }
        fixed::<INPUT_BYTES>(&request.input, "token input")?;
        fixed::<OUTPUT_BYTES>(&request.output, "token output")?;
        crate::poprf::TokenInfo::check_tier(&request.tier)?;
        Ok(request)
    }

    /// The token info.
    pub fn info(&self) -> TokenInfo {
        TokenInfo { package: self.package.clone(), tier: self.tier.clone(), epoch: self.epoch }
    }
}

/// The license certificate payload (signed by the issuer, context `escx/license/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicensePayload {
    /// Format version, 1.
    pub v: u8,
    /// Random 16-byte license id.
    pub license_id: ByteBuf,
    /// Package name.
    pub package: PackageName,
    /// Versions covered: a requirement, or `*` for every version.
    pub versions: String,
    /// Tier.
    pub tier: String,
    /// Entitled features.
    pub features: Vec<String>,
    /// Seats, if limited.
    pub seats: Option<u32>,
    /// Valid from (Unix seconds).
    pub not_before: UnixSeconds,
    /// Valid until (Unix seconds, exclusive).
    pub not_after: UnixSeconds,
    /// Holder ML-DSA-87 public key.
    pub holder_key: ByteBuf,
    /// Holder ML-KEM-1024 public key.
    pub holder_kem_key: ByteBuf,
    /// Content keys wrapped to the holder: `{package_root, sealed}` per licensed package file.
    pub wrapped_keys: Vec<WrappedKey>,
    /// Issuer signing key id (16 bytes).
    pub issuer_key_id: ByteBuf,
    /// Where the issuer publishes its CRL (informational).
    pub crl_location: String,
    /// What the tier shares and the package meters (version 2 only; absent in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<LicenseTerms>,
}

/// The terms a version-2 certificate carries from the package's signed manifest
/// (licensing.md §3.4), so that the customer's meter records only what the operator will
/// take and reports in the tier's telemetry mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseTerms {
    /// The tier's telemetry mode: `private` or `share`.
    pub telemetry: String,
    /// The units the package meters: its `[telemetry] metrics` (empty without a
    /// `[telemetry]` table), in the manifest's order.
    pub metrics: Vec<String>,
}

/// True for a unit name the meter accepts from a caller: `invocations`, `compute_ms`,
/// `bytes` or `custom:<name>` (1 to 32 of a-z, 0-9, `_`), the `[telemetry] metrics` of
/// manifest.md.
pub fn is_metric(unit: &str) -> bool {
    matches!(unit, "invocations" | "compute_ms" | "bytes")
        || unit.strip_prefix("custom:").is_some_and(|name| {
            !name.is_empty()
                && name.len() <= 32
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// An unspent token handed to another wallet (sealed to its receive key, purpose
/// `escx/token-transfer/v1`). The issuer never sees it: the recipient redeems the token
/// like any other.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenTransfer {
    /// Format version, 1.
    pub v: u8,
    /// The issuer bundle the token was bought under (signed; re-verified by the recipient).
    pub bundle: ByteBuf,
    /// Package name.
    pub package: PackageName,
    /// Tier.
    pub tier: String,
    /// Key epoch.
    pub epoch: u32,
    /// Token input (32 bytes).
    pub input: ByteBuf,
    /// Token output (64 bytes).
    pub output: ByteBuf,
}

impl Drop for TokenTransfer {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.input.as_mut_slice());
        zeroize::Zeroize::zeroize(self.output.as_mut_slice());
    }
}

impl TokenTransfer {
    /// Parses and checks sizes.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let transfer: Self = decode(bytes, "token transfer")?;
        if transfer.v != 1 {
            return Err(Error::Malformed {
                what: "token transfer",
                reason: "unsupported token transfer version".into(),
            });
        }
        fixed::<INPUT_BYTES>(&transfer.input, "token input")?;
        fixed::<OUTPUT_BYTES>(&transfer.output, "token output")?;
        Ok(transfer)
    }
}

/// A wallet's receive key, published to whoever will give it tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveKey {
    /// Format version, 1.
    pub v: u8,
    /// ML-KEM-1024 public key.
    pub kem_key: ByteBuf,
}

impl ReceiveKey {
    /// The file for `key`.
    pub fn new(key: &KemPublicKey) -> Self {
        Self { v: 1, kem_key: ByteBuf::from(key.as_bytes().to_vec()) }
    }

    /// The encoded file.
    pub fn to_cbor(&self) -> Vec<u8> {
        escx::cbor::encode(self)
    }

    /// Parses a receive-key file.
    pub fn from_cbor(bytes: &[u8]) -> Result<KemPublicKey, Error> {
        let key: Self = decode(bytes, "receive key")?;
        if key.v != 1 {
            return Err(Error::Malformed {
                what: "receive key",
                reason: "unsupported receive key version".into(),
            });
        }
        Ok(KemPublicKey::from_bytes(&key.kem_key)?)
    }
}

/// A content key sealed to the holder's KEM key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    /// Root of the package whose payload the key decrypts (32 bytes).
    pub package_root: ByteBuf,
    /// Sealed box to the holder (purpose `escx/wrapped-content-key/v1`, bound to `package_root`).
    pub sealed: ByteBuf,
}

/// A holder asks for the content key of one package file its license covers (licensing.md
/// §8.1): the payload of an envelope `escx/key-request/v1` signed by the holder key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequestPayload {
    /// Format version, 1.
    pub v: u8,
    /// The license certificate (as the issuer signed it).
    pub certificate: ByteBuf,
    /// The signed root of the package file (32 bytes).
    pub package_root: ByteBuf,
}

/// The issuer's answer to a key request: the file's content key wrapped to the license's
/// holder KEM key, exactly as a certificate's `wrapped_keys` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyResponse {
    /// Format version, 1.
    pub v: u8,
    /// The license the key is for (16 bytes).
    pub license_id: ByteBuf,
    /// The wrapped key.
    pub wrapped: WrappedKey,
}

impl KeyResponse {
    /// Parses a response and checks its lengths (`message-invalid`).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let response: Self = decode(bytes, "key response")?;
        if response.v != 1 {
            return Err(Error::Malformed { what: "key response", reason: "v must be 1".into() });
        }
        fixed::<16>(&response.license_id, "license_id")?;
        fixed::<32>(&response.wrapped.package_root, "package_root")?;
        Ok(response)
    }
}

/// What the issuer seals back to the holder after a redemption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseResponse {
    /// Format version, 1.
    pub v: u8,
    /// The license certificate (envelope bytes).
    pub certificate: ByteBuf,
}

/// One revoked license in a CRL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// License id (16 bytes).
    pub license_id: ByteBuf,
    /// Why.
    pub reason: String,
    /// When (Unix seconds).
    pub revoked_at: UnixSeconds,
}

/// A certificate revocation list payload (context `escx/crl/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlPayload {
    /// Format version, 1.
    pub v: u8,
    /// Increases with every list; clients never go back.
    pub number: u64,
    /// When it was signed.
    pub issued_at: UnixSeconds,
    /// Revoked licenses, sorted by id.
    pub revoked: Vec<Revoked>,
}

/// A proof of possession payload (signed by the holder, context `escx/possession/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PossessionPayload {
    /// Format version, 1.
    pub v: u8,
    /// The verifier's fresh challenge.
    pub challenge: ByteBuf,
    /// The license certificate (envelope bytes).
    pub certificate: ByteBuf,
}

/// Decodes a CBOR payload of a verified envelope.
pub fn decode_payload<T: serde::de::DeserializeOwned + Serialize>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, Error> {
    decode(bytes, what)
}

/// A 16-byte id as hex.
pub(crate) fn id_hex(id: &[u8]) -> String {
    hex::encode(id)
}

/// Parses a 16-byte key id field.
pub fn key_id(bytes: &[u8]) -> Result<KeyId, Error> {
    Ok(KeyId(fixed(bytes, "key id")?))
}

/// A sealed message type: opaque bytes with the one meaning its name says, so a sealed
/// license cannot be handed where a sealed redemption request is expected. The bytes are
/// ciphertext (licensing.md §5.3, §5.4), safe to copy, log by length, and send.
macro_rules! sealed_message {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Vec<u8>);

        impl $name {
            /// Wraps bytes received from a file or the network; they are checked when
            /// opened.
            pub fn from_bytes(bytes: Vec<u8>) -> Self {
                Self(bytes)
            }

            /// The bytes to store or send.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// The bytes, owned.
            pub fn into_bytes(self) -> Vec<u8> {
                self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({} bytes)", stringify!($name), self.0.len())
            }
        }
    };
}

sealed_message! {
    /// A [`RedeemRequest`] sealed to the issuer's KEM key (licensing.md §5.3): what a
    /// wallet sends to redeem a token.
    SealedRedeemRequest
}

sealed_message! {
    /// A [`LicenseResponse`] sealed to the holder's fresh KEM key (licensing.md §5.4): what
    /// the issuer answers a redemption with.
    SealedLicense
}

sealed_message! {
    /// A [`TokenTransfer`] sealed to the recipient wallet's receive key (licensing.md
    /// §8.3).
    SealedTransfer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poprf::INFO_FIELD_BYTES_MAX;

    /// A token request's fields with a free-form package, as an attacker would encode it.
    #[derive(Serialize)]
    struct Forged<'a> {
        v: u8,
        package: &'a str,
        tier: &'a str,
        epoch: u32,
        blinded: Vec<ByteBuf>,
    }

    fn forged(package: &str, tier: &str) -> Vec<u8> {
        escx::cbor::encode(&Forged {
            v: 1,
            package,
            tier,
            epoch: 1,
            blinded: vec![ByteBuf::from(vec![0u8; 32])],
        })
    }

    #[test]
    fn a_request_for_an_invalid_package_name_is_malformed() {
        assert!(TokenRequest::from_cbor(&forged("acme/thermal", "standard")).is_ok());
        for bad in ["Acme/thermal", "a/b/c", "", "acme/ther mal"] {
            let err = TokenRequest::from_cbor(&forged(bad, "standard")).unwrap_err();
            assert!(matches!(err, Error::Malformed { what: "token request", .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_request_for_a_tier_longer_than_the_info_prefix_is_malformed() {
        assert!(TokenRequest::from_cbor(&forged("acme/thermal", &"t".repeat(INFO_FIELD_BYTES_MAX))).is_ok());
        let err = TokenRequest::from_cbor(&forged("acme/thermal", &"t".repeat(INFO_FIELD_BYTES_MAX + 1)))
            .unwrap_err();
        assert!(matches!(err, Error::Malformed { what: "token info", .. }), "{err}");
    }
}
