//! `escx config show|get|set|unset`: the configuration file (spec/cli.md §Configuration).

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::config::{self, KEYS, Source};
use crate::failure::UsageError;
use crate::output::{Align, Table, Ui};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Every value in force, and where it comes from (a variable, the profile, the file).
    #[command(after_help = "\
The file is $ESCX_CONFIG, else $XDG_CONFIG_HOME/escx/config.toml, else
~/.config/escx/config.toml. Its values are the defaults of the options of the same name:
an option on the command line wins, then an ESCX_* variable, then the file.

Examples:
  escx config show
  escx config show --profile staging --json")]
    Show,
    /// One value in force (exit 1 when none is set).
    #[command(after_help = "Examples:\n  escx config get wallet\n  escx --profile staging config get server")]
    Get(GetArgs),
    /// Set a value in the file (top level, or the profile --profile names).
    #[command(after_help = "\
The file is written with mode 0600 in a 0700 directory: it may hold an account token.

Examples:
  escx config set wallet ~/escx/wallet
  escx config set --profile staging server https://staging.example:8440
  escx config set account_token 9f2c...e1")]
    Set(SetArgs),
    /// Remove a value from the file (top level, or the profile --profile names).
    #[command(
        after_help = "Examples:\n  escx config unset server\n  escx config unset --profile staging server"
    )]
    Unset(GetArgs),
}

#[derive(Args)]
pub struct GetArgs {
    /// wallet, server, registry, registry_key, account_token, operator_key or state_dir.
    key: String,
}

#[derive(Args)]
pub struct SetArgs {
    /// wallet, server, registry, registry_key, account_token, operator_key or state_dir.
    key: String,
    /// The value.
    value: String,
}

/// One row of `escx config show --json`.
#[derive(Serialize)]
struct Shown {
    key: &'static str,
    value: Option<String>,
    source: Option<Source>,
}

/// `escx config show --json`.
#[derive(Serialize)]
struct ShowReport<'a> {
    file: String,
    profile: Option<&'a str>,
    values: &'a [Shown],
}

/// `escx config get --json`.
#[derive(Serialize)]
struct GetReport<'a> {
    key: &'a str,
    value: String,
    source: Source,
}

/// `escx config set --json` and `unset`.
#[derive(Serialize)]
struct SetReport<'a> {
    file: String,
    profile: Option<&'a str>,
    key: &'a str,
    set: bool,
}

fn key(name: &str) -> anyhow::Result<&'static config::Key> {
    Ok(KEYS.iter().find(|k| k.name == name).ok_or_else(|| {
        UsageError(format!(
            "{name:?} is not a configuration key; keys: {}",
            KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        ))
    })?)
}

fn masked(key: &config::Key, value: &str) -> String {
    // Cut by characters: a value typed by hand need not be ASCII.
    if key.secret && value.chars().count() > 8 {
        format!("{}…", value.chars().take(8).collect::<String>())
    } else {
        value.to_owned()
    }
}

pub fn run(command: ConfigCommand, profile: Option<&str>, ui: &Ui) -> anyhow::Result<()> {
    let path = config::path().ok_or_else(|| {
        UsageError("no configuration file: set ESCX_CONFIG, XDG_CONFIG_HOME or HOME".into())
    })?;
    let file = path.display().to_string();
    match command {
        ConfigCommand::Show => {
            let table = config::read(&path)?;
            let profile = profile.map(str::to_owned).or_else(|| config::profile_name(&[], &table));
            let values: Vec<Shown> = KEYS
                .iter()
                .map(|k| {
                    let found = config::value(k, &table, profile.as_deref());
                    Shown {
                        key: k.name,
                        value: found.as_ref().map(|(v, _)| masked(k, v)),
                        source: found.map(|(_, s)| s),
                    }
                })
                .collect();
            ui.emit(&ShowReport { file: file.clone(), profile: profile.as_deref(), values: &values }, || {
                let mut table = Table::new(&[Align::Left, Align::Left, Align::Left]);
                for row in &values {
                    let source = match row.source {
                        Some(Source::Env) => "(variable)",
                        Some(Source::Profile) => "(profile)",
                        Some(Source::File) => "(file)",
                        None => "",
                    };
                    table.row([
                        row.key.to_owned(),
                        row.value.clone().unwrap_or_else(|| "-".into()),
                        source.into(),
                    ]);
                }
                let profile = profile.as_deref().map(|p| format!(", profile {p}")).unwrap_or_default();
                format!("{file}{profile}\n{}", table.render(""))
            });
        }
        ConfigCommand::Get(args) => {
            let k = key(&args.key)?;
            let table = config::read(&path)?;
            let profile = profile.map(str::to_owned).or_else(|| config::profile_name(&[], &table));
            let (value, source) =
                config::value(k, &table, profile.as_deref()).ok_or_else(|| crate::failure::CliFailure {
                    code: "config-unset",
                    class: escx::ErrorClass::Input,
                    message: format!("{} is not set ({file})", k.name),
                    help: "set it with `escx config set KEY VALUE`",
                })?;
            ui.emit(&GetReport { key: k.name, value: value.clone(), source }, || value.clone());
        }
        ConfigCommand::Set(args) => {
            let k = key(&args.key)?;
            let mut table = config::read(&path)?;
            scope(&mut table, profile)?.insert(k.name.into(), toml::Value::String(args.value.clone()));
            config::write(&path, &table)?;
            ui.emit(&SetReport { file: file.clone(), profile, key: k.name, set: true }, || {
                format!("{} = {} -> {file}{}", k.name, masked(k, &args.value), in_profile(profile))
            });
        }
        ConfigCommand::Unset(args) => {
            let k = key(&args.key)?;
            let mut table = config::read(&path)?;
            let removed = scope(&mut table, profile)?.remove(k.name).is_some();
            if removed {
                config::write(&path, &table)?;
            }
            ui.emit(&SetReport { file: file.clone(), profile, key: k.name, set: false }, || {
                if removed {
                    format!("{} removed from {file}{}", k.name, in_profile(profile))
                } else {
                    format!("{} was not set in {file}{}", k.name, in_profile(profile))
                }
            });
        }
    }
    Ok(())
}

fn in_profile(profile: Option<&str>) -> String {
    profile.map(|p| format!(" [profile.{p}]")).unwrap_or_default()
}

/// The table a `set` or `unset` writes to: the top level, or `[profile.NAME]`.
fn scope<'a>(table: &'a mut toml::Table, profile: Option<&str>) -> anyhow::Result<&'a mut toml::Table> {
    let Some(name) = profile else { return Ok(table) };
    let profiles = table
        .entry("profile")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| UsageError("the file's `profile` key is not a table of profiles".into()))?;
    Ok(profiles
        .entry(name)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| UsageError(format!("profile.{name} is not a table")))?)
}
