//! `escx issuer ...`: the licensing service's side, every message a file, so any
//! transport can carry them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use escx::header::PackageName;
use escx::keyfile::{Argon2Params, Protection};
use escx_licensing::issuer::{Issuer, SqlIssuerStore};
use escx_licensing::messages::{SealedRedeemRequest, TokenRequest};
use serde::Serialize;

use crate::failure::UsageError;
use crate::output::{Ui, Written};
use crate::secrets;

use super::common::*;

#[derive(Subcommand)]
pub enum IssuerCommand {
    /// Create an issuer: ML-DSA-87 signing key, POPRF seed, ML-KEM-1024 key, first epoch, store.
    #[command(
        after_help = "The store is the directory's SQLite file, or with --database a PostgreSQL database that several\nservice nodes share (each node holds a copy of the directory: its keys and database.url).\n\nExamples:\n  escx issuer init ./issuer --name \"Acme Licensing\"\n  escx issuer init ./issuer --unencrypted\n  escx issuer init ./issuer --database 'postgresql:///escx?host=/run/postgresql'"
    )]
    Init(IssuerInitArgs),
    /// Write the signed public bundle customers verify everything against.
    #[command(after_help = "Examples:\n  escx issuer publish ./issuer -o issuer.pub")]
    Publish(IssuerOutArgs),
    /// Add the next POPRF key epoch (starting when the newest ends); publish afterwards.
    #[command(after_help = "\
Epochs never overlap, so one key is in force at a time for every customer. The next
`escx issuer publish` signs a new bundle version naming the previous one; publish its
head in the registry with `escx registry issuer`.

Examples:
  escx issuer epoch ./issuer
  escx issuer epoch ./issuer --days 30")]
    Epoch(EpochArgs),
    /// Sell every [pricing] tier of a package (read from the package's signed manifest).
    #[command(
        after_help = "Examples:\n  escx issuer register-package ./issuer mypkg-1.0.0.escx --pubkey acme.pub"
    )]
    RegisterPackage(RegisterArgs),
    /// Answer a purchase: evaluate the blinded tokens, record the sale.
    #[command(after_help = "Examples:\n  escx issuer issue ./issuer req.cbor -o resp.cbor")]
    Issue(IssuerMessageArgs),
    /// Redeem a sealed token into a license certificate sealed to the holder.
    #[command(after_help = "Examples:\n  escx issuer redeem ./issuer redeem.sealed -o license.sealed")]
    Redeem(IssuerMessageArgs),
    /// Answer a holder's key request: a later file's content key, wrapped to its license.
    #[command(after_help = "\
A license whose versions cover a file registered after it was issued gets that file's key
without spending another token (spec/licensing.md §8.1). Nothing is recorded: the answer
opens only with the license's holder key.

Examples:
  escx issuer content-key ./issuer keyreq.cbor -o key.cbor")]
    ContentKey(IssuerMessageArgs),
    /// Revoke a license (publish a new CRL afterwards).
    #[command(after_help = "Examples:\n  escx issuer revoke ./issuer 3f2a...e1 --reason \"chargeback\"")]
    Revoke(RevokeArgs),
    /// Sign a new certificate revocation list.
    #[command(after_help = "Examples:\n  escx issuer crl ./issuer -o crl.cbor")]
    Crl(IssuerOutArgs),
    /// Show a published issuer bundle chain: the issuer, its versions and key epochs.
    #[command(after_help = "\
The chain is checked as a wallet checks it (every version signed by the issuer's key,
linked to the one before, epochs never changed): a chain that is not is refused.

Examples:
  escx issuer show issuer.pub
  escx issuer show issuer.pub --json")]
    Show(ShowBundleArgs),
    /// List sale events (the input of settlement).
    #[command(
        after_help = "With --events, prints the sales as billing events (spec/settlement.md §1) for `escx settle run`.\n\nExamples:\n  escx issuer sales ./issuer --json\n  escx issuer sales ./issuer --events > events.json"
    )]
    Sales(SalesArgs),
    /// Purchase accounts for `escx serve`: each gets a bearer token (stored hashed).
    #[command(subcommand)]
    Account(AccountCommand),
}

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Create an account and print its bearer token (shown once; the issuer keeps its hash).
    #[command(after_help = "\
The token authorizes purchases at POST /v1/purchase (spec/service.md §3); redemption
needs none. Keep it secret: anyone holding it buys at the account's expense.

Examples:
  escx issuer account add ./issuer alice
  escx issuer account add ./issuer alice --json")]
    Add(AccountAddArgs),
    /// List the purchase accounts (names only: the issuer keeps no token).
    #[command(
        after_help = "Examples:\n  escx issuer account list ./issuer\n  escx issuer account list ./issuer --json"
    )]
    List(IssuerDirArgs),
    /// Revoke an account: its token is refused from the next purchase on, on every node.
    #[command(after_help = "\
Use it when a token leaked or a customer leaves; past sales keep the account's name. To
give the customer a new token, add the account again.

Examples:
  escx issuer account revoke ./issuer alice
  escx issuer account revoke ./issuer alice && escx issuer account add ./issuer alice")]
    Revoke(AccountAddArgs),
}

#[derive(Serialize)]
struct Accounts<'a> {
    accounts: &'a [String],
}

#[derive(Serialize)]
struct AccountRevoked<'a> {
    account: &'a str,
    revoked: bool,
}

fn issuer_account_list(args: IssuerDirArgs, ui: &Ui) -> anyhow::Result<()> {
    let accounts = open_issuer(&args.dir)?.accounts()?;
    ui.emit(&Accounts { accounts: &accounts }, || {
        if accounts.is_empty() { "no accounts".into() } else { accounts.join("\n") }
    });
    Ok(())
}

fn issuer_account_revoke(args: AccountAddArgs, ui: &Ui) -> anyhow::Result<()> {
    open_issuer(&args.dir)?.revoke_account(&args.name)?;
    ui.emit(&AccountRevoked { account: &args.name, revoked: true }, || {
        format!("account {} revoked: its token buys nothing from now on", args.name)
    });
    Ok(())
}

#[derive(clap::Args)]
pub struct AccountAddArgs {
    /// Issuer directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Account name (1 to 128 characters).
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Serialize)]
struct AccountAdded<'a> {
    account: &'a str,
    token: &'a str,
}

fn issuer_account_add(args: AccountAddArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let token = open_issuer(&args.dir)?.add_account(&args.name, now)?;
    // The token is shown once and kept nowhere: printed even with -q.
    ui.emit_always(&AccountAdded { account: &args.name, token: &token }, || {
        format!(
            "account {}: token {}\nshown once: give it to the customer (--account-token); the issuer keeps only its hash",
            args.name,
            token.as_str()
        )
    });
    Ok(())
}

#[derive(Args)]
pub struct IssuerInitArgs {
    /// Issuer directory (must not exist or be empty).
    dir: PathBuf,
    /// Display name in the bundle.
    #[arg(long, default_value = "escx issuer")]
    name: String,
    /// Store the signing key and POPRF seed without a passphrase.
    #[arg(long)]
    unencrypted: bool,
    /// Keep the store in this PostgreSQL database (postgres://...) instead of a SQLite
    /// file in the directory; written to DIR/database.url.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

#[derive(Args)]
pub struct IssuerDirArgs {
    /// Issuer directory.
    dir: PathBuf,
}

#[derive(Args)]
pub struct EpochArgs {
    /// Issuer directory.
    dir: PathBuf,
    /// Length of the epoch in days.
    #[arg(long, default_value_t = escx_licensing::issuer::EPOCH_SECS / 86_400)]
    days: u64,
}

#[derive(Args)]
pub struct SalesArgs {
    /// Issuer directory.
    dir: PathBuf,
    /// Print the sales as a JSON array of billing events, the input of `escx settle run`.
    #[arg(long, conflicts_with = "json")]
    events: bool,
}

#[derive(Args)]
pub struct IssuerOutArgs {
    /// Issuer directory.
    dir: PathBuf,
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
pub struct IssuerMessageArgs {
    /// Issuer directory.
    dir: PathBuf,
    /// The customer's message.
    input: PathBuf,
    /// Where to write the answer.
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
pub struct RegisterArgs {
    /// Issuer directory.
    dir: PathBuf,
    /// The package.
    package: PathBuf,
    /// Publisher key the package must be signed by.
    #[arg(long, value_name = "FILE", required = true)]
    pubkey: Vec<PathBuf>,
}

#[derive(Args)]
pub struct RevokeArgs {
    /// Issuer directory.
    dir: PathBuf,
    /// License id (32 hex digits).
    license_id: String,
    /// Why (recorded in the CRL).
    #[arg(long)]
    reason: String,
}

pub(crate) fn open_issuer(dir: &Path) -> anyhow::Result<Issuer<SqlIssuerStore>> {
    let key = dir.join(escx_licensing::issuer::SIGNING_KEY_FILE);
    Issuer::open(dir, || secrets::passphrase_for(&key))
        .with_context(|| format!("opening issuer {}", dir.display()))
}

pub fn run_issuer(command: IssuerCommand, ui: &Ui) -> anyhow::Result<()> {
    let now = escx::now_unix();
    match command {
        IssuerCommand::Init(args) => issuer_init(args, ui, now),
        IssuerCommand::Publish(args) => issuer_publish(args, ui, now),
        IssuerCommand::Epoch(args) => issuer_epoch(args, ui, now),
        IssuerCommand::RegisterPackage(args) => issuer_register_package(args, ui, now),
        IssuerCommand::Issue(args) => issuer_issue(args, ui, now),
        IssuerCommand::Redeem(args) => issuer_redeem(args, ui, now),
        IssuerCommand::ContentKey(args) => issuer_content_key(args, ui, now),
        IssuerCommand::Revoke(args) => issuer_revoke(args, ui, now),
        IssuerCommand::Crl(args) => issuer_crl(args, ui, now),
        IssuerCommand::Show(args) => issuer_show(args, ui, now),
        IssuerCommand::Sales(args) => issuer_sales(args, ui),
        IssuerCommand::Account(AccountCommand::Add(args)) => issuer_account_add(args, ui, now),
        IssuerCommand::Account(AccountCommand::List(args)) => issuer_account_list(args, ui),
        IssuerCommand::Account(AccountCommand::Revoke(args)) => issuer_account_revoke(args, ui),
    }
}

fn issuer_init(args: IssuerInitArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let protection = if args.unencrypted {
        Protection::Unencrypted
    } else {
        let key = args.dir.join(escx_licensing::issuer::SIGNING_KEY_FILE);
        Protection::Passphrase(secrets::new_passphrase(&key)?, Argon2Params::DEFAULT)
    };
    let id = match &args.database {
        Some(url) => Issuer::init_postgres(&args.dir, url, &args.name, &protection, now)?.signing_key().id(),
        None => Issuer::init(&args.dir, &args.name, &protection, now)?.signing_key().id(),
    }
    .to_string();
    ui.emit(&IssuerCreated { dir: &args.dir, issuer_id: &id, name: &args.name }, || {
        format!("created issuer {:?} in {} (issuer id {id})", args.name, args.dir.display())
    });
    Ok(())
}

fn issuer_publish(args: IssuerOutArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let chain = open_issuer(&args.dir)?.bundle(now)?;
    args.output.write(&chain.to_cbor())?;
    let head = chain.head();
    let epochs: Vec<u32> = head.payload.epochs.iter().map(|e| e.epoch).collect();
    ui.emit(
        &BundlePublished {
            file: &args.output.out,
            issuer_id: chain.issuer_id().to_string(),
            version: head.version(),
            hash: hex::encode(head.hash),
            epochs: &epochs,
        },
        || {
            format!(
                "wrote {} (issuer {}, bundle version {}, epochs {epochs:?}); publish its head in the registry with `escx registry issuer`",
                args.output.out.display(),
                chain.issuer_id(),
                head.version()
            )
        },
    );
    Ok(())
}

fn issuer_epoch(args: EpochArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    if !(1..=3660).contains(&args.days) {
        return Err(UsageError("--days must be 1 to 3660".into()).into());
    }
    let epoch = open_issuer(&args.dir)?.add_epoch(now, args.days * 86_400)?;
    ui.emit(&EpochAdded { epoch, days: args.days }, || {
        format!(
            "added POPRF epoch {epoch} ({}); run `escx issuer publish` to sign the new bundle version",
            crate::output::count(args.days, "day")
        )
    });
    Ok(())
}

fn issuer_register_package(args: RegisterArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let policy = escx::policy::TrustPolicy::from_keys(super::registry_trust::read_public_keys(&args.pubkey)?);
    let issuer = open_issuer(&args.dir)?;
    let registration = issuer
        .register_package(&args.package, &policy, now)
        .with_context(|| args.package.display().to_string())?;
    let tiers: Vec<OfferReport> = registration
        .offers
        .iter()
        .map(|o| OfferReport { tier: &o.tier, price: o.price_micros.to_string(), unit: &o.unit })
        .collect();
    let owners: Vec<String> = registration.owners.iter().map(|k| k.to_string()).collect();
    ui.emit(
        &PackageRegistered {
            package: &registration.package,
            version: &registration.version,
            tiers,
            content_key: registration.content_key,
            scope: &registration.scope,
            owners: &owners,
            claimed: registration.claimed,
        },
        || {
            let count = registration.offers.len();
            let mut text = format!(
                "{} is for sale in {count} tier{}",
                registration.package,
                if count == 1 { "" } else { "s" }
            );
            if registration.content_key {
                text += &format!(
                    "; licenses issued from now on carry the content key of {} {}",
                    registration.package, registration.version
                );
            }
            if registration.claimed {
                text += &format!(
                    "\n{} is now owned by {}: only packages signed by an owner key can be sold under it",
                    registration.scope,
                    owners.join(", ")
                );
            }
            text
        },
    );
    Ok(())
}

fn issuer_issue(args: IssuerMessageArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let request =
        TokenRequest::from_cbor(&read(&args.input)?).with_context(|| args.input.display().to_string())?;
    let response = open_issuer(&args.dir)?.issue(&request, now)?;
    args.output.write(&response.to_cbor())?;
    ui.emit(
        &Issued {
            package: &request.package,
            tier: &request.tier,
            epoch: request.epoch,
            count: request.blinded.len(),
        },
        || {
            format!(
                "issued {} {} {} {} -> {}",
                request.blinded.len(),
                request.package,
                request.tier,
                crate::output::noun(request.blinded.len(), "token"),
                args.output.out.display()
            )
        },
    );
    Ok(())
}

fn issuer_redeem(args: IssuerMessageArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let answer = open_issuer(&args.dir)?
        .redeem(&SealedRedeemRequest::from_bytes(read(&args.input)?), now)
        .with_context(|| args.input.display().to_string())?;
    args.output.write(answer.as_bytes())?;
    ui.emit(&Written { file: &args.output.out }, || {
        format!("license sealed to the holder -> {}", args.output.out.display())
    });
    Ok(())
}

fn issuer_content_key(args: IssuerMessageArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let answer = open_issuer(&args.dir)?
        .content_key_for(&read(&args.input)?, now)
        .with_context(|| args.input.display().to_string())?;
    args.output.write(&answer)?;
    ui.emit(&Written { file: &args.output.out }, || {
        format!("content key wrapped to the license's holder -> {}", args.output.out.display())
    });
    Ok(())
}

fn issuer_revoke(args: RevokeArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let id = hex_arg(&args.license_id, "license-id")?;
    open_issuer(&args.dir)?.revoke(&id, &args.reason, now)?;
    ui.emit(&Revoked { license_id: &args.license_id, reason: &args.reason }, || {
        format!("revoked {} ({}); publish a new CRL with `escx issuer crl`", args.license_id, args.reason)
    });
    Ok(())
}

fn issuer_crl(args: IssuerOutArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let crl = open_issuer(&args.dir)?.crl(now)?;
    args.output.write(&crl)?;
    ui.emit(&Written { file: &args.output.out }, || format!("wrote {}", args.output.out.display()));
    Ok(())
}

fn issuer_sales(args: SalesArgs, ui: &Ui) -> anyhow::Result<()> {
    let issuer = open_issuer(&args.dir)?;
    let sales = issuer.sales()?;
    if args.events {
        let id = issuer.signing_key().id().to_string();
        let events: Vec<serde_json::Value> = sales
            .iter()
            .map(|s| escx_settlement::events::BillingEvent::from_sale(&id, s).to_json())
            .collect();
        crate::output::print_line(&serde_json::to_string_pretty(&events)?);
        return Ok(());
    }
    ui.emit(&Sales { sales: &sales }, || {
        sales
            .iter()
            .map(|s| {
                format!(
                    "#{} {} {} x{} = {} {} at {}\n",
                    s.id,
                    s.package,
                    s.tier,
                    s.count,
                    s.total_micros,
                    s.currency,
                    escx::timestamp::format_rfc3339(s.at)
                )
            })
            .collect()
    });
    Ok(())
}

#[derive(Args)]
pub struct ShowBundleArgs {
    /// The issuer's public bundle chain (what `escx issuer publish` writes).
    file: PathBuf,
}

fn issuer_show(args: ShowBundleArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let chain = bundle(&args.file)?;
    let head = chain.head();
    let report = BundleShown {
        file: &args.file,
        issuer_id: chain.issuer_id().to_string(),
        name: &head.payload.name,
        version: head.version(),
        hash: hex::encode(head.hash),
        issued_at: head.payload.issued_at.rfc3339(),
        epochs: head
            .payload
            .epochs
            .iter()
            .map(|e| EpochShown {
                epoch: e.epoch,
                not_before: e.not_before.rfc3339(),
                not_after: e.not_after.rfc3339(),
                current: e.not_before <= now && now < e.not_after,
            })
            .collect(),
    };
    ui.emit(&report, || {
        let mut text = format!(
            "{}: issuer {} ({}), bundle version {} ({}), issued {}\n",
            args.file.display(),
            report.name,
            report.issuer_id,
            report.version,
            &report.hash[..16],
            report.issued_at
        );
        for e in &report.epochs {
            let current = if e.current { "  (current)" } else { "" };
            text += &format!("  epoch {:<4} {} .. {}{current}\n", e.epoch, e.not_before, e.not_after);
        }
        text
    });
    Ok(())
}

/// `escx issuer show --json` (spec/cli.md).
#[derive(Serialize)]
struct BundleShown<'a> {
    file: &'a Path,
    issuer_id: String,
    name: &'a str,
    version: u64,
    hash: String,
    issued_at: String,
    epochs: Vec<EpochShown>,
}

#[derive(Serialize)]
struct EpochShown {
    epoch: u32,
    not_before: String,
    not_after: String,
    current: bool,
}

/// `escx issuer init --json` (spec/cli.md).
#[derive(Serialize)]
struct IssuerCreated<'a> {
    dir: &'a Path,
    issuer_id: &'a str,
    name: &'a str,
}

/// `escx issuer publish --json`.
#[derive(Serialize)]
struct BundlePublished<'a> {
    file: &'a Path,
    issuer_id: String,
    version: u64,
    hash: String,
    epochs: &'a [u32],
}

/// `escx issuer epoch --json`.
#[derive(Serialize)]
struct EpochAdded {
    epoch: u32,
    days: u64,
}

/// `escx issuer register-package --json`.
#[derive(Serialize)]
struct PackageRegistered<'a> {
    package: &'a PackageName,
    version: &'a str,
    tiers: Vec<OfferReport<'a>>,
    content_key: bool,
    scope: &'a str,
    owners: &'a [String],
    claimed: bool,
}

#[derive(Serialize)]
struct OfferReport<'a> {
    tier: &'a str,
    price: String,
    unit: &'a str,
}

/// `escx issuer issue --json`.
#[derive(Serialize)]
struct Issued<'a> {
    package: &'a PackageName,
    tier: &'a str,
    epoch: u32,
    count: usize,
}

/// `escx issuer revoke --json`.
#[derive(Serialize)]
struct Revoked<'a> {
    license_id: &'a str,
    reason: &'a str,
}

/// `escx issuer sales --json`.
#[derive(Serialize)]
struct Sales<'a> {
    sales: &'a [escx_licensing::issuer::Sale],
}
