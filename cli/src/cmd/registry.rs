//! `escx registry ...`

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use escx::keyfile;
use escx::policy::TrustPolicy;
use escx::sig::SecretKey;
use escx_manifest::client;
use escx_manifest::index;
use escx_manifest::registry::{self, DEFAULT_EXPIRY_SECS, Registry};
use semver::Version;
use serde::Serialize;

use super::registry_trust::ClientTrust;
use crate::failure::{self, UsageError};
use crate::output::Ui;
use crate::secrets;

/// Publisher trust file kept in a registry directory.
const PUBLISHERS_FILE: &str = "publishers.toml";

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Create an empty registry (a directory with a signed index).
    #[command(after_help = "\
A registry is a plain directory: index.signed and packages/. Serve it with any static file
server or copy it. Clients pin the registry key (escx install --registry-key registry.pub,
or a [registry] table in their trust policy). --publisher writes publishers.toml, the
policy `publish` uses to decide whose packages to accept.

Examples:
  escx registry init ./reg --key registry.key --publisher acme.pub
  escx registry init ./reg --key reg-a.key --key reg-b.key --expiry-days 3")]
    Init(InitArgs),
    /// Verify a package and add it to the registry (versions are immutable).
    #[command(after_help = "\
The package is verified under --pubkey/--policy, or the registry's publishers.toml, and
its manifest validated; then it is copied in and the index re-signed.

Examples:
  escx registry publish ./reg mypkg-1.0.0.escx --key registry.key
  escx registry publish ./reg mypkg-1.0.0.escx --key registry.key --pubkey acme.pub")]
    Publish(PublishArgs),
    /// Mark a version yanked (skipped by new resolutions), or un-yank it.
    #[command(
        after_help = "Examples:\n  escx registry yank ./reg acme/thermal@1.0.0 --key registry.key\n  escx registry yank ./reg acme/thermal@1.0.0 --key registry.key --undo"
    )]
    Yank(YankArgs),
    /// Search names, descriptions and keywords.
    #[command(after_help = "\
Without trust arguments the index is read without checking its signatures (the output
says so); with them it is verified like any client read.

Examples:
  escx registry search ./reg thermal
  escx registry search ./reg thermal --registry-key registry.pub --json")]
    Search(SearchArgs),
    /// Make a verified local copy (a mirror or cache) of a registry.
    #[command(after_help = "\
The index is verified (signatures, expiry, rollback), every package file is checked
against it, and the signed index is written last, byte for byte: a mirror can serve but
never forge.

Examples:
  escx registry mirror ./reg ./mirror --registry-key registry.pub")]
    Mirror(MirrorArgs),
    /// Publish a license issuer's current bundle in the signed index (the channel every
    /// customer reads, so an issuer cannot show one customer keys nobody else sees).
    #[command(after_help = "\
The chain is verified; its head must extend the head listed so far (never another history).
Wallets then buy only under the listed head: escx license request ... --registry ./reg
--registry-key registry.pub.

Examples:
  escx issuer publish ./issuer -o issuer.pub
  escx registry issuer ./reg issuer.pub --key registry.key")]
    Issuer(IssuerArgs),
    /// Re-sign the index with a fresh expiry (run periodically; clients refuse a stale index).
    #[command(after_help = "Examples:\n  escx registry refresh ./reg --key registry.key --expiry-days 7")]
    Refresh(RefreshArgs),
}

#[derive(Args)]
pub struct SigningArgs {
    /// Registry signing key (repeat for k-of-n signed indexes).
    #[arg(long = "key", value_name = "KEY", required = true)]
    keys: Vec<PathBuf>,
    /// Days until the index expires.
    #[arg(long = "expiry-days", value_name = "DAYS", default_value_t = DEFAULT_EXPIRY_SECS / 86_400)]
    expiry_days: u64,
}

impl SigningArgs {
    fn load(&self) -> anyhow::Result<Vec<SecretKey>> {
        self.keys.iter().map(|k| secrets::load_secret_key(k)).collect()
    }

    fn expiry_secs(&self) -> anyhow::Result<u64> {
        if !(1..=366).contains(&self.expiry_days) {
            return Err(UsageError("--expiry-days must be 1 to 366".into()).into());
        }
        Ok(self.expiry_days * 86_400)
    }
}

#[derive(Args)]
pub struct InitArgs {
    /// Registry directory (must not exist or be empty).
    dir: PathBuf,
    #[command(flatten)]
    signing: SigningArgs,
    /// Accept packages signed by this key (repeatable); written to publishers.toml.
    #[arg(long = "publisher", value_name = "FILE")]
    publishers: Vec<PathBuf>,
}

#[derive(Args)]
pub struct PublishArgs {
    /// Registry directory.
    dir: PathBuf,
    /// The package.
    package: PathBuf,
    #[command(flatten)]
    signing: SigningArgs,
    /// Accept the package if signed by this key (instead of publishers.toml).
    #[arg(long, value_name = "FILE")]
    pubkey: Vec<PathBuf>,
    /// Accept the package under this policy (instead of publishers.toml).
    #[arg(long, value_name = "FILE", conflicts_with = "pubkey")]
    policy: Option<PathBuf>,
}

#[derive(Args)]
pub struct YankArgs {
    /// Registry directory.
    dir: PathBuf,
    /// NAME@VERSION.
    spec: String,
    #[command(flatten)]
    signing: SigningArgs,
    /// Un-yank instead.
    #[arg(long)]
    undo: bool,
}

#[derive(Args)]
pub struct SearchArgs {
    /// Registry (or mirror) directory.
    dir: PathBuf,
    /// Text to look for.
    query: String,
    /// Registry key to verify the index with (optional; see help).
    #[arg(long = "registry-key", value_name = "FILE")]
    registry_key: Vec<PathBuf>,
}

#[derive(Args)]
pub struct MirrorArgs {
    /// Source registry.
    source: PathBuf,
    /// Destination directory.
    destination: PathBuf,
    #[command(flatten)]
    trust: ClientTrust,
}

#[derive(Args)]
pub struct IssuerArgs {
    /// Registry directory.
    dir: PathBuf,
    /// The issuer's bundle chain (from `escx issuer publish`).
    chain: PathBuf,
    #[command(flatten)]
    signing: SigningArgs,
}

#[derive(Args)]
pub struct RefreshArgs {
    /// Registry directory.
    dir: PathBuf,
    #[command(flatten)]
    signing: SigningArgs,
}

pub fn run(command: RegistryCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        RegistryCommand::Init(args) => init(args, ui),
        RegistryCommand::Publish(args) => publish(args, ui),
        RegistryCommand::Yank(args) => yank(args, ui),
        RegistryCommand::Search(args) => search(args, ui),
        RegistryCommand::Mirror(args) => mirror(args, ui),
        RegistryCommand::Refresh(args) => refresh(args, ui),
        RegistryCommand::Issuer(args) => issuer(args, ui),
    }
}

fn refs(keys: &[SecretKey]) -> Vec<&SecretKey> {
    keys.iter().collect()
}

fn init(args: InitArgs, ui: &Ui) -> anyhow::Result<()> {
    let keys = args.signing.load()?;
    let now = escx::now_unix();
    Registry::init(&args.dir, &refs(&keys), now, args.signing.expiry_secs()?)?;
    if !args.publishers.is_empty() {
        let mut text = String::from(
            "# Whose packages `escx registry publish` accepts (spec/trust-policy.md).\nversion = 1\n",
        );
        let mut names = Vec::new();
        for (i, path) in args.publishers.iter().enumerate() {
            let key = keyfile::read_public_key(path).map_err(failure::at(path))?;
            let name = format!("publisher-{}", i + 1);
            text += &format!("\n[[key]]\nname = \"{name}\"\npublic_key = \"{}\"\n", public_line(&key));
            names.push(format!("\"{name}\""));
        }
        text += &format!("\n[[scope]]\npackages = \"**\"\nkeys = [{}]\n", names.join(", "));
        let path = args.dir.join(PUBLISHERS_FILE);
        std::fs::write(&path, text).map_err(|e| escx::Error::io(&path, e)).map_err(failure::at(&path))?;
    }
    let signers: Vec<String> = keys.iter().map(|k| k.id().to_string()).collect();
    ui.emit(&Created { dir: &args.dir, index_version: 1, signers: &signers }, || {
        format!("created registry {} (index version 1, signed by {})", args.dir.display(), signers.join(", "))
    });
    Ok(())
}

fn public_line(key: &escx::sig::PublicKey) -> String {
    keyfile::public_key_text(key).lines().last().unwrap_or_default().to_owned()
}

fn publisher_policy(args: &PublishArgs) -> anyhow::Result<TrustPolicy> {
    if let Some(path) = &args.policy {
        return TrustPolicy::load(path).map_err(failure::at(path));
    }
    if !args.pubkey.is_empty() {
        return Ok(TrustPolicy::from_keys(super::registry_trust::read_public_keys(&args.pubkey)?));
    }
    let path = args.dir.join(PUBLISHERS_FILE);
    if !path.exists() {
        return Err(UsageError(format!(
            "no publisher trust: pass --pubkey or --policy, or create {} (escx registry init --publisher KEY.pub)",
            path.display()
        ))
        .into());
    }
    TrustPolicy::load(&path).map_err(failure::at(&path))
}

fn publish(args: PublishArgs, ui: &Ui) -> anyhow::Result<()> {
    let publishers = publisher_policy(&args)?;
    let keys = args.signing.load()?;
    let registry = Registry::open(&args.dir)?;
    let now = escx::now_unix();
    let expiry = args.signing.expiry_secs()?;
    let (name, entry) =
        registry.publish(&args.package, &publishers, &refs(&keys), now, expiry).map_err(|e| {
            // Name the package file unless the error already does (an I/O error names its path).
            let message = e.to_string();
            let file = args.package.display().to_string();
            let error = anyhow::Error::new(e);
            if message.contains(&file) { error } else { error.context(file) }
        })?;
    let index = registry.current_index(&refs(&keys))?;
    ui.emit(
        &Published {
            name: &name,
            version: &entry.version,
            blake3: entry.blake3_hex(),
            size: entry.size,
            publisher_key_id: entry.publisher().to_string(),
            index_version: index.version,
        },
        || {
            format!(
                "published {name} {} (index version {}, publisher key {})",
                entry.version,
                index.version,
                entry.publisher()
            )
        },
    );
    Ok(())
}

fn yank(args: YankArgs, ui: &Ui) -> anyhow::Result<()> {
    let (name, version) = args
        .spec
        .rsplit_once('@')
        .ok_or_else(|| UsageError(format!("{:?}: write NAME@VERSION, e.g. acme/thermal@1.0.0", args.spec)))?;
    let version =
        Version::parse(version).map_err(|e| UsageError(format!("{version:?} is not a version: {e}")))?;
    let keys = args.signing.load()?;
    let registry = Registry::open(&args.dir)?;
    registry.set_yanked(
        name,
        &version,
        !args.undo,
        &refs(&keys),
        escx::now_unix(),
        args.signing.expiry_secs()?,
    )?;
    let verb = if args.undo { "un-yanked" } else { "yanked" };
    ui.emit(&Yanked { name, version: version.to_string(), yanked: !args.undo }, || {
        format!("{verb} {name} {version}")
    });
    Ok(())
}

fn search(args: SearchArgs, ui: &Ui) -> anyhow::Result<()> {
    let (index, verified) = if args.registry_key.is_empty() {
        let (_, envelope) = index::read_signed(&args.dir)?;
        let index = index::Index::from_cbor(envelope.payload_unverified()).map_err(|reason| {
            escx_manifest::Error::IndexInvalid { path: args.dir.join(index::INDEX_FILE), reason }
        })?;
        (index, false)
    } else {
        let policy = super::registry_trust::registry_policy(&args.registry_key)?;
        let state = client::StateDir::default_location();
        (client::load_index(&args.dir, &policy, &state, escx::now_unix())?.index, true)
    };
    let hits = registry::search(&index, &args.query);
    ui.emit(&Searched { verified, index_version: index.version, results: &hits }, || {
        let mut table = crate::output::Table::new(&[crate::output::Align::Left; 3]);
        for hit in &hits {
            let yanked = if hit.all_yanked { " (yanked)" } else { "" };
            table.row([hit.name.to_string(), format!("{}{yanked}", hit.version), hit.description.clone()]);
        }
        let mut text = table.render("");
        if hits.is_empty() {
            text += &format!("no package matches {:?}\n", args.query);
        }
        if !verified {
            text += "(index signatures not checked; pass --registry-key to verify)\n";
        }
        text
    });
    Ok(())
}

fn mirror(args: MirrorArgs, ui: &Ui) -> anyhow::Result<()> {
    let policy = args.trust.policy()?;
    let report =
        client::mirror(&args.source, &args.destination, &policy, &args.trust.state(), args.trust.now()?)?;
    ui.emit(
        &Mirrored {
            source: &args.source,
            destination: &args.destination,
            index_version: report.index_version,
            copied: report.copied,
            unchanged: report.unchanged,
        },
        || {
            format!(
                "mirrored {} -> {}: index version {}, {} package files copied, {} already up to date",
                args.source.display(),
                args.destination.display(),
                report.index_version,
                report.copied,
                report.unchanged
            )
        },
    );
    Ok(())
}

fn refresh(args: RefreshArgs, ui: &Ui) -> anyhow::Result<()> {
    let keys = args.signing.load()?;
    let registry = Registry::open(&args.dir)?;
    let index = registry.refresh(&refs(&keys), escx::now_unix(), args.signing.expiry_secs()?)?;
    let expires = escx::timestamp::format_rfc3339(index.expires_at);
    ui.emit(&Refreshed { index_version: index.version, expires_at: &expires }, || {
        format!("re-signed index version {}, valid until {expires}", index.version)
    });
    Ok(())
}

fn issuer(args: IssuerArgs, ui: &Ui) -> anyhow::Result<()> {
    let chain = super::common::bundle(&args.chain)?;
    let head = chain.head();
    let keys = args.signing.load()?;
    let registry = Registry::open(&args.dir)?;
    let entry = index::IndexIssuer {
        id: serde_bytes::ByteBuf::from(chain.issuer_id().0.to_vec()),
        version: head.version(),
        hash: serde_bytes::ByteBuf::from(head.hash.to_vec()),
    };
    let refused = |reason: String| escx_manifest::Error::IssuerHead { path: args.chain.clone(), reason };
    let index = registry.set_issuer(
        entry,
        |listed| match listed {
            None => Ok(()),
            Some(listed) => match chain.version(listed.version) {
                Some(bundle) if bundle.hash == listed.hash_bytes() => Ok(()),
                Some(_) => Err(refused(format!(
                    "the chain differs from the published one at version {}: another history, refused",
                    listed.version
                ))),
                None => Err(refused(format!(
                    "the chain ends at version {}, before the published version {}: a rollback, refused",
                    head.version(),
                    listed.version
                ))),
            },
        },
        &refs(&keys),
        escx::now_unix(),
        args.signing.expiry_secs()?,
    )?;
    ui.emit(
        &IssuerPublished {
            issuer_id: chain.issuer_id().to_string(),
            bundle_version: head.version(),
            bundle_hash: hex::encode(head.hash),
            index_version: index.version,
        },
        || {
            format!(
                "published issuer {} bundle version {} (index version {})",
                chain.issuer_id(),
                head.version(),
                index.version
            )
        },
    );
    Ok(())
}

/// `escx registry init --json` (spec/cli.md).
#[derive(Serialize)]
struct Created<'a> {
    dir: &'a Path,
    index_version: u64,
    signers: &'a [String],
}

/// `escx registry publish --json`.
#[derive(Serialize)]
struct Published<'a> {
    name: &'a str,
    version: &'a str,
    blake3: String,
    size: u64,
    publisher_key_id: String,
    index_version: u64,
}

/// `escx registry yank --json`.
#[derive(Serialize)]
struct Yanked<'a> {
    name: &'a str,
    version: String,
    yanked: bool,
}

/// `escx registry search --json`: the hits as `{name, version, description, all_yanked}`.
#[derive(Serialize)]
struct Searched<'a> {
    verified: bool,
    index_version: u64,
    results: &'a [registry::SearchHit],
}

/// `escx registry mirror --json`.
#[derive(Serialize)]
struct Mirrored<'a> {
    source: &'a Path,
    destination: &'a Path,
    index_version: u64,
    copied: usize,
    unchanged: usize,
}

/// `escx registry refresh --json`.
#[derive(Serialize)]
struct Refreshed<'a> {
    index_version: u64,
    expires_at: &'a str,
}

/// `escx registry issuer --json`.
#[derive(Serialize)]
struct IssuerPublished {
    issuer_id: String,
    bundle_version: u64,
    bundle_hash: String,
    index_version: u64,
}
