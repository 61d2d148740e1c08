//! `escx ledger ...`

use std::path::PathBuf;

use clap::{Args, Subcommand};
use escx_manifest::Micros;
use escx_settlement::ledger::Ledger;
use serde::Serialize;

use crate::failure::UsageError;
use crate::output::{Align, Table, Ui};

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Every account's balance (credits minus debits), or one party's.
    #[command(after_help = "\
`@customers` is the account every gross amount is paid from, so it is negative by the
total settled; the parties' balances add up to its opposite.

Examples:
  escx ledger balances ./ledger.db
  escx ledger balances ./ledger.db --party acme --json")]
    Balances(BalancesArgs),
    /// Every transfer touching a party, optionally in one month.
    #[command(
        after_help = "Examples:\n  escx ledger history ./ledger.db --party acme\n  escx ledger history ./ledger.db --party acme --period 2026-11 --json"
    )]
    History(HistoryArgs),
    /// Check the ledger's invariants: double entry balances, every settlement conserves its gross.
    #[command(
        after_help = "Examples:\n  escx ledger audit ./ledger.db\n  escx ledger audit ./ledger.db --json"
    )]
    Audit(AuditArgs),
    /// Hand the ledger to a new operator key: the old key signs a rotation statement.
    #[command(after_help = "\
Every statement of a ledger is signed by the operator key it holds. To change the key, the
held key endorses its successor in a rotation statement (spec/settlement.md §4.5), which the
ledger keeps; from then on only the new key signs. Auditors holding the old public key
follow the rotation: escx statement export --dir writes it beside the statements, and
escx serve publishes it at /v1/rotations. Running it again is harmless.

Examples:
  escx ledger rotate-key ./ledger.db --operator-key op.key --new-pub op-2027.pub
  escx ledger rotate-key ./ledger.db --operator-key op.key --new-pub op-2027.pub -o op-2027.rot --json")]
    RotateKey(RotateKeyArgs),
}

#[derive(Args)]
pub struct RotateKeyArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// The key the ledger holds now (its secret key file): it signs the rotation.
    #[arg(long, value_name = "KEY")]
    operator_key: PathBuf,
    /// The successor's public key file.
    #[arg(long, value_name = "FILE")]
    new_pub: PathBuf,
    /// Also write the rotation statement to this file.
    #[arg(short, long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace the output file if it exists.
    #[arg(long, requires = "out")]
    force: bool,
    /// Date the rotation at this time instead of now (RFC 3339 or @unix).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct BalancesArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// Only this party's accounts.
    #[arg(long)]
    party: Option<String>,
}

#[derive(Args)]
pub struct HistoryArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// The party.
    #[arg(long)]
    party: String,
    /// A calendar month, `YYYY-MM` (UTC).
    #[arg(long, value_name = "YYYY-MM")]
    period: Option<String>,
}

#[derive(Args)]
pub struct AuditArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
}

pub fn run(command: LedgerCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Balances(args) => ledger_balances(args, ui),
        LedgerCommand::History(args) => ledger_history(args, ui),
        LedgerCommand::Audit(args) => ledger_audit(args, ui),
        LedgerCommand::RotateKey(args) => rotate_key(args, ui),
    }
}

/// `escx ledger rotate-key --json`.
#[derive(Serialize)]
struct Rotated<'a> {
    old_key_id: String,
    new_key_id: String,
    created_at: String,
    file: Option<&'a std::path::Path>,
}

fn rotate_key(args: RotateKeyArgs, ui: &Ui) -> anyhow::Result<()> {
    let old = crate::secrets::load_secret_key(&args.operator_key)?;
    let new = escx::keyfile::read_public_key(&args.new_pub).map_err(crate::failure::at(&args.new_pub))?;
    let at = super::at_or_now(args.at.as_deref())?;
    let rotation = Ledger::open(&args.ledger)?.rotate_operator_key(&old, &new, at)?;
    let claims = rotation.claims()?;
    if let Some(out) = &args.out {
        let comment = format!("operator key rotation: {} hands the ledger to {}", old.id(), new.id());
        escx::fsutil::write_atomic(
            out,
            rotation.to_text(&comment).as_bytes(),
            escx::fsutil::MODE_PUBLIC,
            args.force,
        )
        .map_err(crate::failure::at(out))?;
    }
    ui.emit(
        &Rotated {
            old_key_id: old.id().to_string(),
            new_key_id: new.id().to_string(),
            created_at: claims.created_at.rfc3339(),
            file: args.out.as_deref(),
        },
        || {
            let mut text = format!(
                "the ledger's operator key is now {} (rotation signed by {} at {})",
                new.id(),
                old.id(),
                claims.created_at.rfc3339()
            );
            if let Some(out) = &args.out {
                text.push_str(&format!(" -> {}", out.display()));
            }
            text
        },
    );
    Ok(())
}

/// `escx ledger balances --json` (spec/cli.md).
#[derive(Serialize)]
struct BalancesReport<'a> {
    balances: &'a [escx_settlement::store::Balance],
}

/// `escx ledger history --json`.
#[derive(Serialize)]
struct HistoryReport<'a> {
    party: &'a str,
    period: Option<&'a str>,
    transfers: &'a [escx_settlement::ledger::HistoryRow],
}

/// `escx ledger audit --json`.
#[derive(Serialize)]
struct AuditReport<'a> {
    ok: bool,
    audit: &'a escx_settlement::ledger::Audit,
}

fn ledger_balances(args: BalancesArgs, ui: &Ui) -> anyhow::Result<()> {
    let balances = Ledger::open(&args.ledger)?.balances(args.party.as_deref())?;
    ui.emit(&BalancesReport { balances: &balances }, || {
        let mut table = Table::new(&[Align::Left, Align::Right, Align::Left]);
        for b in &balances {
            let sign = if b.micros < 0 { "-" } else { "" };
            let amount = Micros(b.micros.unsigned_abs());
            table.row([b.account.clone(), format!("{sign}{amount}"), b.currency.clone()]);
        }
        if table.is_empty() {
            return "no accounts yet\n".into();
        }
        table.render("")
    });
    Ok(())
}

fn ledger_history(args: HistoryArgs, ui: &Ui) -> anyhow::Result<()> {
    let (from, to) = match &args.period {
        Some(text) => period(text)?.range(),
        None => (escx::UnixSeconds::EPOCH, escx::UnixSeconds::MAX),
    };
    let rows = Ledger::open(&args.ledger)?.history(&args.party, from, to)?;
    ui.emit(&HistoryReport { party: &args.party, period: args.period.as_deref(), transfers: &rows }, || {
        let mut table = Table::new(&[
            Align::Left,
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Left,
            Align::Left,
            Align::Left,
        ]);
        for r in &rows {
            let sign = if r.micros < 0 { "-" } else { "+" };
            table.row([
                escx::timestamp::format_rfc3339(r.at),
                r.kind.to_string(),
                r.package.to_string(),
                format!("{sign}{}", Micros(r.micros.unsigned_abs())),
                r.currency.clone(),
                r.settlement[..16].to_owned(),
                format!("({})", r.state),
            ]);
        }
        let mut text = table.render("");
        if text.is_empty() {
            text = format!("no transfers for {}\n", args.party);
        }
        text
    });
    Ok(())
}

fn ledger_audit(args: AuditArgs, ui: &Ui) -> anyhow::Result<()> {
    let audit = Ledger::open(&args.ledger)?.audit()?;
    let ok = audit.ok();
    if !ok {
        anyhow::bail!(escx_settlement::Error::Invariant {
            path: super::shown(&args.ledger),
            reason: format!(
                "invariants broken: imbalance {} micro-units, {} settlements not conserving their gross, \
                 held amounts not matching the pending holds in [{}]",
                audit.imbalance,
                audit.unconserved.len(),
                audit.holds_mismatch.join(", ")
            ),
        });
    }
    ui.emit(&AuditReport { ok, audit: &audit }, || {
        format!(
            "{}, {}: double entry balances, every settlement pays out exactly its gross, @holds equals the pending holds",
            crate::output::count(audit.settlements, "settlement"),
            crate::output::count(audit.transfers, "transfer")
        )
    });
    Ok(())
}

/// `--period YYYY-MM`.
pub fn period(text: &str) -> anyhow::Result<escx_settlement::payout::Period> {
    Ok(escx_settlement::payout::Period::parse(text)
        .ok_or_else(|| UsageError(format!("--period {text:?}: expected a month, YYYY-MM (e.g. 2026-11)")))?)
}
