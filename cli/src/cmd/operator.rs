//! `escx operator`: the operator's metering store (spec/metering.md §6–§7, privacy.md).

use escx::Fault as _;
use escx::header::PackageName;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use escx_licensing::messages::BundleChain;
use escx_metering as metering;
use escx_metering::operator::{Aggregate, Operator, Outcome, epsilon_text};
use serde::Serialize;

use super::common::{Output, read};
use crate::failure::{self, Reported, UsageError};
use crate::output::Ui;

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Create an operator store trusting one or more issuers.
    #[command(after_help = "\
The store (operator.sqlite: WAL, synchronous=FULL, mode 0600 in a 0700 directory) keeps
verified reports as commitments, never per-minute values. With --database the store is
that PostgreSQL database instead (schema escx_operator), named in DIR/database.url
(0600); several `escx serve` nodes each hold a copy of the directory and share it.

Examples:
  escx operator init ./op --issuer issuer.pub
  escx operator init ./op --issuer issuer.pub --database postgres://escx@db/escx")]
    Init(InitArgs),
    /// Register a package's metering terms (its [pricing] tiers and [telemetry]).
    #[command(
        after_help = "Examples:\n  escx operator package ./op acme-thermal-1.2.0.escx --pubkey acme.pub"
    )]
    Package(PackageArgs),
    /// Accept a newer CRL of a trusted issuer (reports of revoked licenses are refused).
    #[command(after_help = "Examples:\n  escx operator crl ./op crl.cbor")]
    Crl(CrlArgs),
    /// Verify and store hourly reports (idempotent: a report stored before is a duplicate).
    #[command(after_help = "\
Exit code 1 when any report was refused or equivocates (each is listed with its code).

Examples:
  escx operator ingest ./op r1.cbor r2.cbor
  escx operator ingest ./op --dir reports/ --json")]
    Ingest(IngestArgs),
    /// Check a period close against the stored hourly commitments and keep it.
    #[command(after_help = "Examples:\n  escx operator close ./op p.cbor")]
    Close(CloseArgs),
    /// Release a package's share-tier usage over one window, k-anonymous and noised.
    #[command(after_help = "\
A cohort of fewer distinct holders than the package's cohort_min_size is never released.
Otherwise each unit's sum over holders (each holder clipped to --clip) gets exact discrete
Laplace noise of scale clip x units / epsilon, and the window's budget is charged.

Examples:
  escx operator aggregate ./op --package acme/thermal --window 2026-11-23T00/2026-11-24T00 --clip 1000
  escx operator aggregate ./op --package acme/thermal --window 2026-11-23T00/2026-11-24T00 --clip 1000 --epsilon 0.5 --json")]
    Aggregate(AggregateArgs),
    /// Write the period's usage charges as billing events for `escx settle run`.
    #[command(
        after_help = "Examples:\n  escx operator billing ./op --period 2026-11 -o usage-events.json\n  escx settle run ./ledger.db --events usage-events.json --manifests ./manifests --operator-key op.key"
    )]
    Billing(BillingArgs),
    /// List kept evidence of equivocation (two reports for one license-hour, two closes).
    #[command(
        after_help = "Examples:\n  escx operator evidence ./op\n  escx operator evidence ./op --holder 3f2a...e1 --out evidence/"
    )]
    Evidence(EvidenceArgs),
    /// Check a customer's opening of an hour or minute against its stored commitment.
    #[command(after_help = "Examples:\n  escx operator check-opening ./op o.cbor")]
    CheckOpening(CheckOpeningArgs),
    /// Drop the bytes of reports of periods closed long enough ago, keeping what billing,
    /// audits and the chains need.
    #[command(after_help = "\
A closed period's reports keep their number, hour, hash and hour sums; their per-minute
commitments and proofs go once the period ended at least --keep-days ago (default 180,
at least 35). Billing, closes, the chains and duplicate detection are unchanged; openings
of a compacted hour can no longer be checked (spec/metering.md §6.6). On SQLite, VACUUM
the file afterwards to give the space back to the file system.

Examples:
  escx operator compact ./op
  escx operator compact ./op --keep-days 400 --json")]
    Compact(CompactArgs),
}

#[derive(Args)]
pub struct CompactArgs {
    /// Operator directory.
    dir: PathBuf,
    /// Keep a period's reports whole this many days after it ends.
    #[arg(long, value_name = "DAYS", default_value_t = 180)]
    keep_days: u64,
    /// Judge "ago" at this time instead of now (RFC 3339 or @unix).
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct InitArgs {
    /// Operator directory (created).
    dir: PathBuf,
    /// An issuer's public bundle chain (issuer.pub); repeatable.
    #[arg(long, required = true, value_name = "FILE")]
    issuer: Vec<PathBuf>,
    /// Keep the store in this PostgreSQL database (postgres://...) instead of a SQLite
    /// file in the directory; written to DIR/database.url.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

#[derive(Args)]
pub struct PackageArgs {
    /// Operator directory.
    dir: PathBuf,
    /// The package file.
    package: PathBuf,
    /// Publisher key the package must be signed by (repeatable).
    #[arg(long, required = true, value_name = "FILE")]
    pubkey: Vec<PathBuf>,
    /// Judge key expiry at this time instead of now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct CrlArgs {
    /// Operator directory.
    dir: PathBuf,
    /// The CRL file.
    crl: PathBuf,
}

#[derive(Args)]
pub struct IngestArgs {
    /// Operator directory.
    dir: PathBuf,
    /// Report files.
    reports: Vec<PathBuf>,
    /// Also every *.cbor file in this directory.
    #[arg(long = "dir", value_name = "DIR")]
    reports_dir: Option<PathBuf>,
    /// Judge the time rules at this time instead of now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct CloseArgs {
    /// Operator directory.
    dir: PathBuf,
    /// The close file.
    close: PathBuf,
    /// Record the close at this time instead of now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Args)]
pub struct AggregateArgs {
    /// Operator directory.
    dir: PathBuf,
    /// Package.
    #[arg(long)]
    package: PackageName,
    /// The window, START/END in hours (YYYY-MM-DDTHH/YYYY-MM-DDTHH), one of the package's.
    #[arg(long)]
    window: String,
    /// Per-holder bound on each unit's window total: the sensitivity of the sum.
    #[arg(long)]
    clip: u64,
    /// Epsilon to spend (default: what is left of the window's budget).
    #[arg(long)]
    epsilon: Option<String>,
}

#[derive(Args)]
pub struct BillingArgs {
    /// Operator directory.
    dir: PathBuf,
    /// Billing period, YYYY-MM.
    #[arg(long)]
    period: String,
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
pub struct EvidenceArgs {
    /// Operator directory.
    dir: PathBuf,
    /// Only this holder key id (hex).
    #[arg(long, value_name = "KEY-ID")]
    holder: Option<String>,
    /// Write each pair of conflicting envelopes into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub struct CheckOpeningArgs {
    /// Operator directory.
    dir: PathBuf,
    /// The opening file.
    opening: PathBuf,
}

fn operator_compact(args: CompactArgs, ui: &Ui) -> anyhow::Result<()> {
    let now = super::at_or_now(args.at.as_deref())?;
    let keep =
        args.keep_days.checked_mul(86_400).ok_or_else(|| UsageError("--keep-days is too large".into()))?;
    let done = open(&args.dir)?.compact(keep, now)?;
    ui.emit(&done, || {
        format!(
            "compacted {} in {} ({} freed)",
            crate::output::count(usize::try_from(done.reports).unwrap_or(usize::MAX), "report"),
            crate::output::count(
                usize::try_from(done.periods).unwrap_or(usize::MAX),
                "closed license-period"
            ),
            crate::output::count(usize::try_from(done.bytes).unwrap_or(usize::MAX), "byte")
        )
    });
    Ok(())
}

fn open(dir: &Path) -> anyhow::Result<Operator> {
    Operator::open(dir).with_context(|| format!("opening operator store {}", dir.display()))
}

/// Epsilon as a decimal with at most six places, in millionths.
fn parse_epsilon(text: &str) -> anyhow::Result<u64> {
    let bad = || {
        UsageError(format!("--epsilon: {text:?} is not a positive decimal with at most 6 places, e.g. 0.5"))
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || fraction.len() > 6
        || !(whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()))
    {
        return Err(bad().into());
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let fraction: u64 = format!("{fraction:0<6}").parse().map_err(|_| bad())?;
    let micros = whole.checked_mul(1_000_000).and_then(|w| w.checked_add(fraction)).ok_or_else(bad)?;
    if micros == 0 {
        return Err(bad().into());
    }
    Ok(micros)
}

pub fn run(command: OperatorCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        OperatorCommand::Init(args) => operator_init(args, ui),
        OperatorCommand::Package(args) => operator_package(args, ui),
        OperatorCommand::Crl(args) => operator_crl(args, ui),
        OperatorCommand::Ingest(args) => operator_ingest(args, ui),
        OperatorCommand::Close(args) => operator_close(args, ui),
        OperatorCommand::Aggregate(args) => operator_aggregate(args, ui),
        OperatorCommand::Billing(args) => operator_billing(args, ui),
        OperatorCommand::Evidence(args) => operator_evidence(args, ui),
        OperatorCommand::CheckOpening(args) => operator_check_opening(args, ui),
        OperatorCommand::Compact(args) => operator_compact(args, ui),
    }
}

fn operator_init(args: InitArgs, ui: &Ui) -> anyhow::Result<()> {
    let chains = args
        .issuer
        .iter()
        .map(|p| BundleChain::parse(&read(p)?).with_context(|| p.display().to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let operator = match &args.database {
        Some(url) => Operator::init_postgres(&args.dir, url, &chains),
        None => Operator::init(&args.dir, &chains),
    }
    .with_context(|| format!("creating operator store {}", args.dir.display()))?;
    let issuers: Vec<String> = chains.iter().map(|c| c.issuer_id().to_string()).collect();
    ui.emit(&Created { dir: &args.dir, id: operator.id(), issuers: &issuers }, || {
        format!("created operator store {} trusting issuer {}", args.dir.display(), issuers.join(", "))
    });
    Ok(())
}

fn operator_package(args: PackageArgs, ui: &Ui) -> anyhow::Result<()> {
    let now = super::at_or_now(args.at.as_deref())?;
    let policy = escx::policy::TrustPolicy::from_keys(super::registry_trust::read_public_keys(&args.pubkey)?);
    let terms = open(&args.dir)?
        .add_package(&args.package, &policy, now)
        .with_context(|| args.package.display().to_string())?;
    let tiers: Vec<_> = terms
        .tiers
        .iter()
        .map(|t| TierReport {
            tier: &t.tier,
            unit: &t.unit,
            price: t.price_micros.to_string(),
            currency: &t.currency,
            telemetry: if t.share { "share" } else { "private" },
        })
        .collect();
    let telemetry = terms.telemetry.as_ref().map(|t| TelemetryReport {
        metrics: &t.metrics,
        window_hours: t.window_secs / 3600,
        cohort_min_size: t.cohort_min_size,
        epsilon: epsilon_text(t.epsilon_micros),
    });
    ui.emit(&Registered { package: &terms.package, version: &terms.version, tiers, telemetry }, || {
        let tiers: Vec<String> = terms
            .tiers
            .iter()
            .map(|t| {
                format!(
                    "{} ({} per {}, {})",
                    t.tier,
                    t.price_micros,
                    t.unit,
                    if t.share { "share" } else { "private" }
                )
            })
            .collect();
        format!("terms of {} {}: {}", terms.package, terms.version, tiers.join("; "))
    });
    Ok(())
}

fn operator_crl(args: CrlArgs, ui: &Ui) -> anyhow::Result<()> {
    let crl =
        open(&args.dir)?.accept_crl(&read(&args.crl)?).with_context(|| args.crl.display().to_string())?;
    ui.emit(&CrlAccepted { number: crl.number, revoked: crl.revoked.len() }, || {
        format!("CRL number {} in force ({} revoked)", crl.number, crl.revoked.len())
    });
    Ok(())
}

fn operator_ingest(args: IngestArgs, ui: &Ui) -> anyhow::Result<()> {
    let now = super::at_or_now(args.at.as_deref())?;
    let mut paths = args.reports.clone();
    if let Some(dir) = &args.reports_dir {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| escx::Error::io(dir, e))
            .map_err(failure::at(dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cbor"))
            .collect();
        found.sort();
        paths.extend(found);
    }
    if paths.is_empty() {
        return Err(UsageError("give report files, or --dir DIR".into()).into());
    }
    let files = paths.iter().map(|p| read(p)).collect::<anyhow::Result<Vec<_>>>()?;
    let results = open(&args.dir)?.ingest(&files, now)?;
    let mut counts = [0usize; 4];
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    for result in &results {
        let path = &paths[result.index];
        let (status, code, message) = match &result.outcome {
            Outcome::Stored => {
                counts[0] += 1;
                ("stored", None, None)
            }
            Outcome::Duplicate => {
                counts[1] += 1;
                ("duplicate", Some("report-duplicate"), Some("stored before; nothing changed".to_string()))
            }
            Outcome::Equivocation => {
                counts[2] += 1;
                (
                    "equivocation",
                    Some("report-equivocation"),
                    Some("another report for this license-hour is stored: both kept as evidence, the license flagged, this one not counted".to_string()),
                )
            }
            Outcome::Refused(error) => {
                counts[3] += 1;
                ("refused", Some(error.code()), Some(error.to_string()))
            }
        };
        rows.push(IngestRow {
            file: path,
            status,
            code,
            message: message.clone(),
            license_id: result.license_id.as_deref(),
            seq: result.seq,
            hour: result.hour.map(metering::format_hour),
        });
        if status != "stored" {
            lines.push(format!(
                "{}: {status}{}",
                path.display(),
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ));
        }
    }
    let ok = counts[2] + counts[3] == 0;
    ui.emit(
        &Ingested {
            ok,
            stored: counts[0],
            duplicates: counts[1],
            equivocations: counts[2],
            refused: counts[3],
            reports: &rows,
        },
        || {
            lines.push(format!(
                "{} stored, {} duplicate, {} equivocating, {} refused",
                counts[0], counts[1], counts[2], counts[3]
            ));
            lines.join("\n")
        },
    );
    if !ok {
        return Err(Reported(failure::EXIT_FAILED).into());
    }
    Ok(())
}

fn operator_close(args: CloseArgs, ui: &Ui) -> anyhow::Result<()> {
    let now = super::at_or_now(args.at.as_deref())?;
    let closed =
        open(&args.dir)?.close(&read(&args.close)?, now).with_context(|| args.close.display().to_string())?;
    ui.emit(
        &Closed {
            license_id: &closed.license_id,
            package: &closed.package,
            tier: &closed.tier,
            period: &closed.period,
            reports: closed.reports,
            totals: closed.totals.iter().map(|(u, t)| (u.as_str(), *t)).collect(),
            again: closed.again,
        },
        || {
            let totals: Vec<String> = closed.totals.iter().map(|(u, t)| format!("{u} {t}")).collect();
            format!(
                "{} {} of license {} ({} {}): {} over {} hourly reports, matching their commitments",
                if closed.again { "already closed:" } else { "closed" },
                closed.period,
                closed.license_id,
                closed.package,
                closed.tier,
                if totals.is_empty() { "no usage".into() } else { totals.join(", ") },
                closed.reports
            )
        },
    );
    Ok(())
}

fn operator_aggregate(args: AggregateArgs, ui: &Ui) -> anyhow::Result<()> {
    let window = metering::parse_window(&args.window).map_err(|r| UsageError(format!("--window: {r}")))?;
    let epsilon = args.epsilon.as_deref().map(parse_epsilon).transpose()?;
    let now = escx::now_unix();
    let result =
        open(&args.dir)?.aggregate(&args.package, window, args.clip, epsilon, &mut rand_core::OsRng, now)?;
    match result {
        Aggregate::Suppressed { cohort_min_size, decision_micros, remaining_micros } => ui.emit(
            &Suppressed {
                package: &args.package,
                window: &args.window,
                released: false,
                reason: format!("no unit's noised count of distinct holders reached {cohort_min_size}"),
                decision_epsilon: epsilon_text(decision_micros),
                epsilon_left: epsilon_text(remaining_micros),
            },
            || {
                format!(
                    "suppressed: no unit of {} in {} has {cohort_min_size} distinct holders by its noised count; nothing \
                     is released (the decision spent epsilon {}, {} left)",
                    args.package,
                    args.window,
                    epsilon_text(decision_micros),
                    epsilon_text(remaining_micros)
                )
            },
        ),
        Aggregate::Released(release) => {
            ui.emit(
                &Released {
                    package: &args.package,
                    window: &args.window,
                    released: true,
                    values: release.values.iter().map(|(u, v)| (u.as_str(), *v)).collect(),
                    suppressed: &release.suppressed,
                    clip: release.clip,
                    epsilon: epsilon_text(release.epsilon_micros),
                    decision_epsilon: epsilon_text(release.decision_micros),
                    epsilon_left: epsilon_text(release.remaining_micros),
                    noise: "discrete Laplace",
                    scale: format!("{}/{}", release.scale.0, release.scale.1),
                },
                || {
                    let values: Vec<String> =
                        release.values.iter().map(|(u, v)| format!("{u} {v}")).collect();
                    format!(
                        "{} {}: {} (noised, epsilon {} spent, {} left)",
                        args.package,
                        args.window,
                        values.join(", "),
                        epsilon_text(release.epsilon_micros),
                        epsilon_text(release.remaining_micros)
                    )
                },
            )
        }
    }
    Ok(())
}

fn operator_billing(args: BillingArgs, ui: &Ui) -> anyhow::Result<()> {
    let period = super::meter::period(&args.period)?;
    let billing = open(&args.dir)?.billing(period)?;
    let charges = &billing.charges;
    let events: Vec<_> = charges.iter().map(|c| usage_event(c).to_json()).collect();
    let mut text = serde_json::to_string_pretty(&events)?;
    text.push('\n');
    args.output.write(text.as_bytes())?;
    // One license that cannot be charged does not hold up everyone else's bill: the
    // events above are written, and each refused license is named with its code.
    for refused in &billing.refused {
        ui.warn(&format!(
            "license {} ({} {}) is not billed: {} [{}]",
            refused.license_id, refused.package, refused.tier, refused.reason, refused.code
        ));
    }
    let flagged = charges.iter().filter(|c| c.flagged).count();
    let total =
        escx_manifest::Micros::checked_sum(charges.iter().map(|c| c.gross_micros)).ok_or_else(|| {
            anyhow::anyhow!("the usage charges of {period} add up to more than 2^64 micro-units")
        })?;
    ui.emit(
        &Billed {
            file: &args.output.out,
            period: period.to_string(),
            events: charges.len(),
            flagged,
            charges,
            refused: &billing.refused,
        },
        || {
            let mut text = format!(
                "{} for {period} ({total} in all) to {}",
                crate::output::count(charges.len(), "usage event"),
                args.output.out.display()
            );
            if flagged > 0 {
                text.push_str(&format!(
                    "\nwarning: {flagged} of them are of licenses that equivocated (see `escx operator evidence`)"
                ));
            }
            text
        },
    );
    Ok(())
}

fn operator_evidence(args: EvidenceArgs, ui: &Ui) -> anyhow::Result<()> {
    let holder = match &args.holder {
        Some(text) => Some(
            text.parse::<escx::sig::KeyId>()
                .map_err(|_| UsageError(format!("--holder: {text:?} is not a 32-digit hex key id")))?,
        ),
        None => None,
    };
    let evidence = open(&args.dir)?.evidence(holder)?;
    if let Some(out) = &args.out {
        escx::fsutil::create_private_dir(out).map_err(failure::at(out))?;
        for item in &evidence {
            for (which, bytes) in [("first", &item.first), ("second", &item.second)] {
                let path = out.join(format!("{}-{which}.cbor", item.id));
                escx::fsutil::write_atomic(&path, bytes, escx::fsutil::MODE_PUBLIC, true)
                    .map_err(failure::at(&path))?;
            }
        }
    }
    let rows: Vec<_> = evidence
        .iter()
        .map(|e| EvidenceRow {
            id: e.id,
            kind: &e.kind,
            license_id: &e.license_id,
            holder: e.holder.to_string(),
            hour: e.hour.map(metering::format_hour),
            seq: e.seq,
            seen_at: e.at.rfc3339(),
            repeats: e.repeats,
        })
        .collect();
    ui.emit(&EvidenceList { evidence: &rows }, || {
        if evidence.is_empty() {
            return "no evidence kept".into();
        }
        evidence
            .iter()
            .map(|e| {
                format!(
                    "#{} {}: license {} (holder {}){}{}\n",
                    e.id,
                    e.kind,
                    e.license_id,
                    e.holder,
                    e.hour.map(|h| format!(" hour {}", metering::format_hour(h))).unwrap_or_default(),
                    e.seq.map(|s| format!(" report {s}")).unwrap_or_default()
                )
            })
            .collect()
    });
    Ok(())
}

fn operator_check_opening(args: CheckOpeningArgs, ui: &Ui) -> anyhow::Result<()> {
    let verdict = open(&args.dir)?
        .check_opening(&read(&args.opening)?)
        .with_context(|| args.opening.display().to_string())?;
    ui.emit(
        &OpeningChecked {
            ok: true,
            license_id: &verdict.license_id,
            package: &verdict.package,
            hour: metering::format_hour(verdict.hour),
            minute: verdict.minute,
            values: verdict.values.iter().map(|(u, v)| (u.as_str(), *v)).collect(),
        },
        || {
            let values: Vec<String> = verdict.values.iter().map(|(u, v)| format!("{u} = {v}")).collect();
            format!(
                "{} of license {} ({}): {}, matching the stored commitments",
                super::meter::where_text(verdict.hour, verdict.minute),
                verdict.license_id,
                verdict.package,
                values.join(", ")
            )
        },
    );
    Ok(())
}

/// `escx operator init --json` (spec/cli.md).
#[derive(Serialize)]
struct Created<'a> {
    dir: &'a Path,
    id: &'a str,
    issuers: &'a [String],
}

/// `escx operator register-package --json`.
#[derive(Serialize)]
struct Registered<'a> {
    package: &'a PackageName,
    version: &'a str,
    tiers: Vec<TierReport<'a>>,
    telemetry: Option<TelemetryReport<'a>>,
}

#[derive(Serialize)]
struct TierReport<'a> {
    tier: &'a str,
    unit: &'a str,
    price: String,
    currency: &'a str,
    telemetry: &'static str,
}

#[derive(Serialize)]
struct TelemetryReport<'a> {
    metrics: &'a [String],
    window_hours: u64,
    cohort_min_size: u32,
    epsilon: String,
}

/// `escx operator crl --json`.
#[derive(Serialize)]
struct CrlAccepted {
    number: u64,
    revoked: usize,
}

/// `escx operator ingest --json`.
#[derive(Serialize)]
struct Ingested<'a> {
    ok: bool,
    stored: usize,
    duplicates: usize,
    equivocations: usize,
    refused: usize,
    reports: &'a [IngestRow<'a>],
}

#[derive(Serialize)]
struct IngestRow<'a> {
    file: &'a Path,
    status: &'static str,
    code: Option<&'static str>,
    message: Option<String>,
    license_id: Option<&'a str>,
    seq: Option<u64>,
    hour: Option<String>,
}

/// `escx operator close --json`.
#[derive(Serialize)]
struct Closed<'a> {
    license_id: &'a str,
    package: &'a PackageName,
    tier: &'a str,
    period: &'a str,
    reports: u64,
    totals: BTreeMap<&'a str, u64>,
    again: bool,
}

/// `escx operator aggregate --json` when nothing is released.
#[derive(Serialize)]
struct Suppressed<'a> {
    package: &'a PackageName,
    window: &'a str,
    released: bool,
    reason: String,
    decision_epsilon: String,
    epsilon_left: String,
}

/// `escx operator aggregate --json` with a release.
#[derive(Serialize)]
struct Released<'a> {
    package: &'a PackageName,
    window: &'a str,
    released: bool,
    values: BTreeMap<&'a str, u64>,
    suppressed: &'a [String],
    clip: u64,
    epsilon: String,
    decision_epsilon: String,
    epsilon_left: String,
    noise: &'static str,
    scale: String,
}

/// `escx operator bill --json`.
#[derive(Serialize)]
struct Billed<'a> {
    file: &'a Path,
    period: String,
    events: usize,
    flagged: usize,
    charges: &'a [escx_metering::operator::UsageCharge],
    refused: &'a [escx_metering::operator::RefusedCharge],
}

/// `escx operator evidence --json`.
#[derive(Serialize)]
struct EvidenceList<'a> {
    evidence: &'a [EvidenceRow<'a>],
}

#[derive(Serialize)]
struct EvidenceRow<'a> {
    id: i64,
    kind: &'a str,
    license_id: &'a str,
    holder: String,
    hour: Option<String>,
    seq: Option<u64>,
    seen_at: String,
    repeats: u64,
}

/// `escx operator check-opening --json`.
#[derive(Serialize)]
struct OpeningChecked<'a> {
    ok: bool,
    license_id: &'a str,
    package: &'a PackageName,
    hour: String,
    minute: Option<u8>,
    values: BTreeMap<&'a str, u64>,
}

/// The ledger's billing event for a usage charge (metering.md §7.2): the CLI holds both a
/// metering operator and a ledger, which do not know each other.
pub(crate) fn usage_event(
    charge: &escx_metering::operator::UsageCharge,
) -> escx_settlement::events::BillingEvent {
    escx_settlement::events::BillingEvent::usage(
        charge.id.clone(),
        charge.time,
        charge.package.clone(),
        charge.tier.clone(),
        charge.gross_micros,
        charge.currency.clone(),
    )
}
