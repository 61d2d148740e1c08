//! One module per noun.

pub mod audit;
pub mod common;
pub mod config;
pub mod deps;
pub mod dispute;
pub mod hold;
pub mod issuer;
pub mod key;
pub mod ledger;
pub mod license;
pub mod manifest;
pub mod meter;
pub mod online;
pub mod operator;
pub mod package;
pub mod payout;
pub mod proof;
pub mod published;
pub mod registry;
pub mod registry_trust;
pub mod settle;
pub mod statement;

/// The time given by `--at TIME` (RFC 3339, `YYYY-MM-DD` or `@unix`), or now.
pub fn at_or_now(text: Option<&str>) -> anyhow::Result<escx::UnixSeconds> {
    match text {
        Some(text) => Ok(escx::timestamp::parse(text)
            .map_err(|reason| crate::failure::UsageError(format!("--at: {reason}")))?),
        None => Ok(escx::now_unix()),
    }
}

/// A ledger's location as shown in output: a PostgreSQL URL without its password.
pub(crate) fn shown(ledger: &std::path::Path) -> std::path::PathBuf {
    escx_store::Location::from_path(ledger).to_string().into()
}

/// The destination of a message a command makes: `-o FILE` (which wins) or `--server URL`
/// (given, or from the configuration, spec/cli.md). Neither is a usage error, checked
/// before anything is made or spent.
pub fn out_or_server(out: Option<&std::path::Path>, server: Option<&str>) -> anyhow::Result<()> {
    if out.is_none() && server.is_none() {
        return Err(crate::failure::UsageError(
            "give -o FILE, or --server URL (or set it once: escx config set server URL)".into(),
        )
        .into());
    }
    Ok(())
}
