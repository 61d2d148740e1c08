//! `escx payout report`

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use escx_settlement::ledger::Ledger;

use crate::failure;
use crate::output::{Align, Table, Ui};

#[derive(Subcommand)]
pub enum PayoutCommand {
    /// Monthly payout report per party: gross, fees, net, carried balance, payable.
    #[command(after_help = "\
For each party and currency, from the transfers dated in the month: the gross of the
settlements it took part in (refunds and reversals negative), what went to other parties
(fees, by party in JSON), what it earned, what disputes withhold, and what is payable:
the carried balance plus the month's net once it reaches the ledger's payout threshold
(`escx settle init --payout-threshold`), otherwise carried to the next month. Amounts are
exact decimals. Every export is recorded in the ledger's audit log with the BLAKE3 hash of
the report.

Examples:
  escx payout report ./ledger.db --period 2026-11 --format csv > payouts-2026-11.csv
  escx payout report ./ledger.db --period 2026-11 --party acme --format json
  escx payout report ./ledger.db --period 2026-11 -o payouts.csv --format csv")]
    Report(ReportArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Csv,
    Json,
}

#[derive(Args)]
pub struct ReportArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// The month, YYYY-MM (UTC).
    #[arg(long)]
    period: String,
    /// Only this party.
    #[arg(long)]
    party: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the report to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(command: PayoutCommand, ui: &Ui) -> anyhow::Result<()> {
    let PayoutCommand::Report(args) = command;
    let period = super::ledger::period(&args.period)?;
    let mut ledger = Ledger::open(&args.ledger)?;
    let report = ledger.payout_report(period, args.party.as_deref())?;
    let format = if ui.json { Format::Json } else { args.format };
    let (name, bytes) = match format {
        Format::Csv => ("csv", report.to_csv().into_bytes()),
        Format::Json => ("json", {
            let mut bytes = serde_json::to_vec_pretty(&report)?;
            bytes.push(b'\n');
            bytes
        }),
        Format::Text => ("text", text(&report).into_bytes()),
    };
    ledger.record_payout_export(&report, name, &bytes, escx::now_unix())?;
    match &args.out {
        Some(path) => {
            escx::fsutil::write_atomic(path, &bytes, escx::fsutil::MODE_PUBLIC, true)
                .map_err(failure::at(path))?;
            if !ui.json {
                eprintln!(
                    "payout report {} ({} lines) -> {}",
                    report.period,
                    report.lines.len(),
                    path.display()
                );
            }
        }
        None => crate::output::write_stdout(&bytes)?,
    }
    Ok(())
}

fn text(report: &escx_settlement::payout::PayoutReport) -> String {
    let mut text = format!("payouts {} (threshold {}):\n", report.period, report.threshold);
    if report.lines.is_empty() {
        return text + "no payouts in this period\n";
    }
    let mut align = vec![Align::Left, Align::Left];
    align.extend([Align::Right; 7]);
    let mut table = Table::new(&align);
    table.row([
        "party",
        "cur",
        "gross",
        "fees",
        "earned",
        "withheld",
        "carried in",
        "payable",
        "carried out",
    ]);
    for l in &report.lines {
        table.row([
            l.party.clone(),
            l.currency.clone(),
            l.gross.to_string(),
            l.fees.to_string(),
            l.earned.to_string(),
            l.withheld.to_string(),
            l.carried_in.to_string(),
            l.payable.to_string(),
            l.carried_out.to_string(),
        ]);
    }
    text += &table.render("");
    text
}
