//! `escx meter`: the customer-side meter (spec/metering.md §2–§5).

use escx::header::PackageName;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use escx_licensing::wallet::Wallet;
use escx_metering::meter::{Meter, Telemetry};
use escx_metering::{self as metering, Period};
use serde::Serialize;

use super::common::Output;
use crate::failure::UsageError;
use crate::output::Ui;

#[derive(Subcommand)]
pub enum MeterCommand {
    /// Count usage: add an amount to this minute's counter of a unit.
    #[command(after_help = "\
Units are the package's [telemetry] metrics: invocations, compute_ms, bytes, custom:<name>.
Every record also marks its minute as used (the `minutes` unit metered tiers are billed on).
The license is verified first, as `escx license verify` does (--issuer names the issuer the
program accepts), and usage is recorded against exactly the license that passed.
One record is one transaction: a killed meter loses at most the record being written.

Examples:
  escx meter record --wallet ./wallet --package acme/thermal --issuer issuer.pub --unit invocations
  escx meter record --wallet ./wallet --package acme/thermal --issuer issuer.pub --unit compute_ms --amount 1250")]
    Record(RecordArgs),
    /// Close an hour: sign its report of per-minute commitments for the operator.
    #[command(after_help = "\
The report holds 60 Pedersen commitments per unit (empty minutes included), chained to the
license's previous report and signed by the license's holder key. A share tier also opens
the hour's totals; the license names its tier's mode (a license from before says nothing,
and --telemetry, default private, decides at its first report). Once reported, nothing more is recorded into the hour; reporting it
again writes the same report.

Examples:
  escx meter report --wallet ./wallet --package acme/thermal --hour 2026-11-23T10 -o r.cbor
  escx meter report --wallet ./wallet --package acme/thermal --hour 2026-11-23T11 --json -o r2.cbor
  escx meter report --wallet ./wallet --package acme/thermal --hour 2026-11-23T12 --server http://127.0.0.1:8440")]
    Report(ReportArgs),
    /// Close a billing period: open one total per unit for the operator to bill.
    #[command(after_help = "\
The operator checks the totals against the stored hourly commitments; for a private tier
they are all it learns about the period.

Examples:
  escx meter close --wallet ./wallet --package acme/thermal --period 2026-11 -o p.cbor
  escx meter close --wallet ./wallet --package acme/thermal --period 2026-12 --early -o p.cbor
  escx meter close --wallet ./wallet --package acme/thermal --period 2026-11 --server http://127.0.0.1:8440")]
    Close(CloseArgs),
    /// Open a reported hour, or one minute of it, for a dispute.
    #[command(
        after_help = "Examples:\n  escx meter open --wallet ./wallet --package acme/thermal --hour 2026-11-23T10 --minute 17 -o o.cbor\n  escx meter open --wallet ./wallet --package acme/thermal --hour 2026-11-23T10 --unit invocations -o o.cbor"
    )]
    Open(OpenArgs),
}

#[derive(Args)]
pub struct RecordArgs {
    /// Wallet directory holding the license.
    #[arg(long)]
    wallet: PathBuf,
    /// Package whose license is metered.
    #[arg(long)]
    package: PackageName,
    /// Unit: invocations, compute_ms, bytes or custom:<name>.
    #[arg(long)]
    unit: String,
    /// Amount to add.
    #[arg(long, default_value_t = 1)]
    amount: u64,
    #[command(flatten)]
    trust: super::common::TrustArgs,
    /// When the usage happened (RFC 3339, or @unix); default now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum TelemetryArg {
    /// The tier shares telemetry: each report opens its hour totals.
    Share,
    /// The tier keeps telemetry private.
    Private,
}

#[derive(Args)]
pub struct ReportArgs {
    /// Wallet directory.
    #[arg(long)]
    wallet: PathBuf,
    /// Package.
    #[arg(long)]
    package: PackageName,
    /// The hour, YYYY-MM-DDTHH (UTC), or any time in it (RFC 3339 or @unix).
    #[arg(long)]
    hour: String,
    /// What the license's tier shares (its `telemetry` in the package's [pricing]). A
    /// license bought from a package's signed terms says so itself, and another mode is
    /// refused; for an older license the default is private.
    #[arg(long, value_enum)]
    telemetry: Option<TelemetryArg>,
    /// The license to report (hex id), when several of the package have records in the hour.
    #[arg(long, value_name = "ID")]
    license: Option<String>,
    /// Output file (refused if it holds another report, unless --force).
    #[arg(short, long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace the output file if it exists.
    #[arg(long, requires = "out")]
    force: bool,
    /// Send the report to this operator service instead of writing a file (re-sending is
    /// safe: the operator keeps one copy).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Judge "the hour has ended" at this time instead of now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct CloseArgs {
    /// Wallet directory.
    #[arg(long)]
    wallet: PathBuf,
    /// Package.
    #[arg(long)]
    package: PackageName,
    /// Billing period, YYYY-MM (UTC), or any time in it (RFC 3339 or @unix).
    #[arg(long)]
    period: String,
    /// The license to close (hex id), when several have reports in the period.
    #[arg(long, value_name = "ID")]
    license: Option<String>,
    /// Close before the period has ended (ends metering for the rest of it).
    #[arg(long)]
    early: bool,
    /// Output file (refused if it holds another close, unless --force).
    #[arg(short, long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace the output file if it exists.
    #[arg(long, requires = "out")]
    force: bool,
    /// Send the close to this operator service instead of writing a file (re-sending is
    /// safe: the operator keeps one close per license and period).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Judge "the period has ended" at this time instead of now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct OpenArgs {
    /// Wallet directory.
    #[arg(long)]
    wallet: PathBuf,
    /// Package.
    #[arg(long)]
    package: PackageName,
    /// The reported hour, YYYY-MM-DDTHH (UTC), or any time in it (RFC 3339 or @unix).
    #[arg(long)]
    hour: String,
    /// One minute of it (0 to 59); default the whole hour.
    #[arg(long)]
    minute: Option<u8>,
    /// One unit; default every unit of the report.
    #[arg(long)]
    unit: Option<String>,
    #[command(flatten)]
    output: Output,
}

/// `--hour`: `YYYY-MM-DDTHH` (UTC), or a time in the `--at` forms, meaning the hour that
/// holds it (so a script can write `--hour @$(( $(date +%s) - 3600 ))`).
fn hour(text: &str) -> anyhow::Result<escx::UnixSeconds> {
    metering::parse_hour(text)
        .or_else(|reason| {
            escx::timestamp::parse(text).map(|t| t.floor(metering::HOUR_SECS)).map_err(|_| reason)
        })
        .map_err(|r| UsageError(format!("--hour: {r}; or give a time in it (RFC 3339 or @unix)")).into())
}

/// `--period`: `YYYY-MM` (UTC), or a time in the `--at` forms, meaning its month.
pub fn period(text: &str) -> anyhow::Result<Period> {
    Period::parse(text)
        .or_else(|reason| escx::timestamp::parse(text).map(Period::of).map_err(|_| reason))
        .map_err(|r| UsageError(format!("--period: {r}; or give a time in it (RFC 3339 or @unix)")).into())
}

pub fn run(command: MeterCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        MeterCommand::Record(args) => meter_record(args, ui),
        MeterCommand::Report(args) => meter_report(args, ui),
        MeterCommand::Close(args) => meter_close(args, ui),
        MeterCommand::Open(args) => meter_open(args, ui),
    }
}

fn meter_record(args: RecordArgs, ui: &Ui) -> anyhow::Result<()> {
    let at = super::at_or_now(args.at.as_deref())?;
    let trust = args.trust.trust()?;
    let wallet = Wallet::open_existing(&args.wallet)?;
    let verified = wallet.verify(&trust, &args.package, None, None, at)?;
    let recorded = Meter::open(&wallet)?.record(&verified, &args.unit, args.amount, at)?;
    ui.emit(
        &Recorded {
            package: &args.package,
            unit: &args.unit,
            amount: args.amount,
            minute: recorded.minute.rfc3339(),
            value: recorded.value,
            license_id: &recorded.license_id,
        },
        String::new,
    );
    Ok(())
}

fn meter_report(args: ReportArgs, ui: &Ui) -> anyhow::Result<()> {
    super::out_or_server(args.out.as_deref(), args.server.as_deref())?;
    let now = super::at_or_now(args.at.as_deref())?;
    let hour = hour(&args.hour)?;
    let telemetry = args.telemetry.map(|t| match t {
        TelemetryArg::Share => Telemetry::Share,
        TelemetryArg::Private => Telemetry::Private,
    });
    let wallet = Wallet::open_existing(&args.wallet)?;
    let report =
        Meter::open(&wallet)?.report_license(&args.package, args.license.as_deref(), hour, telemetry, now)?;
    let outcome = match (&args.out, &args.server) {
        (Some(out), _) => {
            Output { out: out.clone(), force: args.force }.write_retry(&report.file)?;
            None
        }
        (None, Some(server)) => {
            let answer = super::online::send_report(server, "/v1/reports", &report.file)?;
            Some(answer["outcome"].as_str().unwrap_or("stored").to_owned())
        }
        // out_or_server refused neither.
        (None, None) => None,
    };
    let destination = args
        .out
        .as_ref()
        .map_or_else(|| args.server.clone().unwrap_or_default(), |p| p.display().to_string());
    ui.emit(
        &Reported {
            file: args.out.as_deref(),
            server: args.server.as_deref(),
            outcome: outcome.as_deref(),
            hour: metering::format_hour(hour),
            seq: report.seq,
            license_id: &report.license_id,
            units: &report.units,
            again: report.again,
            telemetry: report.telemetry.name(),
        },
        || {
            format!(
                "{} hour {} of {} (report {}, units {}) to {destination}{}",
                match (report.again, args.server.is_some()) {
                    (false, _) => "reported",
                    (true, false) => "already reported; wrote the same report of",
                    (true, true) => "already reported; sent the same report of",
                },
                metering::format_hour(hour),
                args.package,
                report.seq,
                report.units.join(", "),
                outcome.as_deref().map(|o| format!(" ({o})")).unwrap_or_default()
            )
        },
    );
    Ok(())
}

fn meter_close(args: CloseArgs, ui: &Ui) -> anyhow::Result<()> {
    super::out_or_server(args.out.as_deref(), args.server.as_deref())?;
    let now = super::at_or_now(args.at.as_deref())?;
    let period = period(&args.period)?;
    let wallet = Wallet::open_existing(&args.wallet)?;
    let close =
        Meter::open(&wallet)?.close(&args.package, period, args.license.as_deref(), args.early, now)?;
    let outcome = match (&args.out, &args.server) {
        (Some(out), _) => {
            Output { out: out.clone(), force: args.force }.write_retry(&close.file)?;
            None
        }
        (None, Some(server)) => {
            let answer = super::online::send_report(server, "/v1/closes", &close.file)?;
            Some(if answer["again"].as_bool() == Some(true) { "duplicate" } else { "stored" })
        }
        // out_or_server refused neither.
        (None, None) => None,
    };
    let destination = args
        .out
        .as_ref()
        .map_or_else(|| args.server.clone().unwrap_or_default(), |p| p.display().to_string());
    ui.emit(
        &Closed {
            file: args.out.as_deref(),
            server: args.server.as_deref(),
            outcome,
            period: period.to_string(),
            license_id: &close.license_id,
            totals: close.totals.iter().map(|(u, t)| (u.as_str(), *t)).collect(),
            through_seq: close.through_seq,
            again: close.again,
        },
        || {
            let totals: Vec<String> = close.totals.iter().map(|(u, t)| format!("{u} {t}")).collect();
            format!(
                "closed {period} for {} through report {}: {} to {destination}{}",
                args.package,
                close.through_seq,
                if totals.is_empty() { "no usage".into() } else { totals.join(", ") },
                outcome.map(|o| format!(" ({o})")).unwrap_or_default()
            )
        },
    );
    Ok(())
}

fn meter_open(args: OpenArgs, ui: &Ui) -> anyhow::Result<()> {
    let hour = hour(&args.hour)?;
    let wallet = Wallet::open_existing(&args.wallet)?;
    let opening = Meter::open(&wallet)?.open_hour(&args.package, hour, args.minute, args.unit.as_deref())?;
    args.output.write_retry(&opening.to_cbor())?;
    ui.emit(
        &HourOpened {
            file: &args.output.out,
            hour: metering::format_hour(hour),
            minute: args.minute,
            values: opening.openings.iter().map(|o| (o.unit.as_str(), o.value)).collect(),
        },
        || {
            let values: Vec<String> =
                opening.openings.iter().map(|o| format!("{} {}", o.unit, o.value)).collect();
            format!(
                "opened {}: {} to {}",
                where_text(hour, args.minute),
                values.join(", "),
                args.output.out.display()
            )
        },
    );
    Ok(())
}

/// "minute 17 of hour 2026-11-23T10" or "hour 2026-11-23T10".
pub fn where_text(hour: escx::UnixSeconds, minute: Option<u8>) -> String {
    match minute {
        Some(m) => format!("minute {m} of hour {}", metering::format_hour(hour)),
        None => format!("hour {}", metering::format_hour(hour)),
    }
}

/// `escx meter record --json` (spec/cli.md).
#[derive(Serialize)]
struct Recorded<'a> {
    package: &'a PackageName,
    unit: &'a str,
    amount: u64,
    minute: String,
    value: u64,
    license_id: &'a str,
}

/// `escx meter report --json`.
#[derive(Serialize)]
struct Reported<'a> {
    file: Option<&'a Path>,
    server: Option<&'a str>,
    /// The operator's answer when sent: `stored` or `duplicate`.
    outcome: Option<&'a str>,
    hour: String,
    seq: u64,
    license_id: &'a str,
    units: &'a [String],
    again: bool,
    telemetry: &'static str,
}

/// `escx meter close --json`.
#[derive(Serialize)]
struct Closed<'a> {
    file: Option<&'a Path>,
    server: Option<&'a str>,
    /// The operator's answer when sent: `stored` or `duplicate`.
    outcome: Option<&'a str>,
    period: String,
    license_id: &'a str,
    totals: BTreeMap<&'a str, u64>,
    through_seq: u64,
    again: bool,
}

/// `escx meter open --json`.
#[derive(Serialize)]
struct HourOpened<'a> {
    file: &'a Path,
    hour: String,
    minute: Option<u8>,
    values: BTreeMap<&'a str, u64>,
}
