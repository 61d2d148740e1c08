//! Turning errors into messages and exit codes.
//!
//! Library errors keep their own message; the CLI adds the file they concern when the
//! message does not already name it, and takes the exit code and `help:` line from the
//! innermost `escx::Error`.

use std::fmt;
use std::path::Path;

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

/// The innermost escx error in a chain, if any.
pub fn escx_error(error: &anyhow::Error) -> Option<&escx::Error> {
    error.chain().find_map(|e| e.downcast_ref::<escx::Error>())
}

/// The innermost escx-manifest error in a chain, if any.
pub fn manifest_error(error: &anyhow::Error) -> Option<&escx_manifest::Error> {
    error.chain().find_map(|e| e.downcast_ref::<escx_manifest::Error>())
}

/// The innermost escx-licensing error in a chain, if any.
pub fn licensing_error(error: &anyhow::Error) -> Option<&escx_licensing::Error> {
    error.chain().find_map(|e| e.downcast_ref::<escx_licensing::Error>())
}

/// The innermost settlement error in a chain, if any.
pub fn settlement_error(error: &anyhow::Error) -> Option<&escx_settlement::Error> {
    error.chain().find_map(|e| e.downcast_ref::<escx_settlement::Error>())
}

/// The innermost waterfall error in a chain, if any.
pub fn waterfall_error(error: &anyhow::Error) -> Option<&escx_settlement::waterfall::WaterfallError> {
    error.chain().find_map(|e| e.downcast_ref::<escx_settlement::waterfall::WaterfallError>())
}

/// Stable code for `--json` output.
pub fn code(error: &anyhow::Error) -> &'static str {
    if error.chain().any(|e| e.is::<UsageError>()) {
        return "usage";
    }
    if let Some(e) = settlement_error(error) {
        return e.code();
    }
    if let Some(e) = waterfall_error(error) {
        return e.code();
    }
    if let Some(e) = licensing_error(error) {
        return e.code();
    }
    if let Some(e) = manifest_error(error) {
        return e.code();
    }
    escx_error(error).map_or("error", escx::Error::code)
}

/// The exit code for an error.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.chain().any(|e| e.is::<UsageError>()) {
        return EXIT_USAGE;
    }
    if let Some(e) = settlement_error(error) {
        return if e.is_verification_failure() { EXIT_FAILED } else { EXIT_IO };
    }
    if waterfall_error(error).is_some() {
        return EXIT_FAILED;
    }
    let failed = match (licensing_error(error), manifest_error(error), escx_error(error)) {
        (Some(e), _, _) => e.is_verification_failure(),
        (None, Some(e), _) => e.is_verification_failure(),
        (None, None, Some(e)) => e.is_verification_failure(),
        (None, None, None) => false,
    };
    if failed { EXIT_FAILED } else { EXIT_IO }
}

/// One line: the context chain joined with ": ".
pub fn message(error: &anyhow::Error) -> String {
    error.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ")
}
