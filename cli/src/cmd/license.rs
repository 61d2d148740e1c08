//! `escx license ...`: the customer's wallet. Every message is a file, so any transport
//! can carry them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use escx::header::PackageName;
use escx_licensing::messages::{ReceiveKey, SealedLicense, SealedTransfer, TokenResponse};
use escx_licensing::verify;
use escx_licensing::wallet::Wallet;
use serde::Serialize;

use crate::failure::{self, UsageError};
use crate::output::{Ui, Written};

use super::common::*;

#[derive(Subcommand)]
pub enum LicenseCommand {
    /// Start a purchase: blind fresh token inputs and write the request for the issuer.
    #[command(after_help = "\
The issuer learns who pays and for which package and tier, never the token inputs.

Examples:
  escx license request --issuer issuer.pub --package acme/thermal --tier standard --count 3 --wallet ./wallet -o req.cbor")]
    Request(RequestArgs),
    /// Buy tokens at an issuer service: request, purchase and finalize in one step.
    #[command(after_help = "\
The purchase is authenticated by the account token (spec/service.md §3); the issuer still
never sees the token inputs. A purchase whose answer was lost waits in the wallet's
outbox and is resent by the next buy of the same package and tier (one sale, never two).

Examples:
  escx license buy --server http://127.0.0.1:8440 --package acme/thermal --tier standard --count 3 --wallet ./wallet --account-token T
  ESCX_ACCOUNT_TOKEN=T escx license buy --server https://licensing.example --package acme/thermal --tier standard --wallet ./wallet")]
    Buy(crate::cmd::online::BuyArgs),
    /// Fetch the issuer service's newest CRL into the wallet.
    #[command(after_help = "Examples:\n  escx license crl --server http://127.0.0.1:8440 --wallet ./wallet")]
    Crl(crate::cmd::online::CrlArgs),
    /// Check the issuer's proof and store the tokens.
    #[command(after_help = "Examples:\n  escx license finalize resp.cbor --wallet ./wallet")]
    Finalize(WalletFileArgs),
    /// Spend a token: a request sealed to the issuer with fresh holder keys.
    #[command(after_help = "\
With --server the request goes to the issuer service and the license it answers with is
installed; a redemption whose answer was lost is resent (its token is spent already).

Examples:
  escx license redeem --wallet ./wallet --package acme/thermal -o redeem.sealed
  escx license redeem --server http://127.0.0.1:8440 --wallet ./wallet --package acme/thermal")]
    Redeem(RedeemViaArgs),
    /// Get the content key of a package file a license covers, without another token.
    #[command(after_help = "\
A license carries the keys of the files registered before it was issued. For a later
version it covers (its versions are `*`), the wallet asks the issuer with a request signed
by the license's holder key; the answer is wrapped to that license and kept in the wallet,
where `escx install --wallet` finds it.

Examples:
  escx license key --server http://127.0.0.1:8440 --wallet ./wallet --package-file thermal-1.1.0.escx
  escx license key --wallet ./wallet --package-file thermal-1.1.0.escx -o keyreq.cbor
  escx license add-key key.cbor --wallet ./wallet")]
    Key(KeyArgs),
    /// Keep a content key the issuer answered a key request with.
    #[command(after_help = "Examples:\n  escx license add-key key.cbor --wallet ./wallet")]
    AddKey(WalletFileArgs),
    /// Install the issuer's sealed license.
    #[command(after_help = "Examples:\n  escx license install license.sealed --wallet ./wallet")]
    Install(WalletFileArgs),
    /// List what a wallet holds: unspent tokens and installed licenses.
    #[command(after_help = "\
Licenses are listed as installed, newest first; `escx license verify` checks one.

Examples:
  escx license list --wallet ./wallet
  escx license list --wallet ./wallet --json")]
    List(ListArgs),
    /// Verify a license offline: issuer, signature, clock, validity, revocation and its age, package, possession.
    #[command(
        after_help = "Only licenses signed by the issuer given (--issuer or --issuer-id: what the program ships
with, never what the wallet holds) are accepted. Revocation is known as of the newest CRL
held (or the license's issue): past --crl-max-age days a check passes with a warning, past
--crl-grace days more it fails with crl-too-old until a newer CRL is fetched.

Examples:
  escx license verify --wallet ./wallet --package acme/thermal --issuer issuer.pub
  escx license verify --wallet ./wallet --package acme/thermal --issuer issuer.pub --server http://127.0.0.1:8440
  escx license verify --wallet ./wallet --package acme/thermal --issuer issuer.pub --crl crl.cbor --json"
    )]
    Verify(VerifyArgs),
    /// Prove possession of a license over a verifier's challenge.
    #[command(
        after_help = "Examples:\n  escx license prove --wallet ./wallet --package acme/thermal --challenge 00112233445566778899aabbccddeeff -o proof.cbor"
    )]
    Prove(ProveArgs),
    /// Check a proof of possession with the issuer bundle alone.
    #[command(
        after_help = "Examples:\n  escx license check-proof proof.cbor --issuer issuer.pub --package acme/thermal --challenge 00112233445566778899aabbccddeeff"
    )]
    CheckProof(CheckProofArgs),
    /// Renew: spend the next token of the current license's tier, with fresh holder keys.
    #[command(after_help = "\
Like `redeem`, for the tier of the newest license held: the new license shares no key
with the old one, so the issuer cannot tell a renewal from a first redemption. It is valid
from when the issuer redeems it; renew close to the end of the current license.

Examples:
  escx license renew --wallet ./wallet --package acme/thermal -o redeem.sealed
  escx issuer redeem ./issuer redeem.sealed -o license.sealed && escx license install license.sealed --wallet ./wallet")]
    Renew(RedeemArgs),
    /// Write this wallet's receive key, for others to transfer tokens to.
    #[command(after_help = "Examples:\n  escx license receive-key --wallet ./bob-wallet -o bob.receive")]
    ReceiveKey(ReceiveKeyArgs),
    /// Give an unspent token to another wallet (sealed to its receive key; no issuer involved).
    #[command(after_help = "\
The token leaves this wallet once the sealed file is written. A token is a bearer
instrument: the first redemption wins, so the recipient should redeem it promptly.

Examples:
  escx license transfer --wallet ./wallet --package acme/thermal --to bob.receive -o gift.sealed
  escx license transfer --wallet ./wallet --package acme/thermal --tier premium --to bob.receive -o gift.sealed")]
    Transfer(TransferArgs),
    /// Take a token transferred to this wallet.
    #[command(after_help = "Examples:\n  escx license receive gift.sealed --wallet ./bob-wallet")]
    Receive(WalletFileArgs),
}

#[derive(Args)]
pub struct RequestArgs {
    /// The issuer's public bundle.
    #[arg(long, value_name = "FILE")]
    issuer: PathBuf,
    /// Package name.
    #[arg(long)]
    package: PackageName,
    /// Pricing tier.
    #[arg(long)]
    tier: String,
    /// Tokens to buy.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Wallet directory (created if needed).
    #[arg(long, value_name = "DIR")]
    wallet: PathBuf,
    /// Where to write the request.
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    published: PublishedCheck,
}

/// Where the issuer's current bundle is published for every customer to compare.
#[derive(Args)]
pub struct PublishedCheck {
    /// Buy only under the issuer bundle this registry's signed index publishes (its
    /// version and hash must match the wallet's chain), so an issuer cannot tag this
    /// wallet with keys nobody else sees.
    #[arg(long, value_name = "DIR", requires = "registry_key")]
    registry: Option<PathBuf>,
    /// A registry key the index must be signed by (repeatable; any one suffices).
    #[arg(long = "registry-key", value_name = "FILE")]
    registry_key: Vec<PathBuf>,
    /// Where accepted index versions are kept (default: $ESCX_STATE_DIR, else
    /// $XDG_STATE_HOME/escx, else ~/.local/state/escx).
    #[arg(long = "state-dir", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl PublishedCheck {
    /// The published head for `issuer`, from the verified index (None without --registry).
    fn head(
        &self,
        issuer: escx::sig::KeyId,
        now: escx::UnixSeconds,
    ) -> anyhow::Result<Option<(u64, [u8; 32])>> {
        let Some(registry) = &self.registry else { return Ok(None) };
        let policy = super::registry_trust::registry_policy(&self.registry_key)?;
        let state = super::registry_trust::state_dir(self.state_dir.as_deref());
        let trusted = escx_manifest::client::load_index(registry, &policy, &state, now)?;
        let listed =
            trusted.index.issuer(issuer).ok_or_else(|| escx_licensing::Error::BundleUnpublished {
                issuer,
                reason: format!("the registry {} publishes no bundle for this issuer", registry.display()),
            })?;
        Ok(Some((listed.version, listed.hash_bytes())))
    }
}

#[derive(Args)]
pub struct WalletFileArgs {
    /// The issuer's answer.
    input: PathBuf,
    /// Wallet directory.
    #[arg(long, value_name = "DIR")]
    wallet: PathBuf,
}

#[derive(Args)]
pub struct RedeemArgs {
    /// Wallet directory.
    #[arg(long, value_name = "DIR")]
    wallet: PathBuf,
    /// Package name.
    #[arg(long)]
    package: PackageName,
    /// Where to write the sealed request.
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
pub struct KeyArgs {
    /// Wallet directory.
    #[arg(long, value_name = "DIR")]
    wallet: PathBuf,
    /// The encrypted package file whose key is wanted.
    #[arg(long, value_name = "FILE")]
    package_file: PathBuf,
    /// Where to write the request (the file exchange; the issuer answers with
    /// `escx issuer content-key`).
    #[arg(short, long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace the output file if it exists.
    #[arg(long, requires = "out")]
    force: bool,
    /// Ask this issuer service and keep the key it answers with.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

#[derive(Args)]
pub struct RedeemViaArgs {
    /// Wallet directory.
    #[arg(long, value_name = "DIR")]
    wallet: PathBuf,
    /// Package name.
    #[arg(long)]
    package: PackageName,
    /// Where to write the sealed request (the file exchange).
    #[arg(short, long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace the output file if it exists.
    #[arg(long, requires = "out")]
    force: bool,
    /// Redeem at this issuer service and install the license it answers with.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

#[derive(Args)]
pub struct ReceiveKeyArgs {
    /// Wallet directory.
    #[arg(long, value_name = "DIR")]
    wallet: PathBuf,
    /// Where to write the receive key.
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
pub struct TransferArgs {
    /// Wallet directory.
    #[arg(long, value_name = "DIR")]
    wallet: PathBuf,
    /// Package name.
    #[arg(long)]
    package: PackageName,
    /// Tier (default: any).
    #[arg(long)]
    tier: Option<String>,
    /// The recipient wallet's receive key (from `escx license receive-key`).
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    /// Where to write the sealed token (must not exist).
    #[arg(short, long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Wallet directory.
    #[arg(long, value_name = "DIR")]
    wallet: PathBuf,
    /// Package name.
    #[arg(long)]
    package: PackageName,
    /// Installed package version to check against the license's range.
    #[arg(long = "package-version", value_name = "VERSION")]
    package_version: Option<String>,
    /// A newer CRL to accept first.
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
    /// Fetch the issuer service's newest CRL first when it can be reached (a check that
    /// cannot reach it goes on offline, with a warning).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Verify at this time instead of now (2027-01-01, RFC 3339, or @unix).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct ProveArgs {
    /// Wallet directory.
    #[arg(long, value_name = "DIR")]
    wallet: PathBuf,
    /// Package name.
    #[arg(long)]
    package: PackageName,
    /// The verifier's challenge, hex.
    #[arg(long)]
    challenge: String,
    /// Where to write the proof.
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
pub struct CheckProofArgs {
    /// The proof.
    proof: PathBuf,
    /// The issuer's public bundle chain.
    #[arg(long, value_name = "FILE")]
    issuer: PathBuf,
    /// The package the license must be for.
    #[arg(long)]
    package: PackageName,
    /// The installed version the license must cover.
    #[arg(long = "package-version", value_name = "VERSION")]
    package_version: Option<String>,
    /// The issuer's newest CRL: a revoked license is refused.
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
    /// The challenge you sent, hex (at least 16 bytes; each is accepted once).
    #[arg(long)]
    challenge: String,
    /// Where used challenges are remembered (default: the escx state directory).
    #[arg(long = "state-dir", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

pub fn run_license(command: LicenseCommand, ui: &Ui) -> anyhow::Result<()> {
    let now = escx::now_unix();
    match command {
        LicenseCommand::Request(args) => license_request(args, ui, now),
        LicenseCommand::Buy(args) => crate::cmd::online::buy(args, ui, now),
        LicenseCommand::Crl(args) => crate::cmd::online::crl(args, ui),
        LicenseCommand::Finalize(args) => license_finalize(args, ui),
        LicenseCommand::Renew(args) => license_renew(args, ui, now),
        LicenseCommand::ReceiveKey(args) => license_receive_key(args, ui),
        LicenseCommand::Transfer(args) => license_transfer(args, ui),
        LicenseCommand::Receive(args) => license_receive(args, ui),
        LicenseCommand::Redeem(args) => license_redeem(args, ui),
        LicenseCommand::Install(args) => license_install(args, ui),
        LicenseCommand::Key(args) => license_key(args, ui, now),
        LicenseCommand::AddKey(args) => license_add_key(args, ui),
        LicenseCommand::Verify(args) => license_verify(args, ui, now),
        LicenseCommand::List(args) => license_list(args, ui, now),
        LicenseCommand::Prove(args) => license_prove(args, ui),
        LicenseCommand::CheckProof(args) => license_check_proof(args, ui, now),
    }
}

#[derive(Args)]
pub struct ListArgs {
    /// Wallet directory.
    #[arg(long, value_name = "DIR")]
    wallet: PathBuf,
}

fn license_list(args: ListArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let wallet = Wallet::open_existing(&args.wallet)?;
    let tokens = wallet.token_counts()?;
    let licenses = wallet.licenses()?;
    let revoked: Vec<bool> = licenses.iter().map(|l| wallet.is_revoked(l)).collect::<Result<_, _>>()?;
    let state = |l: &escx_licensing::messages::LicensePayload| {
        if licenses.iter().zip(&revoked).any(|(held, r)| *r && held.license_id == l.license_id) {
            "revoked"
        } else if now < l.not_before {
            "not-yet-valid"
        } else if now >= l.not_after {
            "expired"
        } else {
            "current"
        }
    };
    let report = WalletContents {
        wallet: &args.wallet,
        tokens: tokens
            .iter()
            .map(|(package, tier, count)| TokenCount { package, tier, count: *count })
            .collect(),
        licenses: licenses
            .iter()
            .map(|l| LicenseRow {
                license_id: hex::encode(&l.license_id),
                package: &l.package,
                tier: &l.tier,
                not_before: l.not_before.rfc3339(),
                not_after: l.not_after.rfc3339(),
                state: state(l),
            })
            .collect(),
    };
    ui.emit(&report, || {
        let text = format!(
            "{}: {} unspent, {} installed\n",
            args.wallet.display(),
            crate::output::count(tokens.iter().map(|t| t.2).sum::<usize>(), "token"),
            crate::output::count(licenses.len(), "license")
        );
        let mut table = crate::output::Table::new(&[crate::output::Align::Left; 6]);
        for t in &report.tokens {
            table.row([
                "token".into(),
                String::new(),
                t.package.to_string(),
                t.tier.to_string(),
                format!("x{}", t.count),
            ]);
        }
        for l in &report.licenses {
            table.row([
                "license".to_owned(),
                l.license_id[..16].to_owned(),
                l.package.to_string(),
                l.tier.to_string(),
                format!("{} .. {}", l.not_before, l.not_after),
                l.state.to_string(),
            ]);
        }
        text + &table.render("  ")
    });
    Ok(())
}

/// `escx license list --json` (spec/cli.md).
#[derive(Serialize)]
struct WalletContents<'a> {
    wallet: &'a Path,
    tokens: Vec<TokenCount<'a>>,
    licenses: Vec<LicenseRow<'a>>,
}

#[derive(Serialize)]
struct TokenCount<'a> {
    package: &'a PackageName,
    tier: &'a str,
    count: usize,
}

#[derive(Serialize)]
struct LicenseRow<'a> {
    license_id: String,
    package: &'a PackageName,
    tier: &'a str,
    not_before: String,
    not_after: String,
    state: &'static str,
}

fn license_request(args: RequestArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let chain = bundle(&args.issuer)?;
    // The first purchase creates the wallet.
    let wallet = Wallet::open(&args.wallet)?;
    let held = wallet.add_issuer(&chain).with_context(|| args.issuer.display().to_string())?;
    let under = match args.published.head(chain.issuer_id(), now)? {
        Some((version, hash)) => wallet.published(chain.issuer_id(), version, &hash)?,
        None => held,
    };
    let request = wallet.request_at(&under, &args.package, &args.tier, args.count, now)?;
    args.output.write(&request.to_cbor())?;
    ui.emit(
        &Requested {
            file: &args.output.out,
            count: args.count,
            epoch: request.epoch,
            bundle_version: under.version(),
            published_checked: args.published.registry.is_some(),
        },
        || {
            format!(
                "request for {} {} {} {} -> {} (send it with the payment)",
                args.count,
                args.package,
                args.tier,
                crate::output::noun(args.count, "token"),
                args.output.out.display()
            )
        },
    );
    Ok(())
}

fn license_finalize(args: WalletFileArgs, ui: &Ui) -> anyhow::Result<()> {
    let response =
        TokenResponse::from_cbor(&read(&args.input)?).with_context(|| args.input.display().to_string())?;
    let count = Wallet::open_existing(&args.wallet)?.finalize(&response)?;
    ui.emit(&Finalized { tokens: count, package: &response.package, tier: &response.tier }, || {
        format!(
            "issuer proof verified; {count} {} {} {} stored",
            response.package,
            response.tier,
            crate::output::noun(count, "token")
        )
    });
    Ok(())
}

fn license_renew(args: RedeemArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let (sealed, left) = Wallet::open_existing(&args.wallet)?.renew(&args.package, now)?;
    args.output.write_secret(sealed.as_bytes())?;
    ui.emit(&Renewed { file: &args.output.out, current_seconds_left: left }, || {
        let days = left / 86_400;
        format!(
            "next token spent into {} with fresh holder keys; the current license has {days} day{} left",
            args.output.out.display(),
            if days == 1 { "" } else { "s" }
        )
    });
    Ok(())
}

fn license_receive_key(args: ReceiveKeyArgs, ui: &Ui) -> anyhow::Result<()> {
    // A receive key may be a new wallet's first step (to be given a token).
    let key = Wallet::open(&args.wallet)?.receive_key()?;
    let file = ReceiveKey::new(&key);
    args.output.write(&file.to_cbor())?;
    ui.emit(&ReceiveKeyWritten { file: &args.output.out, key_id: key.id().to_string() }, || {
        format!("receive key {} -> {}", key.id(), args.output.out.display())
    });
    Ok(())
}

fn license_transfer(args: TransferArgs, ui: &Ui) -> anyhow::Result<()> {
    let recipient = ReceiveKey::from_cbor(&read(&args.to)?).with_context(|| args.to.display().to_string())?;
    if args.out.exists() {
        return Err(crate::failure::exists(&args.out, "choose another output file"));
    }
    let moved = Wallet::open_existing(&args.wallet)?.transfer(
        &args.package,
        args.tier.as_deref(),
        &recipient,
        &args.out,
    )?;
    ui.emit(
        &Transferred {
            file: &args.out,
            package: &moved.package,
            tier: &moved.tier,
            recipient: recipient.id().to_string(),
        },
        || {
            format!(
                "one {} {} token sealed to {} -> {} (removed from this wallet)",
                moved.package,
                moved.tier,
                recipient.id(),
                args.out.display()
            )
        },
    );
    Ok(())
}

fn license_receive(args: WalletFileArgs, ui: &Ui) -> anyhow::Result<()> {
    let moved = Wallet::open_existing(&args.wallet)?
        .receive(&SealedTransfer::from_bytes(read(&args.input)?))
        .with_context(|| args.input.display().to_string())?;
    ui.emit(
        &Received { package: &moved.package, tier: &moved.tier, issuer_id: moved.issuer.to_string() },
        || {
            format!(
                "received one {} {} token (issuer {}); redeem it soon: the first redemption wins",
                moved.package, moved.tier, moved.issuer
            )
        },
    );
    Ok(())
}

fn license_redeem(args: RedeemViaArgs, ui: &Ui) -> anyhow::Result<()> {
    super::out_or_server(args.out.as_deref(), args.server.as_deref())?;
    let Some(out) = args.out else {
        let server = args.server.as_deref().unwrap_or_default();
        return crate::cmd::online::redeem(server, &args.wallet, &args.package, ui);
    };
    let args =
        RedeemArgs { wallet: args.wallet, package: args.package, output: Output { out, force: args.force } };
    // Refused before the token is spent, not after.
    if args.output.out.exists() && !args.output.force {
        return Err(crate::failure::exists(&args.output.out, "pass --force to replace it"));
    }
    let sealed = Wallet::open_existing(&args.wallet)?.redeem(&args.package)?;
    args.output.write_secret(sealed.as_bytes())?;
    ui.emit(&Written { file: &args.output.out }, || {
        format!(
            "token spent into {} (sealed to the issuer, with fresh holder keys)",
            args.output.out.display()
        )
    });
    Ok(())
}

fn license_install(args: WalletFileArgs, ui: &Ui) -> anyhow::Result<()> {
    let license = Wallet::open_existing(&args.wallet)?
        .install(&SealedLicense::from_bytes(read(&args.input)?))
        .with_context(|| args.input.display().to_string())?;
    let id = hex::encode(&license.license_id);
    ui.emit(
        &Installed {
            license_id: &id,
            package: &license.package,
            tier: &license.tier,
            not_after: license.not_after.rfc3339(),
        },
        || format!("installed license {id} for {} {}", license.package, license.tier),
    );
    Ok(())
}

/// `escx license key --json` and `escx license add-key --json`.
#[derive(Serialize)]
struct KeyKept<'a> {
    license_id: String,
    package_root: String,
    server: Option<&'a str>,
}

/// `escx license key -o FILE --json`.
#[derive(Serialize)]
struct KeyRequested<'a> {
    file: &'a Path,
    package: String,
    version: String,
}

fn license_key(args: KeyArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    super::out_or_server(args.out.as_deref(), args.server.as_deref())?;
    let path = &args.package_file;
    let mut reader = escx::container::PackageReader::open_file(path).map_err(failure::at(path))?;
    let id = reader.package_id().map_err(failure::at(path))?;
    let wallet = Wallet::open_existing(&args.wallet)?;
    let request = wallet
        .key_request(&id.name, &id.version, reader.root(), now)
        .with_context(|| format!("{}: {} {}", path.display(), id.name, id.version))?;
    match (&args.out, &args.server) {
        (Some(out), _) => {
            Output { out: out.clone(), force: args.force }.write(&request)?;
            ui.emit(
                &KeyRequested { file: out, package: id.name.to_string(), version: id.version.to_string() },
                || {
                    format!(
                        "key request for {} {} -> {} (the issuer answers with `escx issuer content-key`)",
                        id.name,
                        id.version,
                        out.display()
                    )
                },
            );
        }
        (None, Some(server)) => {
            let answer = crate::http::Client::new(server)?.post("/v1/content-key", &request, None)?;
            let (license, root) =
                wallet.add_key(&answer).with_context(|| format!("{server}/v1/content-key"))?;
            ui.emit(
                &KeyKept { license_id: license.clone(), package_root: root, server: Some(server) },
                || format!("content key of {} {} kept with license {license}", id.name, id.version),
            );
        }
        // out_or_server refused neither.
        (None, None) => {}
    }
    Ok(())
}

fn license_add_key(args: WalletFileArgs, ui: &Ui) -> anyhow::Result<()> {
    let (license, root) = Wallet::open_existing(&args.wallet)?
        .add_key(&read(&args.input)?)
        .with_context(|| args.input.display().to_string())?;
    ui.emit(&KeyKept { license_id: license.clone(), package_root: root.clone(), server: None }, || {
        format!("content key of file {} kept with license {license}", &root[..16])
    });
    Ok(())
}

fn license_verify(args: VerifyArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let at = match &args.at {
        Some(text) => escx::timestamp::parse(text).map_err(|r| UsageError(format!("--at: {r}")))?,
        None => now,
    };
    let version = package_version(args.package_version.as_deref())?;
    let trust = args.trust.trust()?;
    let crl = args.crl.as_deref().map(read).transpose()?;
    let wallet = Wallet::open_existing(&args.wallet)?;
    if let Some(server) = &args.server {
        // Online, the newest CRL comes first; offline the check goes on with what is held
        // (the age rule then bounds how long that can last).
        match crate::http::Client::new(server).and_then(|client| client.get("/v1/crl")) {
            Ok(bytes) => {
                wallet.accept_crl(&bytes).with_context(|| format!("{server}/v1/crl"))?;
            }
            Err(error) => ui.warn(&format!("{server}/v1/crl: {error:#}; checking with the CRL held")),
        }
    }
    let verified = wallet.verify(&trust, &args.package, version.as_ref(), crl.as_deref(), at)?;
    let id = hex::encode(&verified.license.license_id);
    ui.emit(
        &LicenseValid {
            ok: true,
            license_id: &id,
            package: &verified.license.package,
            checks: &verified.checks,
        },
        || {
            let mut text =
                format!("license {id} for {} {} is valid\n", verified.license.package, verified.license.tier);
            for check in &verified.checks {
                text += &format!("  {:<11} {}\n", check.name, check.detail);
            }
            text
        },
    );
    Ok(())
}

fn license_prove(args: ProveArgs, ui: &Ui) -> anyhow::Result<()> {
    let challenge = hex_arg(&args.challenge, "challenge")?;
    let proof = Wallet::open_existing(&args.wallet)?.prove(&args.package, &challenge)?;
    args.output.write(&proof)?;
    ui.emit(&Written { file: &args.output.out }, || {
        format!("proof of possession -> {}", args.output.out.display())
    });
    Ok(())
}

fn license_check_proof(args: CheckProofArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let challenge = hex_arg(&args.challenge, "challenge")?;
    let chain = bundle(&args.issuer)?;
    let crl = match &args.crl {
        Some(path) => {
            Some(verify::open_crl(&read(path)?, chain.head()).with_context(|| path.display().to_string())?)
        }
        None => None,
    };
    let version = package_version(args.package_version.as_deref())?;
    let check = verify::ProofCheck {
        issuer: chain.head(),
        crl: crl.as_ref(),
        package: &args.package,
        version: version.as_ref(),
        challenge: &challenge,
        now,
    };
    let license =
        verify::check_proof(&read(&args.proof)?, &check).with_context(|| args.proof.display().to_string())?;
    let state = super::registry_trust::state_dir(args.state_dir.as_deref());
    verify::ChallengeLog::open(&state.path().join("challenges"))?.record(&challenge)?;
    let id = hex::encode(&license.license_id);
    ui.emit(
        &ProofValid {
            ok: true,
            license_id: &id,
            package: &license.package,
            tier: &license.tier,
            revocation_checked: crl.is_some(),
        },
        || format!("the prover holds license {id} for {} {}", license.package, license.tier),
    );
    Ok(())
}

/// `escx license request --json`.
#[derive(Serialize)]
struct Requested<'a> {
    file: &'a Path,
    count: usize,
    epoch: u32,
    bundle_version: u64,
    published_checked: bool,
}

/// `escx license finalize --json`.
#[derive(Serialize)]
struct Finalized<'a> {
    tokens: usize,
    package: &'a PackageName,
    tier: &'a str,
}

/// `escx license renew --json`.
#[derive(Serialize)]
struct Renewed<'a> {
    file: &'a Path,
    current_seconds_left: u64,
}

/// `escx license receive-key --json`.
#[derive(Serialize)]
struct ReceiveKeyWritten<'a> {
    file: &'a Path,
    key_id: String,
}

/// `escx license transfer --json`.
#[derive(Serialize)]
struct Transferred<'a> {
    file: &'a Path,
    package: &'a PackageName,
    tier: &'a str,
    recipient: String,
}

/// `escx license receive --json`.
#[derive(Serialize)]
struct Received<'a> {
    package: &'a PackageName,
    tier: &'a str,
    issuer_id: String,
}

/// `escx license install --json`.
#[derive(Serialize)]
struct Installed<'a> {
    license_id: &'a str,
    package: &'a PackageName,
    tier: &'a str,
    not_after: String,
}

/// `escx license verify --json`.
#[derive(Serialize)]
struct LicenseValid<'a> {
    ok: bool,
    license_id: &'a str,
    package: &'a PackageName,
    checks: &'a [verify::Check],
}

/// `escx license check-proof --json`.
#[derive(Serialize)]
struct ProofValid<'a> {
    ok: bool,
    license_id: &'a str,
    package: &'a PackageName,
    tier: &'a str,
    revocation_checked: bool,
}
