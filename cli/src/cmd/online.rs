//! The customer commands' `--server` side (spec: service.md §7): the same wallet and meter
//! steps as the file exchange, with the messages carried over HTTP. Every answer is
//! checked as the same bytes from a file would be.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use escx::header::PackageName;
use escx_licensing::messages::{BundleChain, SealedLicense, TokenRequest, TokenResponse};
use escx_licensing::wallet::Wallet;
use serde::Serialize;

use crate::http::Client;
use crate::output::Ui;

/// Where a purchase waits for its answer: resent as is by the next `buy` of the same
/// package and tier, so a lost answer never makes a second sale.
const OUTBOX_DIR: &str = "outbox";

#[derive(Args)]
pub struct BuyArgs {
    /// The service (`escx serve`), e.g. http://127.0.0.1:8440.
    #[arg(long, value_name = "URL")]
    server: String,
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
    /// The account's bearer token (`escx issuer account add`).
    #[arg(long = "account-token", value_name = "TOKEN", env = "ESCX_ACCOUNT_TOKEN", hide_env_values = true)]
    account_token: String,
}

#[derive(Serialize)]
struct Bought<'a> {
    package: &'a PackageName,
    tier: &'a str,
    tokens: usize,
    resent: bool,
    server: &'a str,
}

fn outbox(wallet: &Path) -> anyhow::Result<PathBuf> {
    let dir = wallet.join(OUTBOX_DIR);
    escx::fsutil::create_private_dir(&dir)?;
    Ok(dir)
}

/// An unanswered purchase of `package` `tier` in the outbox.
fn unanswered(
    dir: &Path,
    package: &PackageName,
    tier: &str,
) -> anyhow::Result<Option<(PathBuf, TokenRequest)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| escx::Error::io(dir, e))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let bytes = std::fs::read(&path).map_err(|e| escx::Error::io(&path, e))?;
        let request = TokenRequest::from_cbor(&bytes).with_context(|| path.display().to_string())?;
        if &request.package == package && request.tier == tier {
            return Ok(Some((path, request)));
        }
    }
    Ok(None)
}

pub fn buy(args: BuyArgs, ui: &Ui, now: escx::UnixSeconds) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let chain = BundleChain::parse(&client.get("/.well-known/escx/issuer")?)
        .with_context(|| format!("{}/.well-known/escx/issuer", args.server))?;
    // The first purchase creates the wallet.
    let wallet = Wallet::open(&args.wallet)?;
    let held = wallet.add_issuer(&chain)?;
    let dir = outbox(&args.wallet)?;
    let (path, request, resent) = match unanswered(&dir, &args.package, &args.tier)? {
        Some((path, request)) => (path, request, true),
        None => {
            let request = wallet.request_at(&held, &args.package, &args.tier, args.count, now)?;
            let bytes = request.to_cbor();
            let path = dir.join(format!("purchase-{}.cbor", &blake3::hash(&bytes).to_hex()[..16]));
            escx::fsutil::write_atomic(&path, &bytes, escx::fsutil::MODE_SECRET, false)
                .map_err(crate::failure::at(&path))?;
            (path, request, false)
        }
    };
    let answer = match client.post("/v1/purchase", &request.to_cbor(), Some(&args.account_token)) {
        Ok(answer) => answer,
        Err(error) => {
            // A definite refusal (an answer in 4xx with its code, other than a timeout)
            // sold nothing: the purchase leaves the outbox and is not resent next time.
            // A lost answer (no answer, 5xx, a timeout) stays, since it may have been sold.
            let refused = error.downcast_ref::<crate::failure::CliFailure>().is_some_and(|f| {
                f.class == escx::ErrorClass::Input && f.code != "timeout" && f.code != "network"
            });
            if refused {
                std::fs::remove_file(&path).map_err(|e| escx::Error::io(&path, e))?;
                wallet.abandon(&request)?;
                ui.warn("the service refused the purchase: nothing was bought, and it will not be resent");
            }
            return Err(error);
        }
    };
    let response =
        TokenResponse::from_cbor(&answer).with_context(|| format!("{}/v1/purchase", args.server))?;
    let tokens = wallet.finalize(&response)?;
    std::fs::remove_file(&path).map_err(|e| escx::Error::io(&path, e))?;
    ui.emit(
        &Bought { package: &response.package, tier: &response.tier, tokens, resent, server: &args.server },
        || {
            format!(
                "{}bought {tokens} {} {} {} at {} (issuer proof verified)",
                if resent { "resent the unanswered purchase: " } else { "" },
                response.package,
                response.tier,
                crate::output::noun(tokens, "token"),
                args.server
            )
        },
    );
    Ok(())
}

#[derive(Serialize)]
struct Redeemed<'a> {
    license_id: String,
    package: &'a PackageName,
    tier: &'a str,
    not_after: String,
    resent: bool,
}

/// Redeems at the service and installs the answer; an unanswered redemption of the
/// package is resent first (its token is spent already, the issuer keeps the answer).
pub fn redeem(server: &str, wallet: &Path, package: &PackageName, ui: &Ui) -> anyhow::Result<()> {
    let client = Client::new(server)?;
    let wallet = Wallet::open_existing(wallet)?;
    let (sealed, resent) = match wallet.resend_redemption(package.as_str())? {
        Some(sealed) => (sealed, true),
        None => (wallet.redeem(package.as_str())?, false),
    };
    let answer = client.post("/v1/redeem", sealed.as_bytes(), None)?;
    let license =
        wallet.install(&SealedLicense::from_bytes(answer)).with_context(|| format!("{server}/v1/redeem"))?;
    let id = hex::encode(&license.license_id);
    ui.emit(
        &Redeemed {
            license_id: id.clone(),
            package: &license.package,
            tier: &license.tier,
            not_after: license.not_after.rfc3339(),
            resent,
        },
        || format!("installed license {id} for {} {} from {server}", license.package, license.tier),
    );
    Ok(())
}

#[derive(Args)]
pub struct CrlArgs {
    /// The service (`escx serve`).
    #[arg(long, value_name = "URL")]
    server: String,
    /// Wallet directory.
    #[arg(long, value_name = "DIR")]
    wallet: PathBuf,
}

#[derive(Serialize)]
struct CrlAccepted {
    number: u64,
    revoked: usize,
}

pub fn crl(args: CrlArgs, ui: &Ui) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let bytes = client.get("/v1/crl")?;
    let crl = Wallet::open_existing(&args.wallet)?
        .accept_crl(&bytes)
        .with_context(|| format!("{}/v1/crl", args.server))?;
    ui.emit(&CrlAccepted { number: crl.number, revoked: crl.revoked.len() }, || {
        format!(
            "CRL {} accepted ({})",
            crl.number,
            crate::output::count(crl.revoked.len(), "revoked license")
        )
    });
    Ok(())
}

/// Sends a report (or close) file to the operator; returns the service's JSON answer.
pub fn send_report(server: &str, path: &str, bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
    let answer = Client::new(server)?.post(path, bytes, None)?;
    serde_json::from_slice(&answer).with_context(|| format!("{server}{path}: the answer is not JSON"))
}
