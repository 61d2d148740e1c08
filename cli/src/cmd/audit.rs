//! `escx audit`: anyone checks statements and proofs with public files only
//! (spec/proofs.md, settlement.md §4.3).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use escx_settlement::proofs::{self, Claim, RevenueProof, StatementProofs};
use escx_settlement::statement::{self, Verified};
use rayon::prelude::*;
use serde::Serialize;

use super::published::*;
use crate::output::Ui;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check statements with the operator's public key: signatures, chain, conservation,
    /// and with --proofs every payout's range proof.
    #[command(after_help = "\
Every *.cbor file in the directory must be a statement signed by the operator. With
--proofs, every statement must have a verifying statement-<seq>.proofs file there. Either
may be the URL of an `escx serve` instead, whose answers are checked exactly as files.

Examples:
  escx audit statements ./statements --operator-pub op.pub
  escx audit statements ./statements --operator-pub op.pub --proofs ./proofs --json
  escx audit statements http://127.0.0.1:8440 --operator-pub op.pub --proofs http://127.0.0.1:8440")]
    Statements(AuditStatementsArgs),
    /// Verify a revenue or threshold proof against the statements, offline.
    #[command(after_help = "\
Prints exactly what was proven: a party's net total over the period's statements, or a
lower bound on it.

Examples:
  escx audit verify rev.proof --statements ./statements --operator-pub op.pub
  escx audit verify thr.proof --statements ./statements --operator-pub op.pub --json")]
    Verify(AuditVerifyArgs),
}

#[derive(Args)]
pub struct AuditStatementsArgs {
    /// Directory of statement files (*.cbor), or the URL of an `escx serve` publishing them.
    statements: PathBuf,
    /// The operator's public key.
    #[arg(long, value_name = "FILE")]
    operator_pub: PathBuf,
    /// Directory of statement-<seq>.proofs files, or the URL of an `escx serve` publishing
    /// them: every statement must have one that verifies.
    #[arg(long, value_name = "DIR|URL")]
    proofs: Option<PathBuf>,
}

#[derive(Args)]
pub struct AuditVerifyArgs {
    /// The proof file.
    proof: PathBuf,
    /// Directory of statement files (*.cbor), or the URL of an `escx serve` publishing them.
    #[arg(long, value_name = "DIR|URL")]
    statements: PathBuf,
    /// The operator's public key.
    #[arg(long, value_name = "FILE")]
    operator_pub: PathBuf,
}

pub fn run_audit(command: AuditCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        AuditCommand::Statements(args) => audit_statements(args, ui),
        AuditCommand::Verify(args) => audit_verify(args, ui),
    }
}

/// Statements verified at once: enough to keep every core busy, few enough that memory
/// stays flat in the number of statements (each is dropped once checked).
fn window() -> usize {
    rayon::current_num_threads().max(1) * 2
}

/// What one statement adds to an audit, once verified (with its proofs, when asked).
struct Audited {
    payouts: usize,
    splits: usize,
    verified: Verified,
}

/// Verifies the statements as a stream, in order of their numbers (issue 27, 20): a window
/// at a time in parallel, each chained to the one before, then dropped. Memory stays flat
/// in the number of statements; the verdict is the first failure in that order.
fn audit_statements(args: AuditStatementsArgs, ui: &Ui) -> anyhow::Result<()> {
    let keys = operator_keys(&args.operator_pub, &args.statements)?;
    let operator = keys.root();
    let source = Source::open(&args.statements)?;
    let proof_source = args.proofs.as_deref().map(ProofSource::open).transpose()?;
    let (mut count, mut entries, mut proven, mut split) = (0usize, 0usize, 0usize, 0usize);
    let (mut first, mut previous): (Option<u64>, Option<statement::Link>) = (None, None);
    let indexes: Vec<usize> = (0..source.len()).collect();
    for window in indexes.chunks(window()) {
        // A file that cannot be read fails in its place: a missing proofs file of a later
        // statement does not win over an earlier statement's failure.
        let loaded: Vec<anyhow::Result<_>> = window
            .iter()
            .map(|&i| {
                let (seq, name, bytes) = source.fetch(i)?;
                let proofs = proof_source.as_ref().map(|p| p.fetch(seq)).transpose()?;
                Ok((seq, name, bytes, proofs))
            })
            .collect();
        let checked: Vec<anyhow::Result<Audited>> = loaded
            .into_par_iter()
            .map(|item| {
                let (claimed, name, bytes, proofs) = item?;
                let verified = keys
                    .verify(&bytes)
                    .map_err(escx_settlement::Error::from)
                    .with_context(|| name.clone())?;
                check_place(&name, claimed, &verified)?;
                let (mut payouts, mut splits) = (0, 0);
                if let Some((name, bytes)) = &proofs {
                    let file = StatementProofs::from_cbor(bytes)
                        .map_err(escx_settlement::Error::from)
                        .with_context(|| name.clone())?;
                    proofs::verify_statement(&file, &verified, &verified.signer)
                        .map_err(escx_settlement::Error::from)
                        .with_context(|| name.clone())?;
                    let all = verified.payload.entries.iter().flat_map(|e| &e.payouts);
                    payouts = all.clone().count();
                    splits = all.filter(|p| p.rule.is_some()).count();
                }
                Ok(Audited { payouts, splits, verified })
            })
            .collect();
        for audited in checked {
            let audited = audited?;
            if let Some(before) = &previous {
                keys.check_link(before, &audited.verified).map_err(escx_settlement::Error::from)?;
            }
            first.get_or_insert(audited.verified.payload.seq);
            count += 1;
            entries += audited.verified.payload.entries.len();
            proven += audited.payouts;
            split += audited.splits;
            previous = Some(audited.verified.link());
        }
    }
    let (first, last) = (first.unwrap_or_default(), previous.map_or(0, |l| l.seq));
    ui.emit(
        &StatementsAudited {
            ok: true,
            statements: count,
            first,
            last,
            entries,
            range_proofs: args.proofs.is_some(),
            payouts_proven: proven,
            splits_proven: split,
        },
        || {
            let mut text = format!(
                "statements {first}..{last}: signed by operator {}, chained without a gap, {} {} their gross on hidden amounts",
                operator.id(),
                crate::output::count(entries, "entry"),
                if entries == 1 { "conserves" } else { "conserve" }
            );
            if args.proofs.is_some() {
                text.push_str(&format!(
                    "; all {} proven to lie in [0, 2^64), {split} of them to be exactly the basis-point share their signed rule names",
                    crate::output::count(proven, "payout")
                ));
            }
            text
        },
    );
    Ok(())
}

fn audit_verify(args: AuditVerifyArgs, ui: &Ui) -> anyhow::Result<()> {
    let keys = operator_keys(&args.operator_pub, &args.statements)?;
    let statements = load_statements(&args.statements, &keys)?;
    let operator = keys.root();
    let proof = RevenueProof::from_cbor(&read(&args.proof)?)
        .map_err(escx_settlement::Error::from)
        .with_context(|| args.proof.display().to_string())?;
    let proven = proofs::verify_revenue(&proof, &statements, &operator.id())
        .map_err(escx_settlement::Error::from)
        .with_context(|| args.proof.display().to_string())?;
    let claim = match proven.claim {
        Claim::Total(total) => ClaimReport::TotalMicros(total),
        Claim::AtLeast(x) => ClaimReport::AtLeastMicros(x),
    };
    ui.emit(
        &RevenueVerified {
            ok: true,
            party: &proven.party,
            period: &proven.period,
            currency: &proven.currency,
            statements: [proven.statements.0, proven.statements.1],
            entries: proven.entries,
            claim,
            proves: proven_text(&proven),
        },
        || proven_text(&proven),
    );
    Ok(())
}

/// `escx audit statements --json`.
#[derive(Serialize)]
struct StatementsAudited {
    ok: bool,
    statements: usize,
    first: u64,
    last: u64,
    entries: usize,
    range_proofs: bool,
    payouts_proven: usize,
    splits_proven: usize,
}

/// `escx audit revenue --json`.
#[derive(Serialize)]
struct RevenueVerified<'a> {
    ok: bool,
    party: &'a str,
    period: &'a str,
    currency: &'a str,
    statements: [u64; 2],
    entries: usize,
    claim: ClaimReport,
    proves: String,
}

/// What a revenue proof claims: `{"total_micros": R}` or `{"at_least_micros": X}`.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum ClaimReport {
    TotalMicros(i64),
    AtLeastMicros(u64),
}
