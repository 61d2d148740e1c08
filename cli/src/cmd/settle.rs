//! `escx settle ...`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use escx_manifest::Micros;
use escx_settlement::ledger::{Ledger, Manifests, Options, PlatformFee};
use escx_settlement::waterfall::{self, Tier};
use serde::Serialize;

use crate::failure::UsageError;
use crate::output::{Align, Table, Ui};

#[derive(Subcommand)]
pub enum SettleCommand {
    /// Create a ledger (a SQLite file, or a PostgreSQL database), optionally with a platform fee.
    #[command(after_help = "\
The platform fee is the operator's share of every gross amount, taken before the solution
and package tiers; it is recorded in the ledger so every run applies the same one.

Several operators' nodes share one PostgreSQL ledger; its writers take turns on an
advisory lock and run SERIALIZABLE (spec/settlement.md §5.5).

Examples:
  escx settle init ./ledger.db
  escx settle init ./ledger.db --platform-bps 1000 --platform-party platform --payout-threshold 50.00
  escx settle init 'postgresql:///ledger?host=/run/postgresql' --platform-bps 1000")]
    Init(InitArgs),
    /// Settle billing events through their packages' waterfalls, atomically per batch.
    #[command(after_help = "\
EVENTS is a JSON array of billing events (spec/settlement.md §1), e.g. from
`escx issuer sales ./issuer --events`. Every event is checked before anything is written:
its manifest (from --manifests), currency, and, for an id settled before, that its content
is unchanged (a re-run is a no-op; a changed event under a used id is refused). Each batch
is one transaction that closes with a statement signed by --operator-key: a crash leaves
whole batches or none. A refund event (`refund_of`) gives back all or part of a sale, each
party in proportion to what it still holds from it.

Examples:
  escx settle run ./ledger.db --events events.json --manifests ./manifests --operator-key op.key
  escx settle run postgres://escx@db.internal/ledger --events events.json --manifests ./manifests --operator-key op.key
  escx issuer sales ./issuer --events > events.json && escx settle run ./ledger.db --events events.json --manifests ./manifests --operator-key op.key --json")]
    Run(RunArgs),
    /// Dry run: who gets what from one gross amount, step by step (nothing is stored).
    #[command(after_help = "\
Runs the [revenue] waterfall in force at --at (default now) over --gross. With --solution
the solution's [solution.tier] step runs first on the gross and passes the rest down; with
--platform-bps the platform's share of gross runs before everything. Every step rounds
down and the dust goes to the residual party, so the payouts always sum to the gross.

Examples:
  escx settle preview --manifest manifest.toml --gross 1234.56
  escx settle preview --manifest ./acme-thermal --gross 49.00 --solution ./suite --platform-bps 1000 --json
  escx settle preview --manifest manifest.toml --gross 100 --recouped investor=4950.00 --at 2027-03-01")]
    Preview(PreviewArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// The ledger to create: a SQLite file, or a PostgreSQL URL (postgres://...) of a
    /// database without a ledger.
    ledger: PathBuf,
    /// The platform's share of every gross, in basis points.
    #[arg(long, value_name = "BPS")]
    platform_bps: Option<u32>,
    /// The platform's party name.
    #[arg(long, value_name = "PARTY", default_value = "platform", requires = "platform_bps")]
    platform_party: String,
    /// Payout reports pay a party once its carried balance reaches this amount (default 0:
    /// any positive balance); below it, the balance carries to the next month.
    #[arg(long, value_name = "AMOUNT")]
    payout_threshold: Option<String>,
}

#[derive(Args)]
pub struct RunArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// Billing events, a JSON array.
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    /// Directory of package and solution manifests (searched 4 levels deep for *.toml).
    #[arg(long, value_name = "DIR")]
    manifests: PathBuf,
    /// The operator's secret key: signs each batch's statement.
    #[arg(long, value_name = "KEY")]
    operator_key: PathBuf,
    /// Settlements per transaction.
    #[arg(long, value_name = "N", default_value_t = escx_settlement::ledger::BATCH_DEFAULT)]
    batch_size: usize,
    /// Issue the statements at this time instead of now, to replay a past month's events
    /// (RFC 3339 or @unix). Statement times never go back: a time before the last
    /// statement's is that statement's time.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct PreviewArgs {
    /// The package's manifest.toml (or its directory), with [revenue].
    #[arg(long, value_name = "PATH")]
    manifest: PathBuf,
    /// Gross amount, a decimal with up to 6 places (`1234.56`).
    #[arg(long, value_name = "AMOUNT")]
    gross: String,
    /// A solution manifest whose [solution.tier] step runs before the package's waterfall.
    #[arg(long, value_name = "PATH")]
    solution: Option<PathBuf>,
    /// The platform's share of gross in basis points, run before everything else.
    #[arg(long, value_name = "BPS")]
    platform_bps: Option<u32>,
    /// The platform's party name.
    #[arg(long, value_name = "PARTY", default_value = "platform", requires = "platform_bps")]
    platform_party: String,
    /// What a recouping party has received so far (`investor=4950.00`); repeatable.
    #[arg(long, value_name = "PARTY=AMOUNT")]
    recouped: Vec<String>,
    /// The sale time, which picks the [revenue] version in force (2027-01-01, RFC 3339, @unix).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

pub fn run(command: SettleCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        SettleCommand::Init(args) => init(args, ui),
        SettleCommand::Run(args) => settle(args, ui),
        SettleCommand::Preview(args) => preview(args, ui),
    }
}

fn init(args: InitArgs, ui: &Ui) -> anyhow::Result<()> {
    let fee = match args.platform_bps {
        Some(bps) if bps > 10_000 => {
            return Err(UsageError(format!("--platform-bps {bps}: at most 10000")).into());
        }
        Some(bps) => Some(PlatformFee { party: args.platform_party.clone(), bps }),
        None => None,
    };
    if args.ledger.exists() {
        return Err(crate::failure::exists(
            &args.ledger,
            "a ledger is never re-created; open it with the other commands",
        ));
    }
    let threshold = match &args.payout_threshold {
        Some(text) => {
            Micros::parse(text).map_err(|e| UsageError(format!("--payout-threshold {text:?}: {e}")))?
        }
        None => Micros(0),
    };
    Ledger::create(&args.ledger, &Options { platform: fee.clone(), payout_threshold: threshold })?;
    ui.emit(
        &Created {
            ledger: &super::shown(&args.ledger),
            platform: fee.as_ref(),
            payout_threshold: threshold.to_string(),
        },
        || {
            let fee = fee
                .as_ref()
                .map_or(String::new(), |f| format!(" with a platform fee of {} bps to {}", f.bps, f.party));
            format!(
                "created ledger {}{fee}, payout threshold {threshold}",
                super::shown(&args.ledger).display()
            )
        },
    );
    Ok(())
}

fn settle(args: RunArgs, ui: &Ui) -> anyhow::Result<()> {
    let events = escx_settlement::events::read_events(&args.events)?;
    let manifests = Manifests::load_dir(&args.manifests)?;
    let mut ledger = Ledger::open(&args.ledger)?;
    let operator = crate::secrets::load_secret_key(&args.operator_key)?;
    // A bar from 1 000 events on: below that a run takes well under a second.
    let progress = ui.count_progress(1_000);
    let at = super::at_or_now(args.at.as_deref())?;
    let report =
        ledger.settle_with_progress(&events, &manifests, args.batch_size, &operator, at, &progress)?;
    ui.emit(&Settled { ledger: &super::shown(&args.ledger), events: events.len(), report: &report }, || {
        format!(
            "{}: {} settled ({}, {}, {} signed), {} already settled and unchanged",
            crate::output::count(events.len(), "event"),
            report.settled,
            crate::output::count(report.transfers, "transfer"),
            crate::output::count(report.batches, "transaction"),
            crate::output::count(report.statements, "statement"),
            report.unchanged
        )
    });
    Ok(())
}

fn preview(args: PreviewArgs, ui: &Ui) -> anyhow::Result<()> {
    let gross =
        Micros::parse(&args.gross).map_err(|e| UsageError(format!("--gross {:?}: {e}", args.gross)))?;
    let at = super::at_or_now(args.at.as_deref())?;
    let mut recouped = BTreeMap::new();
    for item in &args.recouped {
        let (party, amount) = item
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--recouped {item:?}: expected PARTY=AMOUNT")))?;
        let amount = Micros::parse(amount).map_err(|e| UsageError(format!("--recouped {item:?}: {e}")))?;
        recouped.insert(party.to_owned(), amount);
    }
    let manifest = super::manifest::load(&args.manifest)?;
    let manifest_file = super::manifest::manifest_path(&args.manifest);
    let revenue = manifest.revenue.as_ref().ok_or_else(|| {
        UsageError(format!("{}: no [revenue] table: add a waterfall to preview", manifest_file.display()))
    })?;

    let mut chain = Vec::new();
    if let Some(bps) = args.platform_bps {
        if bps > 10_000 {
            return Err(UsageError(format!("--platform-bps {bps}: at most 10000")).into());
        }
        chain.push(Tier::platform(&args.platform_party, bps));
    }
    if let Some(path) = &args.solution {
        let solution_manifest = super::manifest::load(path)?;
        let solution = solution_manifest.solution.as_ref().ok_or_else(|| {
            UsageError(format!("{}: no [solution] table", super::manifest::manifest_path(path).display()))
        })?;
        chain.push(Tier::solution(&solution_manifest.package.name, solution));
    }
    chain.push(Tier::package(format!("package {}", manifest.package.name), revenue, at)?);
    let split = waterfall::apply(&chain, gross, &recouped)?;

    let preview = Preview { split: &split, currency: &revenue.currency, gross: gross.to_string() };
    ui.emit(&preview, || {
        let mut text = format!(
            "{} {} through {}:\n",
            gross,
            revenue.currency,
            crate::output::count(chain.len(), "tier")
        );
        let mut steps = Table::new(&[Align::Left, Align::Left, Align::Left, Align::Right]);
        for step in &split.trace {
            let who = if step.party.is_empty() { "(next tier)".to_owned() } else { step.party.clone() };
            let paid = if step.rule == "pass_down" { step.base_micros } else { step.paid_micros };
            steps.row([step.tier.clone(), step.rule.to_string(), who, paid.to_string()]);
        }
        text += &steps.render("  ");
        text += "payouts:\n";
        let mut payouts = Table::new(&[Align::Left, Align::Right, Align::Left]);
        for payout in &split.payouts {
            payouts.row([payout.party.clone(), payout.micros.to_string(), revenue.currency.clone()]);
        }
        text + &payouts.render("  ")
    });
    Ok(())
}

/// `escx settle init --json` (spec/cli.md).
#[derive(Serialize)]
struct Created<'a> {
    ledger: &'a Path,
    platform: Option<&'a PlatformFee>,
    payout_threshold: String,
}

/// `escx settle run --json`.
#[derive(Serialize)]
struct Settled<'a> {
    ledger: &'a Path,
    events: usize,
    report: &'a escx_settlement::ledger::RunReport,
}

/// `escx settle preview --json`: the split's own fields, with the currency and the gross
/// as a decimal.
#[derive(Serialize)]
struct Preview<'a> {
    #[serde(flatten)]
    split: &'a escx_settlement::waterfall::Split,
    currency: &'a str,
    gross: String,
}
