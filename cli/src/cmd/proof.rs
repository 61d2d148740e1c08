//! `escx proof`: a party proves its revenue over signed statements (spec/proofs.md §3).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use escx_manifest::Micros;
use escx_settlement::proofs::{self, RevenueClaim};
use escx_settlement::statement::OpeningsFile;
use serde::Serialize;

use super::common::Output;
use super::published::*;
use crate::failure::UsageError;
use crate::output::Ui;

#[derive(Subcommand)]
pub enum ProofCommand {
    /// Prove a party's net revenue over a period's statements (the total, nothing else).
    #[command(after_help = "\
Needs the period's statements and the party's openings of them (escx statement openings
--dir). Refunds and reversals are subtracted. Only entries in --currency count.

Examples:
  escx proof revenue --statements ./statements --openings ./acme-openings --party acme --period 2026-11 --operator-pub op.pub -o rev.proof")]
    Revenue(RevenueArgs),
    /// Prove a party's net revenue over a period is at least an amount (revealing nothing else).
    #[command(after_help = "\
Refused when the revenue is below the amount: no such proof exists.

Examples:
  escx proof threshold --statements ./statements --openings ./acme-openings --party acme --period 2026-11 --at-least 10000.00 \
    --operator-pub op.pub -o thr.proof")]
    Threshold(ThresholdArgs),
}

#[derive(Args)]
pub struct ProofArgs {
    /// Directory of statement files (*.cbor), or the URL of an `escx serve` publishing them.
    #[arg(long, value_name = "DIR|URL")]
    statements: PathBuf,
    /// Directory (or file) of the party's openings files.
    #[arg(long, value_name = "DIR")]
    openings: PathBuf,
    /// The party.
    #[arg(long)]
    party: String,
    /// The month, YYYY-MM: statements issued in it.
    #[arg(long)]
    period: String,
    /// Only entries in this currency count.
    #[arg(long, default_value = "USD")]
    currency: String,
    /// The operator's public key (statements are verified under it first).
    #[arg(long, value_name = "FILE")]
    operator_pub: PathBuf,
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
pub struct RevenueArgs {
    #[command(flatten)]
    common: ProofArgs,
}

#[derive(Args)]
pub struct ThresholdArgs {
    #[command(flatten)]
    common: ProofArgs,
    /// The lower bound, a decimal amount (10000.00).
    #[arg(long, value_name = "AMOUNT")]
    at_least: String,
}

pub fn run_proof(command: ProofCommand, ui: &Ui) -> anyhow::Result<()> {
    let (common, at_least) = match &command {
        ProofCommand::Revenue(a) => (&a.common, None),
        ProofCommand::Threshold(a) => (
            &a.common,
            Some(
                Micros::parse(&a.at_least)
                    .map_err(|e| UsageError(format!("--at-least: {:?}: {e}", a.at_least)))?
                    .0,
            ),
        ),
    };
    let keys = operator_keys(&common.operator_pub, &common.statements)?;
    let statements = load_statements(&common.statements, &keys)?;
    let operator = keys.root();
    let openings = files(&common.openings, "openings")?
        .iter()
        .map(|path| {
            let bytes = read(path)?;
            escx::cbor::decode_exact::<OpeningsFile>(&bytes, "openings")
                .map_err(|reason| escx_settlement::Error::Proof(proofs::ProofError::Malformed(reason)))
                .with_context(|| path.display().to_string())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let claim = RevenueClaim {
        operator: operator.id(),
        party: &common.party,
        period: period(&common.period)?,
        currency: &common.currency,
    };
    let proof = match at_least {
        None => proofs::prove_total(&statements, &openings, &claim),
        Some(x) => proofs::prove_threshold(&statements, &openings, &claim, x),
    }
    .map_err(escx_settlement::Error::from)?;
    let proven =
        proofs::verify_revenue(&proof, &statements, &operator.id()).map_err(escx_settlement::Error::from)?;
    common.output.write(&proof.to_cbor())?;
    ui.emit(&Proved { file: &common.output.out, proves: proven_text(&proven) }, || {
        format!("{} -> {}", proven_text(&proven), common.output.out.display())
    });
    Ok(())
}

/// `escx audit prove --json` (spec/cli.md).
#[derive(Serialize)]
struct Proved<'a> {
    file: &'a Path,
    proves: String,
}
