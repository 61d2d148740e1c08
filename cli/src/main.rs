//! `escx`: package, sign, verify and (later) license and settle, from one command.
//!
//! The binary is thin: argument parsing, output and exit codes. Everything it does is a
//! library call in the `escx` crates.

#![forbid(unsafe_code)]

mod cmd;
mod config;
mod demo;
mod failure;
mod http;
mod output;
mod secrets;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Ui;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  verification or validation failed (bad signature, altered bytes, policy rejection, invalid input file)
  2  usage error (unknown option, missing argument)
  3  I/O or environment error (missing file, permissions, no passphrase available)

Examples:
  escx key generate --out acme
  escx package pack ./mypkg -o mypkg-1.0.0.escx --key acme.key
  escx package verify mypkg-1.0.0.escx --pubkey acme.pub
  escx demo";

/// Signed packages, blind licenses and verifiable settlement.
#[derive(Parser)]
#[command(name = "escx", version, about, after_help = AFTER_HELP, propagate_version = true)]
struct Cli {
    /// Print a JSON document instead of text (results and errors alike).
    #[arg(long, global = true)]
    json: bool,
    /// Print nothing on success but what --json asks for; errors still go to stderr. For
    /// `escx serve`: log only failures on the service's side (5xx), start and stop.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Say more: an error's full chain of causes, and the time a command took.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Take configured values from this profile of the configuration file ([profile.NAME];
    /// default: $ESCX_PROFILE, else the file's default_profile, else its top level).
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// Colour the error, warning and help labels: auto (on a terminal, unless NO_COLOR is
    /// set), always or never. Never in --json output or pipes under auto.
    #[arg(long, global = true, value_enum, default_value = "auto", value_name = "WHEN")]
    color: output::ColorWhen,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate, inspect and rotate ML-DSA-87 signing keys.
    #[command(subcommand)]
    Key(cmd::key::KeyCommand),
    /// Create and validate manifest.toml.
    #[command(subcommand)]
    Manifest(cmd::manifest::ManifestCommand),
    /// Pack, sign, verify, inspect and extract .escx packages.
    #[command(subcommand)]
    Package(cmd::package::PackageCommand),
    /// Create and maintain a registry: init, publish, yank, search, mirror, refresh.
    #[command(subcommand)]
    Registry(cmd::registry::RegistryCommand),
    /// Resolve a project's dependencies against a registry and write escx.lock.
    Resolve(cmd::deps::ResolveArgs),
    /// Show the resolved dependency tree.
    Tree(cmd::deps::TreeArgs),
    /// Resolve, verify every package, and install them in dependency order.
    Install(cmd::deps::InstallArgs),
    /// Run a licensing service: keys, epochs, sales, redemption, revocation.
    #[command(subcommand)]
    Issuer(cmd::issuer::IssuerCommand),
    /// Buy, redeem, verify offline and prove licenses from a wallet.
    #[command(subcommand)]
    License(cmd::license::LicenseCommand),
    /// The customer-side usage meter: record, hourly reports, period close, openings.
    #[command(subcommand)]
    Meter(cmd::meter::MeterCommand),
    /// The operator's metering store: ingest reports, closes, billing, private aggregates.
    #[command(subcommand)]
    Operator(cmd::operator::OperatorCommand),
    /// Settle billing events through revenue waterfalls into the ledger.
    #[command(subcommand)]
    Settle(cmd::settle::SettleCommand),
    /// Balances, history and invariants of a settlement ledger.
    #[command(subcommand)]
    Ledger(cmd::ledger::LedgerCommand),
    /// Signed settlement statements: list, export, openings, verify with public keys.
    #[command(subcommand)]
    Statement(cmd::statement::StatementCommand),
    /// Zero-knowledge proofs of a party's revenue: a total, or a lower bound.
    #[command(subcommand)]
    Proof(cmd::proof::ProofCommand),
    /// Check statements and proofs with public files only.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// Monthly payout reports per party (CSV, JSON), recorded in the audit log.
    #[command(subcommand)]
    Payout(cmd::payout::PayoutCommand),
    /// Disputes over settlements: open, resolve (upheld or reversed), list.
    #[command(subcommand)]
    Dispute(cmd::dispute::DisputeCommand),
    /// Two-phase budget holds: place, capture after verification, void.
    #[command(subcommand)]
    Hold(cmd::hold::HoldCommand),
    /// Run the operator's side as an HTTP service: issuer, report ingest, statements, registry.
    Serve(serve::ServeArgs),
    /// Run the end-to-end demonstration on embedded sample data.
    Demo(demo::DemoArgs),
    /// Keep the values repeated on every command (wallet, server, registry, ...) in a file.
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  escx completions bash > ~/.local/share/bash-completion/completions/escx\n  escx completions zsh > ~/.zfunc/_escx\n  escx completions fish > ~/.config/fish/completions/escx.fish"
    )]
    Completions(CompletionsArgs),
    /// Write the manual pages (escx.1 and one page per command).
    #[command(after_help = "Examples:\n  escx man --out ./man && man ./man/escx-package-verify.1")]
    Man(ManArgs),
}

#[derive(clap::Args)]
struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
struct ManArgs {
    /// Directory to write the pages into (created if needed).
    #[arg(long, value_name = "DIR")]
    out: std::path::PathBuf,
}

/// `escx completions SHELL`: the script on stdout.
fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "escx", &mut script);
    output::write_stdout(&script)?;
    Ok(())
}

/// `escx man --out DIR`: one roff page per command.
fn man(args: ManArgs, ui: &Ui) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out).map_err(|e| escx::Error::io(&args.out, e))?;
    clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &args.out)
        .map_err(|e| escx::Error::io(&args.out, e))?;
    let pages = std::fs::read_dir(&args.out)
        .map_err(|e| escx::Error::io(&args.out, e))?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "1")))
        .count();
    #[derive(serde::Serialize)]
    struct Written<'a> {
        dir: &'a std::path::Path,
        pages: usize,
    }
    ui.emit(&Written { dir: &args.out, pages }, || {
        format!("{} -> {}", output::count(pages, "manual page"), args.out.display())
    });
    Ok(())
}

/// `--color` as given on the command line, read before clap parses it, so that clap's own
/// help and usage errors follow it too.
fn color_choice(args: &[String]) -> clap::ColorChoice {
    match config::flag_value(args, "--color").as_deref() {
        Some("always") => clap::ColorChoice::Always,
        Some("never") => clap::ColorChoice::Never,
        _ => clap::ColorChoice::Auto,
    }
}

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let args: Vec<String> = std::env::args().collect();
    // The configuration file's values become the options' defaults (spec/cli.md): read it
    // before parsing. A file that cannot be used stops every command but `escx config`'s
    // own error report.
    let (table, config_path) = match config::path() {
        Some(path) => match config::read(&path) {
            Ok(table) => (table, Some(path)),
            Err(error) => {
                return ExitCode::from(Ui::new(args.iter().any(|a| a == "--json")).report_failure(&error));
            }
        },
        None => (toml::Table::new(), None),
    };
    let profile = config::profile_name(&args, &table);
    let command = config::apply(<Cli as clap::CommandFactory>::command(), &table, profile.as_deref());
    let parsed = command
        .color(color_choice(&args))
        .try_get_matches()
        .and_then(|matches| <Cli as clap::FromArgMatches>::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with status 0; real usage errors exit 2, as a
            // JSON document when --json was among the arguments.
            if !error.use_stderr() {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            if std::env::args_os().any(|arg| arg == "--json") {
                // clap's first paragraph, on one line: what was wrong.
                let text = error.to_string();
                let lines: Vec<&str> =
                    text.lines().take_while(|line| !line.trim().is_empty()).map(str::trim).collect();
                let message = lines.join(" ").trim_start_matches("error: ").to_owned();
                return ExitCode::from(Ui::new(true).report_failure(&failure::UsageError(message).into()));
            }
            let _ = error.print();
            return ExitCode::from(failure::EXIT_USAGE);
        }
    };
    let ui = Ui::new(cli.json).with(cli.quiet, cli.verbose, cli.color);
    if !matches!(cli.command, Command::Config(_))
        && let Some(path) = &config_path
        && let Err(error) = config::check_profile(path, &table, profile.as_deref())
    {
        return ExitCode::from(ui.report_failure(&error));
    }
    let result = match cli.command {
        Command::Key(c) => cmd::key::run(c, &ui),
        Command::Manifest(c) => cmd::manifest::run(c, &ui),
        Command::Package(c) => cmd::package::run(c, &ui),
        Command::Registry(c) => cmd::registry::run(c, &ui),
        Command::Resolve(a) => cmd::deps::run_resolve(a, &ui),
        Command::Tree(a) => cmd::deps::run_tree(a, &ui),
        Command::Install(a) => cmd::deps::run_install(a, &ui),
        Command::Issuer(c) => cmd::issuer::run_issuer(c, &ui),
        Command::License(c) => cmd::license::run_license(c, &ui),
        Command::Meter(c) => cmd::meter::run(c, &ui),
        Command::Operator(c) => cmd::operator::run(c, &ui),
        Command::Settle(c) => cmd::settle::run(c, &ui),
        Command::Ledger(c) => cmd::ledger::run(c, &ui),
        Command::Statement(c) => cmd::statement::run(c, &ui),
        Command::Proof(c) => cmd::proof::run_proof(c, &ui),
        Command::Audit(c) => cmd::audit::run_audit(c, &ui),
        Command::Payout(c) => cmd::payout::run(c, &ui),
        Command::Dispute(c) => cmd::dispute::run(c, &ui),
        Command::Hold(c) => cmd::hold::run(c, &ui),
        Command::Serve(args) => serve::run(args, &ui),
        Command::Demo(args) => demo::run(args, &ui),
        Command::Config(c) => cmd::config::run(c, cli.profile.as_deref(), &ui),
        Command::Completions(args) => completions(args),
        Command::Man(args) => man(args, &ui),
    };
    let code = match result {
        // The command's answer that could not be written is a failed command.
        Ok(()) if output::stdout_failed() => ExitCode::from(failure::EXIT_IO),
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => ExitCode::from(ui.report_failure(&error)),
    };
    ui.detail(&format!("took {:.1} ms", started.elapsed().as_secs_f64() * 1000.0));
    code
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks the whole command tree (duplicate names, conflicting flags) here rather
    /// than only when a subcommand is first used.
    #[test]
    fn command_definitions_are_consistent() {
        super::Cli::command().debug_assert();
    }

    /// Every command a user can run has examples in its `--help`.
    #[test]
    fn every_leaf_command_has_examples() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_subcommands().next().is_none() {
                let help = command.get_after_help().map(ToString::to_string).unwrap_or_default();
                if !help.contains("Examples:") {
                    missing.push(path.clone());
                }
            }
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "commands without examples: {missing:?}");
    }

    /// Every example of every `--help` parses as written: copied into a shell it reaches
    /// the command rather than a usage error (exit 2). Shell operators end the command
    /// (`|`, `>`, `&&`, `;`); leading `NAME=value` assignments are the shell's.
    #[test]
    fn every_help_example_parses() {
        fn examples(command: &clap::Command, out: &mut Vec<String>) {
            for help in [command.get_after_help(), command.get_after_long_help()].into_iter().flatten() {
                let text = help.to_string();
                let Some((_, tail)) = text.split_once("Examples:") else { continue };
                // A line ending in `\` continues on the next, as in a shell.
                let joined = tail.replace("\\\n", " ");
                for line in joined.lines() {
                    let line = line.trim();
                    let assigns = line.split_whitespace().next().is_some_and(|w| w.contains('='));
                    if line.starts_with("escx ") || (assigns && line.contains(" escx ")) {
                        out.push(line.to_string());
                    }
                }
            }
            for sub in command.get_subcommands() {
                examples(sub, out);
            }
        }
        let mut lines = Vec::new();
        examples(&super::Cli::command(), &mut lines);
        assert!(lines.len() > 100, "only {} examples found", lines.len());
        let mut failures = Vec::new();
        for line in &lines {
            let words = shlex::split(line).unwrap_or_else(|| panic!("not a shell line: {line}"));
            let assignments: Vec<(String, String)> = words
                .iter()
                .take_while(|w| *w != "escx")
                .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            let mut words: Vec<String> = words.into_iter().skip_while(|w| w != "escx").collect();
            if let Some(end) = words
                .iter()
                .position(|w| ["|", ">", ">>", "2>", "2>>", "&>", "&&", "||", ";", "<"].contains(&w.as_str()))
            {
                words.truncate(end);
            }
            // A variable the shell sets is the flag that reads it (clap's `env`), which
            // this process's environment does not hold.
            let root = super::Cli::command();
            let mut command = &root;
            for word in &words[1..] {
                match command.find_subcommand(word) {
                    Some(sub) => command = sub,
                    None => break,
                }
            }
            // Others (ESCX_PASSPHRASE) are read by the command itself.
            for (name, value) in &assignments {
                let arg = command.get_arguments().find(|a| a.get_env().is_some_and(|e| e == name.as_str()));
                if let Some(long) = arg.and_then(clap::Arg::get_long) {
                    words.extend([format!("--{long}"), value.clone()]);
                }
            }
            if let Err(error) = <super::Cli as clap::Parser>::try_parse_from(&words)
                && !matches!(
                    error.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                )
            {
                failures.push(format!(
                    "{line}\n    {}",
                    error.to_string().lines().take(2).collect::<Vec<_>>().join(" ")
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} examples do not parse:\n{}",
            failures.len(),
            lines.len(),
            failures.join("\n")
        );
    }
}
