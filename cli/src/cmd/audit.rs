//! `escx proof` (a party proves its revenue) and `escx audit` (anyone checks statements and
//! proofs with public files only), spec/proofs.md.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use escx::rotation::RotationStatement;
use escx_manifest::Micros;
use escx_settlement::payout::Period;
use escx_settlement::proofs::{self, Claim, Proven, RevenueClaim, RevenueProof, StatementProofs};
use escx_settlement::statement::{self, OpeningsFile, OperatorKeys, Verified};
use rayon::prelude::*;
use serde::Serialize;

use super::common::Output;
use crate::failure::{self, UsageError};
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

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    super::common::read(path)
}

fn files(dir: &Path, extension: &str) -> anyhow::Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| escx::Error::io(dir, e))
        .map_err(failure::at(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    found.sort();
    Ok(found)
}

/// The operator's line of keys: the public key given, then each successor the rotation
/// statements beside the statements endorse (settlement.md §4.5) — every `*.rot` file of a
/// statements directory, or `GET /v1/rotations` of a service.
fn operator_keys(path: &Path, statements: &Path) -> anyhow::Result<OperatorKeys> {
    let root = escx::keyfile::read_public_key(path).map_err(failure::at(path))?;
    let rotations = match as_url(statements) {
        Some(url) => served_rotations(url)?,
        None if statements.is_dir() => files(statements, "rot")?
            .iter()
            .map(|p| RotationStatement::read(p).map_err(failure::at(p)))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    Ok(OperatorKeys::follow(root, &rotations).map_err(escx_settlement::Error::from)?)
}

/// The rotations a service publishes; none from a service that predates them (404).
fn served_rotations(url: &str) -> anyhow::Result<Vec<RotationStatement>> {
    let base = service_base(url);
    let client = crate::http::Client::new(base)?;
    let Some(body) = client.get_optional("/v1/rotations")? else { return Ok(Vec::new()) };
    let list: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("{base}/v1/rotations: the answer is not JSON"))?;
    list["rotations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| {
            let line = line.as_str().unwrap_or_default();
            RotationStatement::parse(line)
                .map_err(|reason| anyhow::Error::from(escx::Error::Envelope { reason }))
                .with_context(|| format!("{base}/v1/rotations"))
        })
        .collect()
}

/// Where statements come from: the files of a directory or the statements of a service,
/// in the order of their numbers, each read only when it is verified.
enum Source {
    Files(Vec<(u64, PathBuf)>),
    Service { base: String, client: crate::http::Client, seqs: Vec<u64> },
}

impl Source {
    /// Lists the statements of `dir` (a directory, one file, or a service's URL) by number.
    /// A directory's files are read once for the number each claims (one at a time, so
    /// memory stays flat); one whose number cannot be read goes first, and fails its check.
    fn open(dir: &Path) -> anyhow::Result<Self> {
        if let Some(url) = as_url(dir) {
            let base = service_base(url).to_owned();
            let client = crate::http::Client::new(&base)?;
            let list: serde_json::Value = serde_json::from_slice(&client.get("/v1/statements")?)
                .with_context(|| format!("{base}/v1/statements: the answer is not JSON"))?;
            let mut seqs: Vec<u64> = list["statements"]
                .as_array()
                .map(|items| items.iter().filter_map(|s| s["seq"].as_u64()).collect())
                .unwrap_or_default();
            if seqs.is_empty() {
                return Err(
                    UsageError(format!("{base}/v1/statements: the service publishes no statement")).into()
                );
            }
            seqs.sort_unstable();
            return Ok(Self::Service { base, client, seqs });
        }
        let paths = files(dir, "cbor")?;
        if paths.is_empty() {
            return Err(UsageError(format!("{}: no statement files (*.cbor)", dir.display())).into());
        }
        // `statement-<n>.cbor` (what `escx statement export --dir` writes) is taken at its
        // name, which the statement must then bear out; any other file is read for the
        // number it claims.
        let mut numbered = paths
            .into_iter()
            .map(|path| match seq_from_name(&path) {
                Some(seq) => Ok((seq, path)),
                None => Ok((statement::claimed_seq(&read(&path)?).unwrap_or(0), path)),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        numbered.sort();
        Ok(Self::Files(numbered))
    }

    fn len(&self) -> usize {
        match self {
            Self::Files(files) => files.len(),
            Self::Service { seqs, .. } => seqs.len(),
        }
    }

    /// The `index`th statement by number: (its claimed number, its name, its bytes).
    fn fetch(&self, index: usize) -> anyhow::Result<(u64, String, Vec<u8>)> {
        match self {
            Self::Files(files) => {
                let (seq, path) = &files[index];
                Ok((*seq, path.display().to_string(), read(path)?))
            }
            Self::Service { base, client, seqs } => {
                let path = format!("/v1/statements/{}", seqs[index]);
                Ok((seqs[index], format!("{base}{path}"), client.get(&path)?))
            }
        }
    }
}

/// The number in a file name `statement-<n>.cbor`, when it is one (`n` without leading zeros).
fn seq_from_name(path: &Path) -> Option<u64> {
    let digits = path.file_name()?.to_str()?.strip_prefix("statement-")?.strip_suffix(".cbor")?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A statement verified from a source must be the one its place there claims: the number
/// in its file name, or the one the service listed it under (`statement-chain`).
fn check_place(name: &str, claimed: u64, verified: &Verified) -> anyhow::Result<()> {
    if verified.payload.seq != claimed {
        return Err(escx_settlement::Error::from(statement::StatementError::Chain {
            reason: format!(
                "{name} holds statement {}, not statement {claimed}: a file is named by its statement's number",
                verified.payload.seq
            ),
        })
        .into());
    }
    Ok(())
}

/// Every statement in `dir`, verified under the operator's keys (in parallel) and chained.
fn load_statements(dir: &Path, operator: &OperatorKeys) -> anyhow::Result<Vec<Verified>> {
    let source = Source::open(dir)?;
    // A file that cannot be read fails in its place, as `audit_statements` does.
    let loaded: Vec<anyhow::Result<_>> = (0..source.len()).map(|i| source.fetch(i)).collect();
    let mut verified = loaded
        .into_par_iter()
        .map(|item| {
            let (claimed, name, bytes) = item?;
            let verified = operator
                .verify(&bytes)
                .map_err(escx_settlement::Error::from)
                .with_context(|| name.clone())?;
            check_place(&name, claimed, &verified)?;
            Ok(verified)
        })
        // The first failure by position, not whichever thread failed first.
        .collect::<Vec<anyhow::Result<_>>>()
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    operator.verify_chain(&mut verified).map_err(escx_settlement::Error::from)?;
    Ok(verified)
}

/// Where each statement's proofs file comes from: `statement-<seq>.proofs` in a directory,
/// or `GET /v1/statements/<seq>/proofs` of a service (service.md §2), whose answer is
/// checked exactly as the file. One client serves every statement.
enum ProofSource<'a> {
    Dir(&'a Path),
    Service { base: &'a str, client: crate::http::Client },
}

impl<'a> ProofSource<'a> {
    fn open(source: &'a Path) -> anyhow::Result<Self> {
        Ok(match as_url(source) {
            Some(url) => {
                let base = service_base(url);
                Self::Service { base, client: crate::http::Client::new(base)? }
            }
            None => Self::Dir(source),
        })
    }

    /// Statement `seq`'s proofs file, named for errors.
    fn fetch(&self, seq: u64) -> anyhow::Result<(String, Vec<u8>)> {
        match self {
            Self::Service { base, client } => {
                let path = format!("/v1/statements/{seq}/proofs");
                Ok((format!("{base}{path}"), client.get(&path)?))
            }
            Self::Dir(dir) => {
                let path = dir.join(format!("statement-{seq}.proofs"));
                Ok((path.display().to_string(), read(&path)?))
            }
        }
    }
}

/// `path` as the URL of an `escx serve`, when it is one.
fn as_url(path: &Path) -> Option<&str> {
    path.to_str().filter(|s| s.starts_with("http://") || s.starts_with("https://"))
}

/// The service's base URL from its URL or its `/v1/statements`.
fn service_base(url: &str) -> &str {
    url.trim_end_matches('/').trim_end_matches("/v1/statements")
}

fn period(text: &str) -> anyhow::Result<Period> {
    Ok(Period::parse(text).ok_or_else(|| UsageError(format!("--period: {text:?} is not YYYY-MM")))?)
}

/// The sentence a verified proof stands for, and nothing more.
fn proven_text(proven: &Proven) -> String {
    let over = format!(
        "{}'s payouts in {} over statements {}..{} ({}, {})",
        proven.party,
        proven.period,
        proven.statements.0,
        proven.statements.1,
        crate::output::count(proven.entries, "entry"),
        proven.currency
    );
    match proven.claim {
        Claim::Total(total) => {
            format!("{over} total {} {}", escx_settlement::payout::Signed(total), proven.currency)
        }
        Claim::AtLeast(x) => format!("{over} are at least {} {}", Micros(x), proven.currency),
    }
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

/// `escx audit prove --json` (spec/cli.md).
#[derive(Serialize)]
struct Proved<'a> {
    file: &'a Path,
    proves: String,
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
