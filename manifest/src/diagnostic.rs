//! Located, fixable error messages (spec: manifest.md §9): file, line, column, the key
//! path, the offending value, what is wrong, and how to fix it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Dotted key path, e.g. `pricing.tier[0].price`.
    pub key: String,
    /// What is wrong (includes the offending value).
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in one document (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, diagnostic) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Collects diagnostics against one source text.
pub(crate) struct Collector<'a> {
    file: &'a Path,
    text: &'a str,
    pub(crate) found: Vec<Diagnostic>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        Self { file, text, found: Vec::new() }
    }

    /// Records a problem at `span`.
    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let (line, column) = line_col(self.text, span.start);
        self.found.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
            help,
        });
    }

    pub(crate) fn finish(self) -> Result<(), Diagnostics> {
        if self.found.is_empty() { Ok(()) } else { Err(Diagnostics(self.found)) }
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let offset = (0..=offset).rev().find(|&o| text.is_char_boundary(o)).unwrap_or(0);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Turns a TOML/serde error into a diagnostic, adding "did you mean" for unknown keys.
pub(crate) fn from_toml(file: &Path, text: &str, error: &toml::de::Error) -> Diagnostic {
    let (line, column) = error.span().map_or((1, 1), |span| line_col(text, span.start));
    let message = error.message().trim().to_owned();
    let help = unknown_field_help(&message);
    let key = match (error.span(), unknown_field(&message)) {
        (Some(span), Some(unknown)) => dotted_key(text, span.start, unknown),
        _ => String::new(),
    };
    Diagnostic { file: file.to_path_buf(), line, column, key, message, help }
}

/// The key serde names in "unknown field `x`, ...".
fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split_once('`').map(|(unknown, _)| unknown)
}

/// The dotted key of `unknown` at `offset`: the table header in force there (the nearest
/// `[table]` or `[[array]]` line at or above it) joined with the key, or the header itself
/// when the unknown key is the table's own name (`[widgets]`).
fn dotted_key(text: &str, offset: usize, unknown: &str) -> String {
    let offset = offset.min(text.len());
    let offset = (0..=offset).rev().find(|&o| text.is_char_boundary(o)).unwrap_or(0);
    let line_end = text[offset..].find('\n').map_or(text.len(), |n| offset + n);
    let header = text[..line_end].lines().rev().find_map(|line| {
        let line = line.trim();
        let inner = line.strip_prefix("[[").and_then(|l| l.split_once("]]")).map(|(name, _)| name);
        inner.or_else(|| line.strip_prefix('[').and_then(|l| l.split_once(']')).map(|(name, _)| name))
    });
    match header.map(str::trim) {
        Some(header) if header == unknown || header.ends_with(&format!(".{unknown}")) => header.to_owned(),
        Some(header) => format!("{header}.{unknown}"),
        None => unknown.to_owned(),
    }
}

/// serde's message is "unknown field `x`, expected one of `a`, `b`" (or "expected `a`").
fn unknown_field_help(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = expected
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(unknown, candidate), *candidate))
        .min()
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 3));
    match best {
        Some((_, candidate)) => Some(format!("did you mean `{candidate}`?")),
        None if !expected.is_empty() => Some(format!("allowed keys here: {}", expected.join(", "))),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_suggests_the_closest_key() {
        let help =
            unknown_field_help("unknown field `verison`, expected one of `name`, `version`, `description`");
        assert_eq!(help.as_deref(), Some("did you mean `version`?"));
        let help = unknown_field_help("unknown field `zzz`, expected one of `name`, `version`");
        assert_eq!(help.as_deref(), Some("allowed keys here: name, version"));
    }

    #[test]
    fn unknown_keys_are_named_with_their_table() {
        let text = "[package]\nname = \"a\"\ncolour = 1\n[[pricing.tier]]\nnmae = 2\n[widgets]\na = 1\n";
        assert_eq!(dotted_key(text, text.find("colour").unwrap(), "colour"), "package.colour");
        assert_eq!(dotted_key(text, text.find("nmae").unwrap(), "nmae"), "pricing.tier.nmae");
        assert_eq!(dotted_key(text, text.find("widgets").unwrap(), "widgets"), "widgets");
        assert_eq!(dotted_key("top = 1\n", 0, "top"), "top");
    }

    #[test]
    fn line_and_column_are_one_based_characters() {
        assert_eq!(line_col("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_col("ab\ncdé", 5), (2, 3));
    }
}
