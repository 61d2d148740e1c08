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
    }
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
