//! `escx issuer ...` (the licensing service) and `escx license ...` (the customer's wallet).
//! Every message is a file, so any transport can carry them.

use escx::manifest::PackageName;
use escx_licensing::messages::{SealedLicense, SealedRedeemRequest, SealedTransfer};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use escx::content::ContentKey;
use escx::keyfile::{Argon2Params, Protection};
use escx_licensing::issuer::Issuer;
use escx_licensing::messages::{BundleChain, ReceiveKey, TokenRequest, TokenResponse};
use escx_licensing::verify;
use escx_licensing::wallet::Wallet;
use serde::Serialize;

use escx_licensing::issuer::SqlIssuerStore;

use crate::failure::{self, UsageError};
use crate::output::{Ui, Written};
use crate::secrets;

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
        let policy = super::client::registry_policy(&self.registry_key)?;
        let state = super::client::state_dir(self.state_dir.as_deref());
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

/// The issuer a licensed program accepts and its revocation age rule (licensing.md §5.5):
/// what the vendor ships with the program, never what the wallet holds.
#[derive(Args)]
pub struct TrustArgs {
    /// The issuer whose licenses are accepted: its published bundle chain
    /// (`escx issuer publish -o issuer.pub`).
    #[arg(long, value_name = "FILE", required_unless_present = "issuer_id", conflicts_with = "issuer_id")]
    issuer: Option<PathBuf>,
    /// The issuer whose licenses are accepted, by key id (hex).
    #[arg(long = "issuer-id", value_name = "HEX")]
    issuer_id: Option<String>,
    /// Days after the newest signed revocation time held (the CRL's issue, or the
    /// license's) that checks pass without a warning.
    #[arg(long = "crl-max-age", value_name = "DAYS", default_value_t = escx_licensing::trust::CRL_MAX_AGE_SECS / 86_400)]
    crl_max_age: u64,
    /// Days after the maximum age that checks still pass, with a warning, before they
    /// fail with crl-too-old.
    #[arg(long = "crl-grace", value_name = "DAYS", default_value_t = escx_licensing::trust::CRL_GRACE_SECS / 86_400)]
    crl_grace: u64,
}

impl TrustArgs {
    pub fn trust(&self) -> anyhow::Result<escx_licensing::trust::Trust> {
        let trust = match (&self.issuer, &self.issuer_id) {
            (Some(path), _) => escx_licensing::trust::Trust::from_chain_bytes(&read(path)?)
                .with_context(|| format!("--issuer {}", path.display()))?,
            (None, Some(hex)) => escx_licensing::trust::Trust::issuer(
                hex.parse().map_err(|e| UsageError(format!("--issuer-id: {e}")))?,
            ),
            (None, None) => return Err(UsageError("give --issuer FILE or --issuer-id HEX".into()).into()),
        };
        let days = |d: u64| d.saturating_mul(86_400);
        Ok(trust.with_crl_max_age(days(self.crl_max_age)).with_crl_grace(days(self.crl_grace)))
    }
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

/// Where a command writes the message it produces. Messages carry tokens, licenses or
/// requests, so an existing file is never replaced without --force.
#[derive(Args)]
pub struct Output {
    /// Output file (refused if it exists, unless --force).
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

impl Output {
    /// Writes a public message.
    pub fn write(&self, bytes: &[u8]) -> anyhow::Result<()> {
        escx::fsutil::write_atomic(&self.out, bytes, escx::fsutil::MODE_PUBLIC, self.force)
            .map_err(failure::at(&self.out))
    }

    /// Writes a message a retried command makes again byte for byte (a meter report or
    /// close): a file that already holds exactly these bytes is left as it is.
    pub fn write_retry(&self, bytes: &[u8]) -> anyhow::Result<()> {
        if !self.force && std::fs::read(&self.out).is_ok_and(|held| held == bytes) {
            return Ok(());
        }
        self.write(bytes)
    }

    pub fn write_secret(&self, bytes: &[u8]) -> anyhow::Result<()> {
        escx::fsutil::write_atomic(&self.out, bytes, escx::fsutil::MODE_SECRET, self.force)
            .map_err(failure::at(&self.out))
    }
}

pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| escx::Error::io(path, e)).map_err(failure::at(path))
}

pub(crate) fn open_issuer(dir: &Path) -> anyhow::Result<Issuer<SqlIssuerStore>> {
    let key = dir.join(escx_licensing::issuer::SIGNING_KEY_FILE);
    Issuer::open(dir, || secrets::passphrase_for(&key))
        .with_context(|| format!("opening issuer {}", dir.display()))
}

/// The content key of `package` from `wallet`, when the package's payload is encrypted;
/// `None` when it is not (or no wallet was given: the library then names what is missing).
pub fn content_key_for(wallet: Option<&Path>, package: &Path) -> anyhow::Result<Option<ContentKey>> {
    let Some(wallet) = wallet else { return Ok(None) };
    let mut reader = escx::container::PackageReader::open_file(package).map_err(failure::at(package))?;
    if !reader.sections().iter().any(|s| s.is_encrypted()) {
        return Ok(None);
    }
    let id = reader.package_id().map_err(failure::at(package))?;
    let key = Wallet::open_existing(wallet)?
        .content_key(&id.name, &id.version, reader.root(), escx::now_unix())
        .with_context(|| format!("{}: content key for {} {}", package.display(), id.name, id.version))?;
    Ok(Some(key))
}

pub fn bundle(path: &Path) -> anyhow::Result<BundleChain> {
    BundleChain::parse(&read(path)?).with_context(|| format!("{}", path.display()))
}

/// `--package-version`, parsed.
fn package_version(text: Option<&str>) -> anyhow::Result<Option<semver::Version>> {
    text.map(|v| {
        semver::Version::parse(v).map_err(|e| UsageError(format!("--package-version {v:?}: {e}")).into())
    })
    .transpose()
}

fn hex_arg(text: &str, name: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text).map_err(|_| UsageError(format!("--{name}: {text:?} is not hex")).into())
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
    let policy = escx::policy::TrustPolicy::from_keys(super::client::read_public_keys(&args.pubkey)?);
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
    let state = super::client::state_dir(args.state_dir.as_deref());
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
