//! `escx statement ...`

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use escx_manifest::Micros;
use escx_settlement::ledger::Ledger;
use escx_settlement::statement::{self, OpeningsFile};
use serde::Serialize;

use crate::failure::{self, UsageError};
use crate::output::{Align, Table, Ui};

#[derive(Subcommand)]
pub enum StatementCommand {
    /// The statements in a ledger: number, hash, time, entries.
    #[command(
        after_help = "Examples:\n  escx statement list ./ledger.db\n  escx statement list ./ledger.db --json"
    )]
    List(ListArgs),
    /// Write one signed statement to a file, for parties and auditors.
    #[command(after_help = "Examples:\n  escx statement export ./ledger.db --seq 3 -o statement-3.cbor")]
    Export(ExportArgs),
    /// Write a party's openings (its amounts and blindings) for one statement.
    #[command(
        after_help = "Examples:\n  escx statement openings ./ledger.db --seq 3 --party acme -o acme-3.openings"
    )]
    Openings(OpeningsArgs),
    /// Verify statements with the operator's public key: signature, Merkle root,
    /// conservation on hidden amounts, party index, and the chain between them.
    #[command(after_help = "\
Conservation is checked on the commitments alone: no amount is revealed. With several
files the chain is checked too (consecutive numbers, each naming the previous one's hash);
a gap is reported. With --openings, a party's amounts are checked against the commitments.

Examples:
  escx statement verify statement-3.cbor --operator-pub op.pub
  escx statement verify statement-4.cbor --operator-pub op.pub --previous statement-3.cbor
  escx statement verify statement-*.cbor --operator-pub op.pub --json
  escx statement verify statement-3.cbor --operator-pub op.pub --openings acme-3.openings")]
    Verify(VerifyArgs),
    /// Prove that every payout of a statement lies in [0, 2^64) (Bulletproofs range proofs).
    #[command(after_help = "\
The proofs are published beside the statement; `escx audit statements --proofs DIR` checks
them with the operator's public key alone.

Examples:
  escx statement prove ./ledger.db --seq 42 --operator-pub op.pub -o s-42.proofs
  escx statement prove ./ledger.db --operator-pub op.pub --dir ./proofs")]
    Prove(ProveArgs),
    /// Close a month that has ended for revenue proofs: its first statement after it.
    #[command(after_help = "\
A revenue proof for a month is checked only with the first statement issued after the
month, which shows that no statement of the month is left out (spec/proofs.md §3.1).
When no statement has been issued since the month ended, this signs an empty one; when
one has, it names it and signs nothing. A month that has not ended is refused.

Examples:
  escx statement close-period ./ledger.db --period 2026-11 --operator-key op.key
  escx statement close-period ./ledger.db --period 2026-11 --operator-key op.key --json")]
    ClosePeriod(ClosePeriodArgs),
}

#[derive(Args)]
pub struct ClosePeriodArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// The month, YYYY-MM.
    #[arg(long)]
    period: String,
    /// The operator's secret key: signs the closing statement.
    #[arg(long, value_name = "KEY")]
    operator_key: PathBuf,
    /// Close as of this time instead of now (RFC 3339 or @unix).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct ProveArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// Statement number (default: every statement, with --dir).
    #[arg(long)]
    seq: Option<u64>,
    /// The operator's public key (the statement is verified under it first).
    #[arg(long, value_name = "FILE")]
    operator_pub: PathBuf,
    /// Output file (with --seq).
    #[arg(short, long, value_name = "FILE", conflicts_with = "dir", requires = "seq")]
    out: Option<PathBuf>,
    /// Write statement-<seq>.proofs files into this directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct ListArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// Statement number.
    #[arg(long, required_unless_present = "dir", conflicts_with = "dir")]
    seq: Option<u64>,
    /// Output file.
    #[arg(short, long, value_name = "FILE", required_unless_present = "dir", conflicts_with = "dir")]
    out: Option<PathBuf>,
    /// Write every statement into this directory instead (statement-<seq>.cbor).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct OpeningsArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// Statement number.
    #[arg(long, required_unless_present = "dir", conflicts_with = "dir")]
    seq: Option<u64>,
    /// The party.
    #[arg(long)]
    party: String,
    /// Output file.
    #[arg(short, long, value_name = "FILE", required_unless_present = "dir", conflicts_with = "dir")]
    out: Option<PathBuf>,
    /// Write the party's openings of every statement into this directory instead
    /// (<party>-<seq>.openings, mode 0600 in a 0700 directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Statement files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The operator's public key.
    #[arg(long, value_name = "FILE")]
    operator_pub: PathBuf,
    /// The statement before the first file (checked as part of the chain).
    #[arg(long, value_name = "FILE")]
    previous: Option<PathBuf>,
    /// A rotation statement of the operator's key (repeatable): statements signed by a
    /// successor it endorses verify too (escx statement export --dir writes them).
    #[arg(long, value_name = "FILE")]
    rotation: Vec<PathBuf>,
    /// A party's openings for one of the statements.
    #[arg(long, value_name = "FILE")]
    openings: Option<PathBuf>,
}

fn write(path: &std::path::Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    escx::fsutil::write_atomic(path, bytes, mode, true).map_err(failure::at(path))
}

pub fn run(command: StatementCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        StatementCommand::ClosePeriod(args) => {
            let period = super::ledger::period(&args.period)?;
            let operator = crate::secrets::load_secret_key(&args.operator_key)?;
            let at = super::at_or_now(args.at.as_deref())?;
            let closed = Ledger::open(&args.ledger)?.close_period(period, &operator, at)?;
            ui.emit(&closed, || {
                if closed.signed {
                    format!("{} closed by statement {}, signed now (no entries)", closed.period, closed.seq)
                } else {
                    format!(
                        "{} is closed by statement {}, issued {} (nothing signed)",
                        closed.period,
                        closed.seq,
                        closed.issued_at.rfc3339()
                    )
                }
            });
        }
        StatementCommand::List(args) => {
            let list = Ledger::open(&args.ledger)?.statements()?;
            ui.emit(&Listed { statements: &list }, || {
                let mut table = Table::new(&[Align::Left, Align::Left, Align::Right, Align::Left]);
                for s in &list {
                    table.row([
                        format!("#{}", s.seq),
                        escx::timestamp::format_rfc3339(s.issued_at),
                        crate::output::count(s.entries, "entry"),
                        s.hash[..16].to_owned(),
                    ]);
                }
                if table.is_empty() {
                    return "no statements yet\n".into();
                }
                table.render("")
            });
        }
        StatementCommand::Export(args) => {
            let ledger = Ledger::open(&args.ledger)?;
            if let (Some(seq), Some(out)) = (args.seq, &args.out) {
                let bytes = ledger.statement(seq)?;
                write(out, &bytes, escx::fsutil::MODE_PUBLIC)?;
                ui.emit(&Exported { file: out, seq, bytes: bytes.len() }, || {
                    format!("statement {seq} -> {}", out.display())
                });
                return Ok(());
            }
            let dir = args.dir.as_ref().ok_or_else(|| UsageError("give --seq and -o, or --dir".into()))?;
            std::fs::create_dir_all(dir).map_err(|e| escx::Error::io(dir, e)).map_err(failure::at(dir))?;
            let list = ledger.statements()?;
            for info in &list {
                write(
                    &dir.join(format!("statement-{}.cbor", info.seq)),
                    &ledger.statement(info.seq)?,
                    escx::fsutil::MODE_PUBLIC,
                )?;
            }
            // The operator key's rotations go with the statements: an auditor holding the
            // first key follows them to every later one (settlement.md §4.5).
            let rotations = ledger.operator_rotations()?;
            for (n, rotation) in (1..).zip(&rotations) {
                let comment = format!("operator key rotation {n} of this ledger");
                write(
                    &dir.join(format!("operator-rotation-{n}.rot")),
                    rotation.to_text(&comment).as_bytes(),
                    escx::fsutil::MODE_PUBLIC,
                )?;
            }
            ui.emit(&ExportedAll { dir, statements: list.len(), rotations: rotations.len() }, || {
                let mut text =
                    format!("{} -> {}", crate::output::count(list.len(), "statement"), dir.display());
                if !rotations.is_empty() {
                    text.push_str(&format!(
                        " (and {})",
                        crate::output::count(rotations.len(), "operator key rotation")
                    ));
                }
                text
            });
        }
        StatementCommand::Openings(args) => {
            let ledger = Ledger::open(&args.ledger)?;
            if let (Some(seq), Some(out)) = (args.seq, &args.out) {
                let file = ledger.openings(seq, &args.party)?;
                // Openings reveal the party's amounts: only for that party.
                write(out, &escx::cbor::encode(&file), escx::fsutil::MODE_SECRET)?;
                ui.emit(
                    &OpeningsExported { file: out, seq, party: &args.party, openings: file.openings.len() },
                    || {
                        format!(
                            "{} of {} for statement {seq} -> {}",
                            crate::output::count(file.openings.len(), "opening"),
                            args.party,
                            out.display()
                        )
                    },
                );
                return Ok(());
            }
            let dir = args.dir.as_ref().ok_or_else(|| UsageError("give --seq and -o, or --dir".into()))?;
            escx::fsutil::create_private_dir(dir).map_err(failure::at(dir))?;
            let list = ledger.statements()?;
            for info in &list {
                let file = ledger.openings(info.seq, &args.party)?;
                write(
                    &dir.join(format!("{}-{}.openings", args.party, info.seq)),
                    &escx::cbor::encode(&file),
                    escx::fsutil::MODE_SECRET,
                )?;
            }
            ui.emit(&OpeningsExportedAll { dir, party: &args.party, statements: list.len() }, || {
                format!(
                    "openings of {} for {} -> {}",
                    args.party,
                    crate::output::count(list.len(), "statement"),
                    dir.display()
                )
            });
        }
        StatementCommand::Prove(args) => {
            let operator = escx::keyfile::read_public_key(&args.operator_pub)
                .map_err(failure::at(&args.operator_pub))?;
            let ledger = Ledger::open(&args.ledger)?;
            let seqs: Vec<u64> = match args.seq {
                Some(seq) => vec![seq],
                None => ledger.statements()?.iter().map(|s| s.seq).collect(),
            };
            if let Some(dir) = &args.dir {
                std::fs::create_dir_all(dir)
                    .map_err(|e| escx::Error::io(dir, e))
                    .map_err(failure::at(dir))?;
            }
            let mut made = Vec::new();
            for seq in seqs {
                let proofs = ledger.prove_statement(seq, &operator)?;
                let path = match (&args.out, &args.dir) {
                    (Some(out), _) => out.clone(),
                    (None, Some(dir)) => dir.join(format!("statement-{seq}.proofs")),
                    (None, None) => {
                        return Err(UsageError("give -o FILE (with --seq) or --dir DIR".into()).into());
                    }
                };
                write(&path, &proofs.to_cbor(), escx::fsutil::MODE_PUBLIC)?;
                made.push(Proof { seq, file: path, entries: proofs.entries.len() });
            }
            ui.emit(&Proved { proofs: &made }, || {
                made.iter()
                    .map(|m| {
                        format!(
                            "statement {}: range proofs for {} -> {}\n",
                            m.seq,
                            crate::output::count(m.entries, "entry"),
                            m.file.display()
                        )
                    })
                    .collect()
            });
        }
        StatementCommand::Verify(args) => verify(args, ui)?,
    }
    Ok(())
}

fn verify(args: VerifyArgs, ui: &Ui) -> anyhow::Result<()> {
    let operator =
        escx::keyfile::read_public_key(&args.operator_pub).map_err(failure::at(&args.operator_pub))?;
    let rotations = args
        .rotation
        .iter()
        .map(|p| escx::rotation::RotationStatement::read(p).map_err(failure::at(p)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let keys = statement::OperatorKeys::follow(operator, &rotations).map_err(escx_settlement::Error::from)?;
    let mut statements = Vec::new();
    for path in args.previous.iter().chain(&args.files) {
        let bytes = std::fs::read(path).map_err(|e| escx::Error::io(path, e)).map_err(failure::at(path))?;
        let verified = keys
            .verify(&bytes)
            .map_err(escx_settlement::Error::from)
            .with_context(|| path.display().to_string())?;
        statements.push(verified);
    }
    keys.verify_chain(&mut statements).map_err(escx_settlement::Error::from)?;
    let mut amounts = None;
    if let Some(path) = &args.openings {
        let bytes = std::fs::read(path).map_err(|e| escx::Error::io(path, e)).map_err(failure::at(path))?;
        let file = OpeningsFile::from_cbor(&bytes).with_context(|| path.display().to_string())?;
        let target = statements
            .iter()
            .find(|s| s.payload.seq == file.seq)
            .ok_or_else(|| statement::StatementError::OpeningsInvalid {
                reason: format!(
                    "they are for statement {}, which is not among the statements given",
                    file.seq
                ),
            })
            .with_context(|| path.display().to_string())?;
        let checked = statement::check_openings(target, &file).map_err(escx_settlement::Error::from)?;
        amounts = Some((file.party.clone(), file.seq, checked));
    }
    let summary: Vec<_> = statements
        .iter()
        .map(|s| StatementSummary {
            seq: s.payload.seq,
            entries: s.payload.entries.len(),
            hash: hex::encode(s.hash),
            issued_at: s.payload.issued_at.rfc3339(),
        })
        .collect();
    // A party's payouts are each at most its entry's gross, and a statement's grosses are
    // settled amounts, so these sums fit; a forged file that overflows is refused.
    let totals = amounts.as_ref().map(|(_, _, list)| {
        (
            Micros::checked_sum(list.iter().map(|o| o.amount)),
            Micros::checked_sum(list.iter().map(|o| o.gross)),
        )
    });
    let (total, gross) = match totals {
        Some((Some(total), Some(gross))) => (total, gross),
        Some(_) => anyhow::bail!("the opened amounts add up to more than 2^64 micro-units"),
        None => (Micros::ZERO, Micros::ZERO),
    };
    let opened = amounts.as_ref().map(|(party, seq, list)| OpenedReport {
        party,
        seq: *seq,
        total_micros: total,
        entries: list
            .iter()
            .map(|o| OpenedEntry { entry: o.entry, micros: o.amount, gross_micros: o.gross })
            .collect(),
    });
    ui.emit(&Verified { ok: true, statements: summary, openings: opened }, || {
        let mut text = String::new();
        for s in &statements {
            text += &format!(
                "statement {}: signature valid, {} {} their gross on hidden amounts, index complete\n",
                s.payload.seq,
                crate::output::count(s.payload.entries.len(), "entry"),
                if s.payload.entries.len() == 1 { "conserves" } else { "conserve" }
            );
        }
        if statements.len() > 1 {
            text += &format!(
                "chain {}..{} unbroken\n",
                statements[0].payload.seq,
                statements[statements.len() - 1].payload.seq
            );
        }
        if let Some((party, seq, list)) = &amounts {
            text += &format!(
                "{party}: {} in statement {seq} open correctly, total {total} of entries grossing {gross}\n",
                crate::output::count(list.len(), "payout"),
            );
        }
        text
    });
    Ok(())
}

/// `escx statement list --json` (spec/cli.md).
#[derive(Serialize)]
struct Listed<'a> {
    statements: &'a [escx_settlement::ledger::StatementInfo],
}

/// `escx statement export --seq N -o FILE --json`.
#[derive(Serialize)]
struct Exported<'a> {
    file: &'a Path,
    seq: u64,
    bytes: usize,
}

/// `escx statement export --dir DIR --json`.
#[derive(Serialize)]
struct ExportedAll<'a> {
    dir: &'a Path,
    statements: usize,
    rotations: usize,
}

/// `escx statement openings --seq N -o FILE --json`.
#[derive(Serialize)]
struct OpeningsExported<'a> {
    file: &'a Path,
    seq: u64,
    party: &'a str,
    openings: usize,
}

/// `escx statement openings --dir DIR --json`.
#[derive(Serialize)]
struct OpeningsExportedAll<'a> {
    dir: &'a Path,
    party: &'a str,
    statements: usize,
}

/// `escx statement prove --json`.
#[derive(Serialize)]
struct Proved<'a> {
    proofs: &'a [Proof],
}

#[derive(Serialize)]
struct Proof {
    seq: u64,
    file: PathBuf,
    entries: usize,
}

/// `escx statement verify --json`.
#[derive(Serialize)]
struct Verified<'a> {
    ok: bool,
    statements: Vec<StatementSummary>,
    openings: Option<OpenedReport<'a>>,
}

#[derive(Serialize)]
struct StatementSummary {
    seq: u64,
    entries: usize,
    hash: String,
    issued_at: String,
}

/// What a party's openings proved.
#[derive(Serialize)]
struct OpenedReport<'a> {
    party: &'a str,
    seq: u64,
    total_micros: Micros,
    entries: Vec<OpenedEntry>,
}

#[derive(Serialize)]
struct OpenedEntry {
    entry: u32,
    micros: Micros,
    gross_micros: Micros,
}
