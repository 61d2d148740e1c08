//! The configuration file (spec/cli.md §Configuration): values repeated on every command,
//! kept once, in named profiles. They become the defaults of the matching options, so an
//! option on the command line wins, then an `ESCX_*` variable, then the file.
//!
//! The file is `$ESCX_CONFIG`, else `$XDG_CONFIG_HOME/escx/config.toml`, else
//! `~/.config/escx/config.toml`: top-level keys are the default profile, and `[profile.NAME]`
//! tables override them when `--profile NAME` (or `ESCX_PROFILE`, or the file's own
//! `default_profile = "NAME"`) picks that profile.

use std::path::{Path, PathBuf};

use clap::Command;

use crate::failure::{CliFailure, UsageError};

/// One configurable value: its key in the file, the argument id it defaults, and the
/// variable that overrides the file.
pub struct Key {
    pub name: &'static str,
    arg: &'static str,
    pub env: &'static str,
    /// Shown masked, and the file holding it must be private (mode 0600).
    pub secret: bool,
}

/// Every key the file may hold.
pub const KEYS: [Key; 7] = [
    Key { name: "wallet", arg: "wallet", env: "ESCX_WALLET", secret: false },
    Key { name: "server", arg: "server", env: "ESCX_SERVER", secret: false },
    Key { name: "registry", arg: "registry", env: "ESCX_REGISTRY", secret: false },
    Key { name: "registry_key", arg: "registry_key", env: "ESCX_REGISTRY_KEY", secret: false },
    Key { name: "account_token", arg: "account_token", env: "ESCX_ACCOUNT_TOKEN", secret: true },
    Key { name: "operator_key", arg: "operator_key", env: "ESCX_OPERATOR_KEY", secret: false },
    Key { name: "state_dir", arg: "state_dir", env: "ESCX_STATE_DIR", secret: false },
];

/// Where the file is.
pub fn path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ESCX_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let base =
        std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()).map(PathBuf::from).or_else(|| {
            std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("escx").join("config.toml"))
}

/// The file's contents: empty when there is none.
pub fn read(path: &Path) -> anyhow::Result<toml::Table> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(toml::Table::new()),
        Err(e) => return Err(escx::Error::io(path, e).into()),
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| invalid(path, &e.to_string()))?;
    check(path, &table)?;
    Ok(table)
}

fn invalid(path: &Path, reason: &str) -> anyhow::Error {
    CliFailure {
        code: "config-invalid",
        class: escx::ErrorClass::Input,
        message: format!("{}: {}", path.display(), reason.trim_end()),
        help: "fix the file, or see what it holds with `escx config show`; keys: wallet, server, registry, \
               registry_key, account_token, operator_key, state_dir, default_profile, [profile.NAME]",
    }
    .into()
}

/// Only known keys, all strings; a file holding an account token must be private.
fn check(path: &Path, table: &toml::Table) -> anyhow::Result<()> {
    let mut secret = false;
    let mut scopes: Vec<(String, &toml::Table)> = vec![(String::new(), table)];
    for (key, value) in table {
        match (key.as_str(), value) {
            ("default_profile", toml::Value::String(_)) => {}
            ("default_profile", _) => return Err(invalid(path, "default_profile must be a profile's name")),
            ("profile", toml::Value::Table(profiles)) => {
                for (name, profile) in profiles {
                    let profile = profile
                        .as_table()
                        .ok_or_else(|| invalid(path, &format!("profile.{name} is not a table")))?;
                    scopes.push((format!("profile.{name}."), profile));
                }
            }
            ("profile", _) => return Err(invalid(path, "profile must hold [profile.NAME] tables")),
            _ => {}
        }
    }
    for (prefix, scope) in scopes {
        for (key, value) in scope {
            if prefix.is_empty() && (key == "profile" || key == "default_profile") {
                continue;
            }
            let Some(known) = KEYS.iter().find(|k| k.name == key) else {
                return Err(invalid(path, &format!("unknown key {prefix}{key}")));
            };
            if !value.is_str() {
                return Err(invalid(path, &format!("{prefix}{key} must be a string")));
            }
            secret |= known.secret;
        }
    }
    if secret {
        private(path)?;
    }
    Ok(())
}

/// A file holding a secret must be readable by its owner alone.
fn private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).map_err(|e| escx::Error::io(path, e))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(CliFailure {
            code: "config-insecure",
            class: escx::ErrorClass::Environment,
            message: format!(
                "{}: holds an account token but is readable by others (mode {:o})",
                path.display(),
                mode & 0o777
            ),
            help: "make it private: chmod 600 on the file (escx config set writes it so)",
        }
        .into());
    }
    Ok(())
}

/// The profile the command line, `ESCX_PROFILE` or the file names (`None`: the top level).
pub fn profile_name(args: &[String], table: &toml::Table) -> Option<String> {
    flag_value(args, "--profile")
        .or_else(|| std::env::var("ESCX_PROFILE").ok().filter(|p| !p.is_empty()))
        .or_else(|| table.get("default_profile").and_then(toml::Value::as_str).map(str::to_owned))
}

/// The value of a global option (`--name VALUE` or `--name=VALUE`) read from the raw
/// arguments, for what must be known before clap parses them.
pub fn flag_value(args: &[String], name: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, arg)| {
        arg.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::to_owned)
            .or_else(|| (arg == name).then(|| args.get(i + 1).cloned().unwrap_or_default()))
    })
}

/// Where a value came from, for `escx config show`.
#[derive(Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Env,
    Profile,
    File,
}

/// The value of `key` and where it came from: `ESCX_*`, then the profile, then the top level.
pub fn value(key: &Key, table: &toml::Table, profile: Option<&str>) -> Option<(String, Source)> {
    if let Some(value) = std::env::var(key.env).ok().filter(|v| !v.is_empty()) {
        return Some((value, Source::Env));
    }
    if let Some(name) = profile
        && let Some(value) = table
            .get("profile")
            .and_then(|p| p.get(name))
            .and_then(|p| p.get(key.name))
            .and_then(toml::Value::as_str)
    {
        return Some((value.to_owned(), Source::Profile));
    }
    table.get(key.name).and_then(toml::Value::as_str).map(|v| (v.to_owned(), Source::File))
}

/// A profile that the file does not define is a usage error.
pub fn check_profile(path: &Path, table: &toml::Table, profile: Option<&str>) -> anyhow::Result<()> {
    if let Some(name) = profile
        && table.get("profile").and_then(|p| p.get(name)).is_none()
    {
        return Err(UsageError(format!(
            "profile {name:?} is not in {} (add a [profile.{name}] table, e.g. with `escx config set --profile {name} KEY VALUE`)",
            path.display()
        ))
        .into());
    }
    Ok(())
}

/// `command` with every configured value as the default of its option, in every
/// subcommand that has one. A default is not a command-line value: it never conflicts
/// with another option, and an option given wins.
pub fn apply(command: Command, table: &toml::Table, profile: Option<&str>) -> Command {
    let values: Vec<(&Key, String)> =
        KEYS.iter().filter_map(|k| value(k, table, profile).map(|(v, _)| (k, v))).collect();
    apply_values(command, &values)
}

fn apply_values(mut command: Command, values: &[(&Key, String)]) -> Command {
    for (key, value) in values {
        if command.get_arguments().any(|a| a.get_id() == key.arg) {
            let secret = key.secret;
            command = command.mut_arg(key.arg, |arg| {
                // A required option with a configured value is no longer required.
                let arg = arg.default_value(value.clone()).required(false);
                // The account token's value must not show in --help.
                if secret { arg.hide_default_value(true) } else { arg }
            });
        }
    }
    command.mut_subcommands(|sub| apply_values(sub, values))
}

/// Writes `table` to `path` as a private file (0600 in a 0700 directory).
pub fn write(path: &Path, table: &toml::Table) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        escx::fsutil::create_private_dir(dir).map_err(crate::failure::at(dir))?;
    }
    let text = format!(
        "# escx configuration (escx config set writes it; see spec/cli.md)\n{}",
        toml::to_string_pretty(table).map_err(|e| invalid(path, &e.to_string()))?
    );
    escx::fsutil::write_atomic(path, text.as_bytes(), escx::fsutil::MODE_SECRET, true)
        .map_err(crate::failure::at(path))
}
