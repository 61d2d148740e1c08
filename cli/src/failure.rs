//! Turning errors into messages and exit codes.
//!
//! Library errors keep their own message; the CLI adds the file they concern when the
//! message does not already name it, and takes the code, the exit code (from the error's
//! [`escx::ErrorClass`]) and the `help:` line from the first library error in the chain.

use std::fmt;
use std::path::Path;

use escx::{ErrorClass, Fault};

/// Verification or validation failed.
pub const EXIT_FAILED: u8 = 1;
/// Bad command line.
pub const EXIT_USAGE: u8 = 2;
/// I/O or environment problem.
pub const EXIT_IO: u8 = 3;

/// A command-line mistake the parser cannot catch (e.g. an unknown section name).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A failure the command has already reported in full (its output lists what failed):
/// only the exit code is left to give.
#[derive(Debug)]
pub struct Reported(pub u8);

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed (reported above)")
    }
}

impl std::error::Error for Reported {}

/// A failure the command line detects itself, with its own code, class and help (e.g. a
/// directory given as a package that has no `manifest.toml`).
#[derive(Debug)]
pub struct CliFailure {
    /// Stable code (spec/cli.md).
    pub code: &'static str,
    /// Input (exit 1) or environment (exit 3).
    pub class: ErrorClass,
    /// What is wrong, naming the file.
    pub message: String,
    /// What to do.
    pub help: &'static str,
}

impl fmt::Display for CliFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliFailure {}

impl Fault for CliFailure {
    fn code(&self) -> &'static str {
        self.code
    }

    fn class(&self) -> ErrorClass {
        self.class
    }

    fn help(&self) -> Option<&'static str> {
        Some(self.help)
    }
}

/// A package directory without `manifest.toml`: code `io`, exit 3, and how to make one.
pub fn no_manifest(dir: &Path) -> anyhow::Error {
    CliFailure {
        code: "io",
        class: ErrorClass::Environment,
        message: format!("{}: no manifest.toml in this directory", dir.display()),
        help: "a package directory needs a manifest.toml; `escx manifest init DIR` writes a commented one",
    }
    .into()
}

/// An output the command would create exists: code `io`, exit 3 (spec/cli.md, "Output
/// files"), with what to do instead (`pass --force to replace it`, ...).
pub fn exists(path: &Path, what_to_do: &str) -> anyhow::Error {
    let reason = format!("exists; {what_to_do}");
    escx::Error::io(path, std::io::Error::new(std::io::ErrorKind::AlreadyExists, reason)).into()
}

/// Adds `path` to an `escx::Error` whose message does not already name a file.
pub fn at(path: &Path) -> impl FnOnce(escx::Error) -> anyhow::Error + '_ {
    move |error| {
        let names_file = matches!(
            error,
            escx::Error::Io { .. }
                | escx::Error::KeyFile { .. }
                | escx::Error::WrongPassphrase { .. }
                | escx::Error::PassphraseRequired { .. }
                | escx::Error::PolicyInvalid { .. }
                | escx::Error::PackInput { .. }
                | escx::Error::ExtractTarget { .. }
                | escx::Error::ContentKeyRequired { .. }
        );
        if names_file {
            anyhow::Error::new(error)
        } else {
            anyhow::Error::new(error).context(path.display().to_string())
        }
    }
}

/// The first library error in a chain, seen through the [`escx::Fault`] protocol every
/// escx crate's errors follow.
pub fn fault(error: &anyhow::Error) -> Option<&dyn Fault> {
    error.chain().find_map(as_fault)
}

/// `error` as a [`Fault`] when it is one of the escx crates' error types. Stable Rust
/// cannot downcast to a trait object, so each type is named once, here; at most one matches.
fn as_fault<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a dyn Fault> {
    macro_rules! first_of {
        ($($t:ty),+ $(,)?) => {
            $(if let Some(e) = error.downcast_ref::<$t>() { return Some(e); })+
        };
    }
    first_of!(
        CliFailure,
        escx_settlement::Error,
        escx_settlement::waterfall::WaterfallError,
        escx_settlement::statement::StatementError,
        escx_settlement::proofs::ProofError,
        escx_licensing::Error,
        escx_metering::Error,
        escx_manifest::Error,
        escx::Error,
        escx::FormatError,
    );
    None
}

/// Stable code for `--json` output.
pub fn code(error: &anyhow::Error) -> &'static str {
    if error.chain().any(|e| e.is::<UsageError>()) {
        return "usage";
    }
    fault(error).map_or("error", |f| f.code())
}

/// The exit code for an error: 1 when the input is at fault, 3 for the environment.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.chain().any(|e| e.is::<UsageError>()) {
        return EXIT_USAGE;
    }
    match fault(error).map(|f| f.class()) {
        Some(ErrorClass::Input) => EXIT_FAILED,
        Some(ErrorClass::Environment) | None => EXIT_IO,
    }
}

/// The `help:` line: the command line's own wording where it has one for the code, else
/// the library's.
pub fn help(error: &anyhow::Error) -> Option<&'static str> {
    let fault = fault(error)?;
    cli_help(fault.code()).or_else(|| fault.help())
}

/// Help that names the flags, variables and commands that fix a problem.
fn cli_help(code: &str) -> Option<&'static str> {
    Some(match code {
        "untrusted" => "pass the publisher's public key with --pubkey, or add it to the trust policy",
        "no-wallet" => {
            "check --wallet; a wallet is created by `escx license request` (or `escx license receive-key`)"
        }
        "wrong-passphrase" => "retry; ESCX_PASSPHRASE overrides the prompt",
        "passphrase-required" => "set ESCX_PASSPHRASE, or run from a terminal to be prompted",
        "content-key-required" => {
            "buy and install a license, then pass --wallet so its content key decrypts the payload"
        }
        "not-a-registry" => "create one with `escx registry init`",
        "no-registry-keys" => "add a [registry] table to the trust policy, or pass --registry-key",
        "no-token" => "buy one with `escx license request`",
        "no-license" => "redeem a token with `escx license redeem`",
        "meter-not-found" => "redeem a license with `escx license redeem`",
        "hours-unreported" => "report them first with `escx meter report --hour HOUR`",
        "unknown-terms" => "register the package with `escx operator package`",
        _ => return None,
    })
}

/// One line: the context chain joined with ": ".
pub fn message(error: &anyhow::Error) -> String {
    error.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}
