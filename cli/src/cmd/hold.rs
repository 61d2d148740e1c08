//! `escx hold ...`: two-phase budget holds (pay after verify).

use escx_settlement::store::HoldState;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use escx_manifest::Micros;
use escx_settlement::ledger::{Ledger, Manifests};
use serde::Serialize;

use crate::failure::UsageError;
use crate::output::{Align, Table, Ui};

#[derive(Subcommand)]
pub enum HoldCommand {
    /// Place holds on customers' budgets: one per billing event (sale or usage).
    #[command(after_help = "\
A hold moves the event's gross from @customers to @holds and pays no one. Capture it
(all or part) once the work is verified, or void it; from --expires-in on it can no
longer be captured. The events are checked first (manifest, currency, an earlier hold
under the same id with other content) and then placed in one transaction; placing the
same events again is a no-op.

Examples:
  escx hold place ./ledger.db --events holds.json --manifests ./manifests --expires-in 72h
  escx hold place ./ledger.db --events holds.json --manifests ./manifests --expires-in 7d --json")]
    Place(PlaceArgs),
    /// Capture a pending hold: settle all or part of it through its waterfall.
    #[command(after_help = "\
The captured amount runs through the waterfall of the held event (the [revenue] version in
force at the event's time), paid from @holds; the rest goes back to @customers. The
capture is recorded in a statement signed by --operator-key. Capturing again with the
same amount is a no-op; an expired hold is refused.

Examples:
  escx hold capture ./ledger.db job-42 --manifests ./manifests --operator-key op.key
  escx hold capture ./ledger.db job-42 --amount 30.00 --manifests ./manifests --operator-key op.key --json")]
    Capture(CaptureArgs),
    /// Void a pending hold (the whole amount goes back), or every expired one.
    #[command(
        after_help = "Examples:\n  escx hold void ./ledger.db job-42\n  escx hold void ./ledger.db --expired --json"
    )]
    Void(VoidArgs),
    /// List holds.
    #[command(
        after_help = "Examples:\n  escx hold list ./ledger.db\n  escx hold list ./ledger.db --state PENDING --json"
    )]
    List(ListArgs),
}

#[derive(Args)]
pub struct PlaceArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// Billing events to hold, a JSON array (spec/settlement.md §1).
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    /// Directory of package and solution manifests.
    #[arg(long, value_name = "DIR")]
    manifests: PathBuf,
    /// How long the holds can be captured: 90m, 72h, 7d or seconds.
    #[arg(long, value_name = "DURATION")]
    expires_in: String,
    /// The time of placing (default now): 2026-11-23, RFC 3339 or @unix.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct CaptureArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// The hold: its event id.
    hold: String,
    /// Amount to capture (default: all of it), a decimal with up to 6 places.
    #[arg(long, value_name = "AMOUNT")]
    amount: Option<String>,
    /// Directory of package and solution manifests.
    #[arg(long, value_name = "DIR")]
    manifests: PathBuf,
    /// The operator's secret key: signs the capture's statement.
    #[arg(long, value_name = "KEY")]
    operator_key: PathBuf,
    /// The time of capture (default now).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct VoidArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// The hold: its event id.
    #[arg(required_unless_present = "expired", conflicts_with = "expired")]
    hold: Option<String>,
    /// Void every pending hold that has expired.
    #[arg(long)]
    expired: bool,
    /// The time of voiding (default now).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct ListArgs {
    /// The ledger: a SQLite file, or a PostgreSQL URL (postgres://...).
    ledger: PathBuf,
    /// Only holds in this state.
    #[arg(long, value_parser = hold_state)]
    state: Option<HoldState>,
}

/// `90m`, `72h`, `7d`, `30s` or plain seconds.
pub fn duration(text: &str) -> Option<u64> {
    let (number, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let number: u64 = number.parse().ok()?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    number.checked_mul(scale).filter(|s| *s > 0)
}

pub fn run(command: HoldCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        HoldCommand::Place(args) => hold_place(args, ui),
        HoldCommand::Capture(args) => hold_capture(args, ui),
        HoldCommand::Void(args) => hold_void(args, ui),
        HoldCommand::List(args) => hold_list(args, ui),
    }
}

fn hold_place(args: PlaceArgs, ui: &Ui) -> anyhow::Result<()> {
    let now = super::at_or_now(args.at.as_deref())?;
    let seconds = duration(&args.expires_in).ok_or_else(|| {
        UsageError(format!("--expires-in {:?}: expected a duration such as 90m, 72h or 7d", args.expires_in))
    })?;
    let events = escx_settlement::events::read_events(&args.events)?;
    let manifests = Manifests::load_dir(&args.manifests)?;
    let mut ledger = Ledger::open(&args.ledger)?;
    let expires_at = now + seconds;
    let report = ledger.place_holds(&events, &manifests, now, expires_at)?;
    ui.emit(
        &Placed { ledger: &super::shown(&args.ledger), report: &report, expires_at: expires_at.rfc3339() },
        || {
            format!(
                "{} placed, {} placed before and unchanged; they expire at {}",
                crate::output::count(report.placed, "hold"),
                report.unchanged,
                escx::timestamp::format_rfc3339(expires_at)
            )
        },
    );
    Ok(())
}

fn hold_capture(args: CaptureArgs, ui: &Ui) -> anyhow::Result<()> {
    let now = super::at_or_now(args.at.as_deref())?;
    let amount = match &args.amount {
        Some(text) => Some(Micros::parse(text).map_err(|e| UsageError(format!("--amount {text:?}: {e}")))?),
        None => None,
    };
    let manifests = Manifests::load_dir(&args.manifests)?;
    let mut ledger = Ledger::open(&args.ledger)?;
    let operator = crate::secrets::load_secret_key(&args.operator_key)?;
    let report = ledger.capture_hold(&args.hold, amount, &manifests, &operator, now)?;
    ui.emit(&Captured { ledger: &super::shown(&args.ledger), capture: &report }, || {
        if report.unchanged {
            return format!(
                "hold {} was captured before with {}: nothing to do",
                report.hold, report.captured
            );
        }
        let text = format!(
            "hold {}: captured {}, released {}, statement {}\n",
            report.hold,
            report.captured,
            report.released,
            report.statement.unwrap_or(0)
        );
        let mut table = Table::new(&[Align::Left, Align::Right]);
        for (party, amount) in &report.payouts {
            table.row([party.clone(), amount.to_string()]);
        }
        text + &table.render("  ")
    });
    Ok(())
}

fn hold_void(args: VoidArgs, ui: &Ui) -> anyhow::Result<()> {
    let now = super::at_or_now(args.at.as_deref())?;
    let mut ledger = Ledger::open(&args.ledger)?;
    let voided = match &args.hold {
        Some(hold) if !args.expired => {
            if ledger.void_hold(hold, now)? {
                vec![hold.clone()]
            } else {
                Vec::new()
            }
        }
        _ => ledger.void_expired(now)?,
    };
    ui.emit(&Voided { ledger: &super::shown(&args.ledger), voided: &voided }, || match voided.len() {
        0 => "nothing to void".to_owned(),
        _ => format!("voided {}", voided.join(", ")),
    });
    Ok(())
}

fn hold_list(args: ListArgs, ui: &Ui) -> anyhow::Result<()> {
    let holds = Ledger::open(&args.ledger)?.holds(args.state)?;
    ui.emit(&Listed { holds: &holds }, || {
        let mut table =
            Table::new(&[Align::Left, Align::Left, Align::Right, Align::Left, Align::Left, Align::Left]);
        for hold in &holds {
            table.row([
                hold.id.clone(),
                hold.state.to_string(),
                hold.captured.unwrap_or(hold.amount).to_string(),
                hold.currency.clone(),
                hold.package.to_string(),
                format!("expires {}", escx::timestamp::format_rfc3339(hold.expires_at)),
            ]);
        }
        if table.is_empty() {
            return "no holds\n".into();
        }
        table.render("")
    });
    Ok(())
}

/// `--state`: one of the hold states, by its stored name.
fn hold_state(text: &str) -> Result<HoldState, String> {
    HoldState::parse(text).ok_or_else(|| {
        let names: Vec<&str> = HoldState::ALL.iter().map(|s| s.name()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_parse() {
        assert_eq!(super::duration("90m"), Some(5400));
        assert_eq!(super::duration("72h"), Some(259_200));
        assert_eq!(super::duration("7d"), Some(604_800));
        assert_eq!(super::duration("45"), Some(45));
        for bad in ["", "h", "0h", "3w", "-1h", "1.5h", "99999999999999999999d"] {
            assert_eq!(super::duration(bad), None, "{bad}");
        }
    }
}

/// `escx hold place --json` (spec/cli.md).
#[derive(Serialize)]
struct Placed<'a> {
    ledger: &'a Path,
    report: &'a escx_settlement::holds::PlaceReport,
    expires_at: String,
}

/// `escx hold capture --json`.
#[derive(Serialize)]
struct Captured<'a> {
    ledger: &'a Path,
    capture: &'a escx_settlement::holds::CaptureReport,
}

/// `escx hold void --json`.
#[derive(Serialize)]
struct Voided<'a> {
    ledger: &'a Path,
    voided: &'a [String],
}

/// `escx hold list --json`.
#[derive(Serialize)]
struct Listed<'a> {
    holds: &'a [escx_settlement::holds::Hold],
}
