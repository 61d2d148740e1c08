//! `escx dispute ...`

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use escx_settlement::disputes::Outcome;
use escx_settlement::ledger::Ledger;
use serde::Serialize;

use crate::output::{Align, Table, Ui};

#[derive(Subcommand)]
pub enum DisputeCommand {
    /// Put a settled sale or usage in DISPUTED: its payouts are withheld from payout reports.
    #[command(after_help = "\
SETTLEMENT is a settlement id (64 hex digits, from `escx ledger history`) or the event id.
Every dispute step writes an audit-log row.

Examples:
  escx dispute open ./ledger.db issuer:3f2a:sale:7 --reason \"chargeback 8841\"
  escx dispute open ./ledger.db 9c1e...d0 --reason \"customer reports no delivery\" --json")]
    Open(OpenArgs),
    /// Resolve a dispute: upheld (the settlement stands) or reversed (the gross goes back).
    #[command(after_help = "\
`--outcome reversed` writes compensating transfers (each party gives back what it still
holds from the settlement after any partial refunds, recoupment is undone) under a new settlement, cancels the disputed one, and signs a
statement with --operator-key. `--outcome upheld` returns the settlement to SETTLED and
releases the withheld payouts in the month of the resolution. Nothing is edited.

Examples:
  escx dispute resolve ./ledger.db issuer:3f2a:sale:7 --outcome upheld --note \"delivery proven\"
  escx dispute resolve ./ledger.db issuer:3f2a:sale:7 --outcome reversed --note \"chargeback lost\" --operator-key op.key")]
    Resolve(ResolveArgs),
    /// List disputes, open ones first.
    #[command(
        after_help = "Examples:\n  escx dispute list ./ledger.db\n  escx dispute list ./ledger.db --json"
    )]
    List(ListArgs),
}

#[derive(Args)]
pub struct OpenArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// The settlement: its id or its event id.
    settlement: String,
    /// Why (kept in the audit log).
    #[arg(long)]
    reason: String,
    /// The time of opening (default now).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutcomeArg {
    Upheld,
    Reversed,
}

#[derive(Args)]
pub struct ResolveArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// The settlement: its id or its event id.
    settlement: String,
    /// How the dispute ends.
    #[arg(long, value_enum)]
    outcome: OutcomeArg,
    /// The resolution (kept in the audit log).
    #[arg(long)]
    note: String,
    /// The operator's secret key (required for a reversal: it is signed into a statement).
    #[arg(long, value_name = "KEY")]
    operator_key: Option<PathBuf>,
    /// The time of resolution (default now).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct ListArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
}

pub fn run(command: DisputeCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        DisputeCommand::Open(args) => dispute_open(args, ui),
        DisputeCommand::Resolve(args) => dispute_resolve(args, ui),
        DisputeCommand::List(args) => dispute_list(args, ui),
    }
}

/// `escx dispute open --json` (spec/cli.md).
#[derive(Serialize)]
struct Opened<'a> {
    settlement: &'a str,
    state: &'static str,
}

/// `escx dispute resolve --json`.
#[derive(Serialize)]
struct Resolved<'a> {
    resolution: &'a escx_settlement::disputes::Resolution,
}

/// `escx dispute list --json`.
#[derive(Serialize)]
struct Listed<'a> {
    disputes: &'a [escx_settlement::disputes::Dispute],
}

fn dispute_open(args: OpenArgs, ui: &Ui) -> anyhow::Result<()> {
    let now = super::at_or_now(args.at.as_deref())?;
    let mut ledger = Ledger::open(&args.ledger)?;
    let settlement = ledger.find_settlement(&args.settlement)?;
    ledger.open_dispute(&settlement, &args.reason, now)?;
    ui.emit(&Opened { settlement: &settlement, state: "DISPUTED" }, || {
        format!("settlement {settlement} is DISPUTED; its payouts are withheld until it is resolved")
    });
    Ok(())
}

fn dispute_resolve(args: ResolveArgs, ui: &Ui) -> anyhow::Result<()> {
    let now = super::at_or_now(args.at.as_deref())?;
    let outcome = match args.outcome {
        OutcomeArg::Upheld => Outcome::Upheld,
        OutcomeArg::Reversed => Outcome::Reversed,
    };
    let mut ledger = Ledger::open(&args.ledger)?;
    let settlement = ledger.find_settlement(&args.settlement)?;
    let operator = match &args.operator_key {
        Some(path) => Some(crate::secrets::load_secret_key(path)?),
        None => None,
    };
    let resolution = ledger.resolve_dispute(&settlement, outcome, &args.note, operator.as_ref(), now)?;
    ui.emit(&Resolved { resolution: &resolution }, || match outcome {
        Outcome::Upheld => format!("settlement {settlement}: dispute upheld, SETTLED again"),
        Outcome::Reversed => {
            let text = format!(
                "settlement {settlement}: reversed by {} (statement {}), CANCELLED\n",
                resolution.reversal.as_deref().unwrap_or(""),
                resolution.statement.unwrap_or(0)
            );
            let mut table = Table::new(&[Align::Left, Align::Left, Align::Right]);
            for (party, amount) in &resolution.given_back {
                table.row([party.clone(), "gives back".into(), amount.to_string()]);
            }
            text + &table.render("  ")
        }
    });
    Ok(())
}

fn dispute_list(args: ListArgs, ui: &Ui) -> anyhow::Result<()> {
    let disputes = Ledger::open(&args.ledger)?.disputes()?;
    ui.emit(&Listed { disputes: &disputes }, || {
        let mut table =
            Table::new(&[Align::Left, Align::Left, Align::Right, Align::Left, Align::Left, Align::Left]);
        for d in &disputes {
            table.row([
                d.settlement[..16].to_owned(),
                d.event.clone(),
                d.gross.to_string(),
                d.currency.clone(),
                d.outcome.map_or("OPEN", |o| o.name()).to_owned(),
                d.reason.clone(),
            ]);
        }
        let mut text = table.render("");
        if text.is_empty() {
            text = "no disputes\n".into();
        }
        text
    });
    Ok(())
}
