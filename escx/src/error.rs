//! Typed errors and the [`Fault`] protocol every escx crate's errors follow: a stable
//! machine-readable code (used by `--json` output and the test vectors), an
//! [`ErrorClass`] (input or environment), and a message that says what is wrong and where;
//! [`Fault::help`] says what would fix it.

use std::path::PathBuf;

use crate::sig::KeyId;

/// A structural or content problem inside an `.escx` file (spec: escx-format.md §12).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The file ends before a structure it declares.
    #[error("truncated {what}: needs {needed_bytes} bytes at offset {offset}, file has {file_bytes}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed_bytes: u64,
        /// The file's length.
        file_bytes: u64,
    },
    /// The first four bytes are not `ESCX`.
    #[error(
        "not an .escx package: it starts with the bytes {} where a package starts with 45534358 (\"ESCX\")",
        hex::encode(.found)
    )]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A major version this reader does not implement.
    #[error("unsupported format version {major}.{minor}; this reader implements 1.x")]
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// Header flag bits that v1 does not define.
    #[error("unknown header flags {flags:#010x}")]
    UnknownHeaderFlags {
        /// The flags found.
        flags: u32,
    },
    /// Section count is zero or above the limit.
    #[error("section count {count} is outside 1..={max}")]
    SectionCount {
        /// Count found.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// A section type id v1 does not define.
    #[error("section {index}: unknown section type {type_id}")]
    UnknownSectionType {
        /// Table index.
        index: u32,
        /// Type id found.
        type_id: u32,
    },
    /// Section types are not strictly increasing (duplicate or out of order).
    #[error("section {index} ({section}): section types must be unique and in increasing order")]
    SectionOrder {
        /// Table index.
        index: u32,
        /// Section name.
        section: &'static str,
    },
    /// The manifest section is absent.
    #[error("the package has no manifest section")]
    MissingManifest,
    /// Section flags that are undefined or not allowed for the section type.
    #[error("{section} section: flags {flags:#010x} are not allowed ({reason})")]
    SectionFlags {
        /// Section name.
        section: &'static str,
        /// Flags found.
        flags: u32,
        /// Why.
        reason: &'static str,
    },
    /// A section starts before the previous one ends.
    #[error("{section} section overlaps the previous bytes: starts at {offset}, expected {expected}")]
    SectionOverlap {
        /// Section name.
        section: &'static str,
        /// Declared offset.
        offset: u64,
        /// Where it had to start.
        expected: u64,
    },
    /// A section starts after the previous one ends.
    #[error("{section} section leaves a gap: starts at {offset}, expected {expected}")]
    SectionGap {
        /// Section name.
        section: &'static str,
        /// Declared offset.
        offset: u64,
        /// Where it had to start.
        expected: u64,
    },
    /// A section extends past the body or the file.
    #[error("{section} section ends at {end}, past the end of the {limit_name} ({limit})")]
    SectionPastEnd {
        /// Section name.
        section: &'static str,
        /// Declared end.
        end: u64,
        /// "body" or "file".
        limit_name: &'static str,
        /// Its length.
        limit: u64,
    },
    /// The header's body length is not where the last section ends.
    #[error("header declares body length {declared}, but the sections end at {computed}")]
    BodyLength {
        /// Declared.
        declared: u64,
        /// Computed from the table.
        computed: u64,
    },
    /// A declared length is above its limit.
    #[error("{section} section: {what} {length} exceeds the limit {max}")]
    SectionTooLarge {
        /// Section name.
        section: &'static str,
        /// Which length.
        what: &'static str,
        /// Declared length.
        length: u64,
        /// The limit.
        max: u64,
    },
    /// An uncompressed section whose stored length is not its plain length (plus the
    /// encryption overhead, when encrypted).
    #[error(
        "{section} section is not compressed but its stored length {stored} does not match its plain length {plain}"
    )]
    StoredLength {
        /// Section name.
        section: &'static str,
        /// Plain length.
        plain: u64,
        /// Stored length.
        stored: u64,
    },
    /// The trailer holds no signature block.
    #[error("the package is not signed: the trailer holds no signature block")]
    Unsigned,
    /// More signature blocks than allowed.
    #[error("the trailer holds more than {max} signature blocks")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
    /// A malformed signature block.
    #[error("signature block {index}: {reason}")]
    SignatureBlock {
        /// Block index in the trailer.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Two blocks by the same key.
    #[error("key {key_id} signed the package twice")]
    DuplicateSigner {
        /// The key.
        key_id: KeyId,
    },
    /// A section's stored bytes do not hash to the table's value.
    #[error("{section} section: BLAKE3 of the stored bytes is {actual}, the table says {expected}")]
    SectionHash {
        /// Section name.
        section: &'static str,
        /// From the table (hex).
        expected: String,
        /// Computed (hex).
        actual: String,
    },
    /// Decompression produced more or fewer bytes than declared.
    #[error("{section} section decompresses to {actual}, but its declared plain length is {declared}")]
    PlainLength {
        /// Section name.
        section: &'static str,
        /// Declared.
        declared: u64,
        /// "more than N bytes" or the exact count.
        actual: String,
    },
    /// The compressed stream is corrupt.
    #[error("{section} section: zstd decompression failed: {reason}")]
    Decompress {
        /// Section name.
        section: &'static str,
        /// Decoder message.
        reason: String,
    },
    /// The manifest section is not a valid minimal manifest.
    #[error("manifest section: {reason}")]
    ManifestInvalid {
        /// What is wrong.
        reason: String,
    },
    /// The archive inside a section cannot be parsed.
    #[error("{section} section: malformed tar archive: {reason}")]
    ArchiveInvalid {
        /// Section name.
        section: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An archive path that could escape the extraction directory or is not portable.
    #[error("{section} section: unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// Section name.
        section: &'static str,
        /// The path (lossy UTF-8).
        path: String,
        /// Why.
        reason: String,
    },
    /// An archive entry type escx does not extract.
    #[error("{section} section: entry {path:?} is a {kind}, which packages may not contain")]
    UnsupportedEntry {
        /// Section name.
        section: &'static str,
        /// The path.
        path: String,
        /// Entry kind.
        kind: String,
    },
    /// The same path twice, or a path below a file or link.
    #[error("{section} section: entry {path:?} {reason}")]
    DuplicateEntry {
        /// Section name.
        section: &'static str,
        /// The path.
        path: String,
        /// Which conflict.
        reason: String,
    },
    /// A payload path that belongs to another section.
    #[error("payload section: path {path:?} is reserved for the {owner}")]
    ReservedPath {
        /// The path.
        path: String,
        /// The section that owns it.
        owner: &'static str,
    },
    /// Authenticated decryption failed: wrong content key, or altered or truncated bytes.
    #[error(
        "{section} section: decryption failed (wrong content key, or the bytes were altered or truncated)"
    )]
    DecryptionFailed {
        /// Section name.
        section: &'static str,
    },
    /// The content-key section is malformed.
    #[error("content-key section: {reason}")]
    ContentKeyInvalid {
        /// What is wrong.
        reason: String,
    },
    /// An encrypted payload without its content-key section, or the reverse.
    #[error(
        "an encrypted payload needs a content-key section, and a content-key section an encrypted payload"
    )]
    ContentKeyPairing,
    /// More entries than the limit.
    #[error("{section} section: more than {max} archive entries")]
    TooManyEntries {
        /// Section name.
        section: &'static str,
        /// The limit.
        max: u64,
    },
}

/// Every error the `escx` crate returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The container is malformed or its content fails a check.
    #[error(transparent)]
    Format(#[from] FormatError),

    /// A signature by a key the verifier trusts does not verify.
    #[error(
        "signature by key {key_id} does not verify: the signed bytes were altered or the signature is corrupt"
    )]
    SignatureInvalid {
        /// The signer.
        key_id: KeyId,
    },
    /// No signature in the package is by a key the verifier trusts.
    #[error("no trusted signature: the package is signed by {}, none of which is trusted", list_ids(.signers))]
    Untrusted {
        /// Key ids of the blocks found.
        signers: Vec<KeyId>,
    },
    /// Trusted signatures exist but the policy's rules are not met.
    #[error("trust policy rejects {package}: {}", .reasons.join("; "))]
    PolicyRejected {
        /// Package name.
        package: String,
        /// One line per unmet rule.
        reasons: Vec<String>,
    },
    /// The trust policy file is invalid.
    #[error("trust policy {}: {reason}", .path.display())]
    PolicyInvalid {
        /// The policy file (or `<memory>`).
        path: PathBuf,
        /// What is wrong, with line and column where known.
        reason: String,
    },

    /// A key, signature or key id has the wrong length.
    #[error("{what} must be {expected} bytes, found {found}")]
    KeyLength {
        /// What was parsed.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Found length.
        found: usize,
    },
    /// A key id that is not 32 hex digits.
    #[error("{text:?} is not a key id (32 hex digits)")]
    KeyIdSyntax {
        /// The text.
        text: String,
    },
    /// The secret key does not belong to the public key stored with it.
    #[error("secret key does not match its public key {key_id}: the key file is corrupt")]
    KeyMismatch {
        /// The public key's id.
        key_id: KeyId,
    },
    /// A key file that cannot be parsed.
    #[error("{}: {reason}", .path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Decrypting a sealed secret key failed.
    #[error("{}: wrong passphrase (or the key file was modified)", .path.display())]
    WrongPassphrase {
        /// The file.
        path: PathBuf,
    },
    /// A sealed key needs a passphrase and none is available.
    #[error("{}: the key is passphrase-protected and no passphrase is available", .path.display())]
    PassphraseRequired {
        /// The file.
        path: PathBuf,
    },

    /// A section was asked for that the package does not have.
    #[error("the package has no {section} section")]
    SectionAbsent {
        /// Section name.
        section: &'static str,
    },

    /// The payload is encrypted and no content key was given.
    #[error("{}: the payload is licensed content (encrypted); a license carrying its content key is needed", .path.display())]
    ContentKeyRequired {
        /// The package.
        path: PathBuf,
    },

    /// A sealed box cannot be opened or made.
    #[error("sealed box: {reason}")]
    Sealed {
        /// What is wrong.
        reason: String,
    },

    /// A signed envelope is malformed or does not verify.
    #[error("signed envelope: {reason}")]
    Envelope {
        /// What is wrong.
        reason: String,
    },

    /// The input directory or files cannot be packed.
    #[error("cannot pack {}: {reason}", .path.display())]
    PackInput {
        /// The offending path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The extraction target is not usable.
    #[error("cannot extract into {}: {reason}", .path.display())]
    ExtractTarget {
        /// The target directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// An I/O error, with the file it concerns. The OS error is part of the message (and
    /// deliberately not also a `source()`, so error chains do not print it twice).
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

fn list_ids(ids: &[KeyId]) -> String {
    if ids.is_empty() {
        return "no key".to_owned();
    }
    ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(", ")
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), error: source }
    }
}

/// Whose problem an error is; a front end maps the class to its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The input failed a check: a bad signature, a malformed file, a refused request.
    /// Retrying with the same input fails the same way.
    Input,
    /// The environment failed: a file could not be read or written, a database is
    /// unavailable, a passphrase could not be obtained. The input may be fine.
    Environment,
}

/// The protocol every error type of the escx crates follows, so that a program embedding
/// several of them handles their errors in one way.
///
/// `code` is stable across releases (the specs list every code); `class` says whether the
/// input or the environment is at fault; `help` describes what would fix the problem in
/// terms of the library's own concepts (front ends add their own wording, such as flags).
pub trait Fault: std::error::Error + Send + Sync + 'static {
    /// Stable machine-readable code, such as `signature-invalid`.
    fn code(&self) -> &'static str;
    /// Whether the input or the environment is at fault.
    fn class(&self) -> ErrorClass;
    /// What would fix it, when there is something useful to say.
    fn help(&self) -> Option<&'static str> {
        None
    }
}

impl Fault for FormatError {
    /// Stable machine-readable code (spec: escx-format.md §12).
    fn code(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::BadMagic { .. } => "bad-magic",
            Self::UnsupportedVersion { .. } => "unsupported-version",
            Self::UnknownHeaderFlags { .. } => "unknown-header-flags",
            Self::SectionCount { .. } => "section-count",
            Self::UnknownSectionType { .. } => "unknown-section-type",
            Self::SectionOrder { .. } => "section-order",
            Self::MissingManifest => "missing-manifest",
            Self::SectionFlags { .. } => "section-flags",
            Self::SectionOverlap { .. } => "section-overlap",
            Self::SectionGap { .. } => "section-gap",
            Self::SectionPastEnd { .. } => "section-past-end",
            Self::BodyLength { .. } => "body-length",
            Self::SectionTooLarge { .. } => "section-too-large",
            Self::StoredLength { .. } => "stored-length",
            Self::Unsigned => "unsigned",
            Self::TooManySignatures { .. } => "too-many-signatures",
            Self::SignatureBlock { .. } => "signature-block",
            Self::DuplicateSigner { .. } => "duplicate-signer",
            Self::SectionHash { .. } => "section-hash-mismatch",
            Self::PlainLength { .. } => "plain-length-mismatch",
            Self::Decompress { .. } => "decompression-failed",
            Self::ManifestInvalid { .. } => "manifest-invalid",
            Self::ArchiveInvalid { .. } => "archive-invalid",
            Self::UnsafePath { .. } => "unsafe-path",
            Self::UnsupportedEntry { .. } => "unsupported-entry",
            Self::DuplicateEntry { .. } => "duplicate-entry",
            Self::ReservedPath { .. } => "reserved-path",
            Self::TooManyEntries { .. } => "too-many-entries",
            Self::DecryptionFailed { .. } => "decryption-failed",
            Self::ContentKeyPairing => "content-key-pairing",
            Self::ContentKeyInvalid { .. } => "content-key-invalid",
        }
    }

    fn class(&self) -> ErrorClass {
        ErrorClass::Input
    }

    fn help(&self) -> Option<&'static str> {
        Some(match self {
            FormatError::SectionHash { .. } => {
                "the package was modified after signing; download it again from a trusted source"
            }
            FormatError::Truncated { .. } => {
                "the file is incomplete; the download or copy was probably interrupted"
            }
            FormatError::BadMagic { .. } => "check that the path names an .escx package",
            FormatError::UnsupportedVersion { .. } => "upgrade escx to a version that reads this format",
            FormatError::DecryptionFailed { .. } => {
                "the content key does not fit this package file, or the payload was altered"
            }
            _ => return None,
        })
    }
}

impl Fault for Error {
    fn code(&self) -> &'static str {
        match self {
            Self::Format(error) => error.code(),
            Self::SignatureInvalid { .. } => "signature-invalid",
            Self::Untrusted { .. } => "untrusted",
            Self::PolicyRejected { .. } => "policy-rejected",
            Self::PolicyInvalid { .. } => "policy-invalid",
            Self::KeyLength { .. } => "key-length",
            Self::KeyIdSyntax { .. } => "key-id-syntax",
            Self::KeyMismatch { .. } => "key-mismatch",
            Self::KeyFile { .. } => "key-file-invalid",
            Self::WrongPassphrase { .. } => "wrong-passphrase",
            Self::PassphraseRequired { .. } => "passphrase-required",
            Self::SectionAbsent { .. } => "section-absent",
            Self::Sealed { .. } => "sealed-box-invalid",
            Self::ContentKeyRequired { .. } => "content-key-required",
            Self::Envelope { .. } => "envelope-invalid",
            Self::PackInput { .. } => "pack-input",
            Self::ExtractTarget { .. } => "extract-target",
            Self::Io { .. } => "io",
        }
    }

    fn class(&self) -> ErrorClass {
        match self {
            Self::Io { .. } | Self::PassphraseRequired { .. } | Self::ExtractTarget { .. } => {
                ErrorClass::Environment
            }
            _ => ErrorClass::Input,
        }
    }

    fn help(&self) -> Option<&'static str> {
        Some(match self {
            Self::Format(error) => return Fault::help(error),
            Self::SignatureInvalid { .. } => {
                "the package was modified after signing; download it again from a trusted source"
            }
            Self::Untrusted { .. } => "trust the publisher's public key, or add it to the trust policy",
            Self::PolicyRejected { .. } => {
                "ask for the missing signatures, or review the scopes, expiry and revocations in the trust policy"
            }
            Self::WrongPassphrase { .. } => "retry with the key's passphrase",
            Self::PassphraseRequired { .. } => "supply the key's passphrase",
            Self::KeyMismatch { .. } => "restore the key file from a backup",
            Self::ExtractTarget { .. } => "choose a directory that does not exist yet, or an empty one",
            Self::ContentKeyRequired { .. } => {
                "buy and install a license for the package; its content key decrypts the payload"
            }
            _ => return None,
        })
    }
}
