//! `escx package ...`

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};
use escx::container::{PackageReader, SectionEntry, SectionType};
use escx::keyfile;
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx::timestamp;
use escx::verify::{SectionSelection, SignerStatus, VerifyOptions, VerifyReport};
use serde::Serialize;

use crate::failure::{self, UsageError};
use crate::output::{self, Ui};
use crate::secrets;

#[derive(Subcommand)]
pub enum PackageCommand {
    /// Pack a directory into a signed, deterministic .escx package.
    #[command(after_help = "\
DIR holds manifest.toml ([package] name and version at least). LICENSE, docs/ and tests/
go to their own sections; every other file goes to the payload, narrowed by the
manifest's [include] files / exclude globs. Hidden files and target/ are never packed.
The signing time is SOURCE_DATE_EPOCH when set, otherwise now. With SOURCE_DATE_EPOCH
two packs of the same files are identical except for the signature block: ML-DSA-87
signing is randomised (FIPS 204's hedged mode), so the signature bytes differ while the
signed manifest, its hashes and every section are the same bytes.

With --encrypt-for the payload is encrypted under a fresh content key sealed to the
license issuer; register the package with `escx issuer register-package` so licenses
carry the key. Encrypted packages also differ in the payload (the key is fresh each time).

Examples:
  escx package pack ./mypkg -o mypkg-1.0.0.escx --key acme.key
  escx package pack ./mypkg -o mypkg-1.0.0.escx --key acme.key --key ci.key --json
  escx package pack ./mypkg -o mypkg-1.0.0.escx --key acme.key --encrypt-for issuer.pub")]
    Pack(PackArgs),
    /// Verify signatures, trust policy and section hashes.
    #[command(after_help = "\
Without --section every section is hashed and its content checked. With --section only
the named sections are read (the manifest always is), which is what a partial download
needs: the others are not read at all. An encrypted payload (licensed content) is only
hashed unless --wallet holds a license carrying its content key.

Examples:
  escx package verify mypkg-1.0.0.escx --pubkey acme.pub
  escx package verify mypkg-1.0.0.escx --policy trust.toml --json
  escx package verify mypkg-1.0.0.escx --pubkey acme.pub --section manifest
  escx package verify mypkg-1.0.0.escx --pubkey acme.pub --wallet ./wallet")]
    Verify(VerifyArgs),
    /// Show header, sections, hashes, signers and root (nothing is verified).
    #[command(
        after_help = "Examples:\n  escx package inspect mypkg-1.0.0.escx\n  escx package inspect mypkg-1.0.0.escx --json"
    )]
    Inspect(InspectArgs),
    /// Verify, then extract into a new or empty directory.
    #[command(after_help = "\
The whole package is verified before anything is written, then extracted into a staging
directory beside OUT and renamed into place, so a failure leaves OUT untouched. An
encrypted payload (licensed content) needs --wallet with a valid license for the package.

Examples:
  escx package extract mypkg-1.0.0.escx -o ./mypkg --pubkey acme.pub
  escx package extract mypkg-1.0.0.escx -o ./mypkg --policy trust.toml
  escx package extract mypkg-1.0.0.escx -o ./mypkg --pubkey acme.pub --wallet ./wallet")]
    Extract(ExtractArgs),
    /// Add a countersignature (e.g. a build attester) to a package.
    #[command(after_help = "\
Every section is hashed first, so a countersignature is never added to altered bytes.

Examples:
  escx package sign mypkg-1.0.0.escx --key attester.key")]
    Sign(SignArgs),
}

#[derive(Args)]
pub struct PackArgs {
    /// The package directory.
    dir: PathBuf,
    /// Output file.
    #[arg(short, long, value_name = "FILE")]
    out: PathBuf,
    /// Secret key to sign with (repeat for several signers).
    #[arg(long = "key", value_name = "KEY", required = true)]
    keys: Vec<PathBuf>,
    /// Licensed content: encrypt the payload to the issuer of this bundle (issuer.pub);
    /// only holders of its licenses can decrypt. Docs, tests and LICENSE stay readable.
    #[arg(long, value_name = "ISSUER_PUB")]
    encrypt_for: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
}

/// Who to trust: public keys, or a policy file.
#[derive(Args)]
#[command(group(ArgGroup::new("trust").required(true).args(["pubkey", "policy"])))]
pub struct TrustArgs {
    /// Trust this public key (repeatable; one valid signature by any suffices).
    #[arg(long, value_name = "FILE")]
    pubkey: Vec<PathBuf>,
    /// Trust policy file (scopes, thresholds, expiry, revocation, rotation).
    #[arg(long, value_name = "FILE", conflicts_with = "pubkey")]
    policy: Option<PathBuf>,
    /// Evaluate key expiry at this time instead of now (2027-01-01, RFC 3339, or @unix).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

impl TrustArgs {
    fn load(&self) -> anyhow::Result<TrustPolicy> {
        if let Some(path) = &self.policy {
            return TrustPolicy::load(path).map_err(failure::at(path));
        }
        let keys = self
            .pubkey
            .iter()
            .map(|path| keyfile::read_public_key(path).map_err(failure::at(path)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(TrustPolicy::from_keys(keys))
    }

    fn now(&self) -> anyhow::Result<Option<escx::UnixSeconds>> {
        self.at
            .as_deref()
            .map(|text| timestamp::parse(text).map_err(|reason| UsageError(format!("--at: {reason}")).into()))
            .transpose()
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The package.
    file: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Check only these sections (manifest, payload, docs, tests, license, content-key);
    /// repeatable.
    #[arg(long = "section", value_name = "NAME")]
    sections: Vec<String>,
    /// License wallet whose content key decrypts an encrypted payload for checking.
    #[arg(long, value_name = "DIR")]
    wallet: Option<PathBuf>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// The package.
    file: PathBuf,
}

#[derive(Args)]
pub struct ExtractArgs {
    /// The package.
    file: PathBuf,
    /// Target directory (must not exist, or be empty).
    #[arg(short, long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// License wallet holding the content key of an encrypted payload.
    #[arg(long, value_name = "DIR")]
    wallet: Option<PathBuf>,
}

#[derive(Args)]
pub struct SignArgs {
    /// The package (rewritten in place, atomically).
    file: PathBuf,
    /// Secret key of the countersigner.
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
}

pub fn run(command: PackageCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        PackageCommand::Pack(args) => pack(args, ui),
        PackageCommand::Verify(args) => verify(args, ui),
        PackageCommand::Inspect(args) => inspect(args, ui),
        PackageCommand::Extract(args) => extract(args, ui),
        PackageCommand::Sign(args) => sign(args, ui),
    }
}

/// `SOURCE_DATE_EPOCH` (reproducible builds) or now.
fn signing_time() -> anyhow::Result<escx::UnixSeconds> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value.trim().parse().map(escx::UnixSeconds).map_err(|_| {
            UsageError(format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds")).into()
        }),
        Err(_) => Ok(escx::now_unix()),
    }
}

fn pack(args: PackArgs, ui: &Ui) -> anyhow::Result<()> {
    if !args.force && args.out.exists() {
        return Err(failure::exists(&args.out, "pass --force to replace it"));
    }
    // The full schema first, so mistakes anywhere in the manifest are reported with their
    // line and column before any key is unlocked.
    let manifest = crate::cmd::manifest::load(&args.dir)?;
    if manifest.package.description.as_deref() == Some(escx_manifest::template::PLACEHOLDER_DESCRIPTION) {
        ui.warn(
            "manifest.toml still has the template's description; say what the package does in [package] \
             description before publishing (it is signed into the package)",
        );
    }
    let keys =
        args.keys.iter().map(|k| secrets::load_secret_key(k)).collect::<anyhow::Result<Vec<SecretKey>>>()?;
    let key_refs: Vec<&SecretKey> = keys.iter().collect();
    let issuer = args.encrypt_for.as_deref().map(super::common::bundle).transpose()?;
    let progress = ui.progress();
    let options = escx::pack::PackOptions {
        signed_at: Some(signing_time()?),
        overwrite: args.force,
        progress: &progress,
        encrypt_for: issuer.as_ref().map(|c| &c.head().kem_key),
    };
    let report =
        escx::pack::pack_dir(&args.dir, &args.out, &key_refs, &options).map_err(failure::at(&args.dir))?;
    ui.emit(
        &Packed {
            file: &args.out,
            package: PackageRef::of(&report.package),
            root: output::hex(&report.root),
            file_bytes: report.file_bytes,
            sections: report.sections.iter().map(SectionReport::of).collect(),
            signers: report.signers.iter().map(ToString::to_string).collect(),
            encrypted_for: issuer.as_ref().map(|b| b.issuer_id().to_string()),
        },
        || {
            let mut text = format!(
                "packed {} {} -> {} ({})\n  root     {}\n",
                report.package.name,
                report.package.version,
                args.out.display(),
                output::size(report.file_bytes),
                output::hex(&report.root)
            );
            for entry in &report.sections {
                text += &format!("  {}\n", section_line(entry));
            }
            for signer in &report.signers {
                text += &format!("  signed   {signer}\n");
            }
            if let Some(bundle) = &issuer {
                text += &format!(
                    "  payload encrypted for issuer {} ({}); next: escx issuer register-package\n",
                    bundle.head().payload.name,
                    bundle.issuer_id()
                );
            }
            text
        },
    );
    Ok(())
}

fn parse_sections(names: &[String]) -> anyhow::Result<SectionSelection> {
    if names.is_empty() {
        return Ok(SectionSelection::All);
    }
    let kinds = names
        .iter()
        .map(|name| {
            SectionType::from_name(name).ok_or_else(|| {
                UsageError(format!(
                    "unknown section {name:?}; use manifest, payload, docs, tests, license or content-key"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SectionSelection::Only(kinds))
}

fn verify(args: VerifyArgs, ui: &Ui) -> anyhow::Result<()> {
    let policy = args.trust.load()?;
    let selection = parse_sections(&args.sections)?;
    let key = super::common::content_key_for(args.wallet.as_deref(), &args.file)?;
    let progress = ui.progress();
    let options = VerifyOptions {
        sections: &selection,
        now: args.trust.now()?,
        progress: &progress,
        content_key: key.as_ref(),
    };
    let report = escx::verify::verify_file(&args.file, &policy, &options).map_err(failure::at(&args.file))?;
    ui.emit(&verify_json(&args.file, &report, None), || verify_text(&args.file, &report));
    Ok(())
}

fn verify_json<'a>(file: &'a Path, report: &'a VerifyReport, extracted_to: Option<&'a Path>) -> Verified<'a> {
    Verified {
        ok: true,
        file,
        package: PackageRef::of(&report.package),
        root: output::hex(&report.root),
        signatures: report
            .signers
            .iter()
            .map(|s| SignatureReport {
                key_id: s.key_id.to_string(),
                signed_at: timestamp::format_rfc3339(s.signed_at),
                status: match &s.status {
                    SignerStatus::Valid(_) => "valid",
                    SignerStatus::Unknown => "unknown-key",
                },
                key_name: match &s.status {
                    SignerStatus::Valid(name) => Some(name.as_str()),
                    SignerStatus::Unknown => None,
                },
            })
            .collect(),
        policy: &report.decision.rules,
        sections_verified: report
            .sections
            .iter()
            .map(|s| VerifiedSection {
                section: SectionReport::of(&s.entry),
                content_checked: s.content_checked,
                archive: s.archive.map(|a| ArchiveReport {
                    files: a.files,
                    directories: a.directories,
                    symlinks: a.symlinks,
                    file_bytes: a.file_bytes,
                }),
            })
            .collect(),
        sections_skipped: report.skipped.iter().map(|k| k.name()).collect(),
        extracted_to,
    }
}

fn verify_text(file: &Path, report: &VerifyReport) -> String {
    let mut text = format!(
        "verified {} {} ({})\n  root      {}\n",
        report.package.name,
        report.package.version,
        file.display(),
        output::hex(&report.root)
    );
    for signer in &report.signers {
        match &signer.status {
            SignerStatus::Valid(name) if *name == signer.key_id.to_string() => {
                text += &format!("  signature {} valid\n", signer.key_id)
            }
            SignerStatus::Valid(name) => text += &format!("  signature {} valid ({name})\n", signer.key_id),
            SignerStatus::Unknown => {
                text += &format!("  signature {} not checked (key not trusted)\n", signer.key_id)
            }
        }
    }
    for rule in &report.decision.rules {
        text += &format!("  policy    {rule}\n");
    }
    let checked: Vec<String> = report
        .sections
        .iter()
        .map(|s| match s.archive {
            Some(a) => {
                let entries = a.files + a.symlinks;
                format!("{} ({entries} file{})", s.entry.kind.name(), if entries == 1 { "" } else { "s" })
            }
            None => s.entry.kind.name().to_owned(),
        })
        .collect();
    text += &format!("  sections  {}: hashes match\n", checked.join(", "));
    if report.sections.iter().any(|s| !s.content_checked) {
        text += "  encrypted payload: hashes match, content not checked (pass --wallet with a license)\n";
    }
    if !report.skipped.is_empty() {
        let skipped: Vec<&str> = report.skipped.iter().map(|k| k.name()).collect();
        text += &format!("  partial   {} not read\n", skipped.join(", "));
    }
    text
}

fn inspect(args: InspectArgs, ui: &Ui) -> anyhow::Result<()> {
    let mut reader = PackageReader::open_file(&args.file).map_err(failure::at(&args.file))?;
    let manifest = reader.package_id();
    let header = *reader.header();
    let package_json = match &manifest {
        Ok(id) => InspectedPackage::Read(PackageRef::of(id)),
        Err(e) => InspectedPackage::Unreadable { error: e.to_string() },
    };
    let signatures: Vec<InspectedSignature> = reader
        .signatures()
        .iter()
        .map(|b| InspectedSignature {
            algorithm: "ml-dsa-87",
            key_id: b.key_id.to_string(),
            signed_at: timestamp::format_rfc3339(b.signed_at),
        })
        .collect();
    ui.emit(
        &Inspected {
            file: &args.file,
            verified: false,
            format: Format { major: header.major, minor: header.minor },
            file_bytes: reader.file_bytes(),
            body_bytes: header.body_length,
            root: output::hex(reader.root()),
            package: package_json,
            sections: reader.sections().iter().map(SectionReport::of).collect(),
            signatures,
        },
        || {
            let package = match &manifest {
                Ok(id) => format!("{} {}", id.name, id.version),
                Err(e) => format!("(manifest unreadable: {e})"),
            };
            let mut text = format!(
                "{}: escx {}.{} package, {}\n  package  {package}\n  root     {}\n",
                args.file.display(),
                header.major,
                header.minor,
                output::size(reader.file_bytes()),
                output::hex(reader.root())
            );
            for entry in reader.sections() {
                text += &format!("  {}\n", section_line(entry));
            }
            for block in reader.signatures() {
                text += &format!(
                    "  signer   {} at {}\n",
                    block.key_id,
                    timestamp::format_rfc3339(block.signed_at)
                );
            }
            text += "  (not verified: run `escx package verify`)\n";
            text
        },
    );
    Ok(())
}

fn extract(args: ExtractArgs, ui: &Ui) -> anyhow::Result<()> {
    let policy = args.trust.load()?;
    let key = super::common::content_key_for(args.wallet.as_deref(), &args.file)?;
    let progress = ui.progress();
    let options = VerifyOptions {
        now: args.trust.now()?,
        progress: &progress,
        content_key: key.as_ref(),
        ..VerifyOptions::default()
    };
    let report = escx::extract::extract_file(&args.file, &args.out, &policy, &options)
        .map_err(failure::at(&args.file))?;
    ui.emit(&verify_json(&args.file, &report, Some(&args.out)), || {
        format!("{}extracted to {}", verify_text(&args.file, &report), args.out.display())
    });
    Ok(())
}

fn sign(args: SignArgs, ui: &Ui) -> anyhow::Result<()> {
    let key = secrets::load_secret_key(&args.key)?;
    let progress = ui.progress();
    let block = escx::pack::countersign(&args.file, &key, signing_time()?, &progress)
        .map_err(failure::at(&args.file))?;
    ui.emit(
        &Countersigned {
            file: &args.file,
            key_id: block.key_id.to_string(),
            signed_at: block.signed_at.rfc3339(),
        },
        || format!("countersigned {} with {}", args.file.display(), block.key_id),
    );
    Ok(())
}

/// `escx package pack --json` (spec/cli.md).
#[derive(Serialize)]
struct Packed<'a> {
    file: &'a Path,
    package: PackageRef<'a>,
    root: String,
    file_bytes: u64,
    sections: Vec<SectionReport>,
    signers: Vec<String>,
    encrypted_for: Option<String>,
}

/// `escx package verify --json`, and `extract` with `extracted_to`.
#[derive(Serialize)]
struct Verified<'a> {
    ok: bool,
    file: &'a Path,
    package: PackageRef<'a>,
    root: String,
    signatures: Vec<SignatureReport<'a>>,
    policy: &'a [String],
    sections_verified: Vec<VerifiedSection>,
    sections_skipped: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extracted_to: Option<&'a Path>,
}

#[derive(Serialize)]
struct SignatureReport<'a> {
    key_id: String,
    signed_at: String,
    status: &'static str,
    key_name: Option<&'a str>,
}

#[derive(Serialize)]
struct VerifiedSection {
    #[serde(flatten)]
    section: SectionReport,
    content_checked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    archive: Option<ArchiveReport>,
}

#[derive(Serialize)]
struct ArchiveReport {
    files: u64,
    directories: u64,
    symlinks: u64,
    file_bytes: u64,
}

/// `escx package inspect --json`: nothing is verified.
#[derive(Serialize)]
struct Inspected<'a> {
    file: &'a Path,
    verified: bool,
    format: Format,
    file_bytes: u64,
    body_bytes: u64,
    root: String,
    package: InspectedPackage<'a>,
    sections: Vec<SectionReport>,
    signatures: Vec<InspectedSignature>,
}

#[derive(Serialize)]
struct Format {
    major: u16,
    minor: u16,
}

/// The manifest's name and version, or why it could not be read.
#[derive(Serialize)]
#[serde(untagged)]
enum InspectedPackage<'a> {
    Read(PackageRef<'a>),
    Unreadable { error: String },
}

#[derive(Serialize)]
struct InspectedSignature {
    algorithm: &'static str,
    key_id: String,
    signed_at: String,
}

/// `escx package sign --json`.
#[derive(Serialize)]
struct Countersigned<'a> {
    file: &'a Path,
    key_id: String,
    signed_at: String,
}

#[derive(Serialize)]
struct PackageRef<'a> {
    name: &'a str,
    version: String,
}

impl<'a> PackageRef<'a> {
    fn of(id: &'a escx::header::PackageId) -> Self {
        Self { name: &id.name, version: id.version.to_string() }
    }
}

/// One section table entry.
#[derive(Serialize)]
struct SectionReport {
    #[serde(rename = "type")]
    kind: &'static str,
    compressed: bool,
    encrypted: bool,
    offset: u64,
    stored_bytes: u64,
    plain_bytes: u64,
    blake3: String,
}

impl SectionReport {
    fn of(entry: &SectionEntry) -> Self {
        Self {
            kind: entry.kind.name(),
            compressed: entry.is_compressed(),
            encrypted: entry.is_encrypted(),
            offset: entry.offset,
            stored_bytes: entry.stored_length,
            plain_bytes: entry.plain_length,
            blake3: output::hex(&entry.hash),
        }
    }
}

fn section_line(entry: &SectionEntry) -> String {
    let mut layout = if entry.is_compressed() {
        format!("zstd {} -> {}", output::size(entry.plain_length), output::size(entry.stored_length))
    } else {
        output::size(entry.stored_length)
    };
    if entry.is_encrypted() {
        layout += ", encrypted";
    }
    format!("{:<11} {} {layout}", entry.kind.name(), output::hex(&entry.hash))
}
