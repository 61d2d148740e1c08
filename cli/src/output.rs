//! Output: short human lines on stdout, or one JSON document with `--json`; progress bars
//! on stderr only when both stdout and stderr are terminals.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

use crate::failure;

/// Sections smaller than this finish too fast for a bar to be useful.
const PROGRESS_MIN_BYTES: u64 = 32 * 1024 * 1024;

/// Set once a write to stdout failed because its reader went away (`escx demo | head -2`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `bytes` to stdout. A closed pipe is not an error: later writes are dropped and
/// the command finishes (so temporary files are still cleaned up) without a panic or a
/// message. Any other write failure is returned.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Set once a write to stdout failed for another reason than a closed pipe (a full disk,
/// `> /dev/full`): the command then exits 3 (spec/cli.md).
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// [`write_stdout`] of one line; a failure other than a closed pipe goes to stderr and
/// makes the command exit 3 ([`stdout_failed`]).
pub fn print_line(text: &str) {
    if let Err(e) = write_stdout(format!("{text}\n").as_bytes()) {
        STDOUT_FAILED.store(true, Ordering::Relaxed);
        eprintln!("error: writing to stdout: {e}");
    }
}

/// Whether a line of the command's output could not be written.
pub fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// The `--json` report of a command whose only result is a file it wrote: `{file}`.
#[derive(serde::Serialize)]
pub struct Written<'a> {
    pub file: &'a std::path::Path,
}

/// `--color`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless `NO_COLOR` is set (to anything but the empty string).
    Auto,
    /// Always, even into a pipe.
    Always,
    /// Never.
    Never,
}

/// The styles of the labels on stderr.
const ERROR: anstyle::Style =
    anstyle::Style::new().bold().fg_color(Some(anstyle::Color::Ansi(anstyle::AnsiColor::Red)));
const WARNING: anstyle::Style =
    anstyle::Style::new().bold().fg_color(Some(anstyle::Color::Ansi(anstyle::AnsiColor::Yellow)));
const HELP: anstyle::Style =
    anstyle::Style::new().bold().fg_color(Some(anstyle::Color::Ansi(anstyle::AnsiColor::Cyan)));

/// How to talk to the user.
pub struct Ui {
    pub json: bool,
    /// `-q`: no human output on success, no warnings.
    pub quiet: bool,
    /// `-v` (counted): an error's causes, the time taken.
    pub verbose: u8,
    /// Whether stderr's labels are coloured.
    color: bool,
    progress_allowed: bool,
}

impl Ui {
    pub fn new(json: bool) -> Self {
        // Bars go to stderr, but only when a person is watching both streams: piping
        // stdout (`escx ... | jq`) or redirecting stderr turns them off.
        let interactive = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        Self { json, quiet: false, verbose: 0, color: false, progress_allowed: !json && interactive }
    }

    /// With the global `-q`, `-v` and `--color` (spec/cli.md).
    pub fn with(mut self, quiet: bool, verbose: u8, color: ColorWhen) -> Self {
        self.quiet = quiet;
        self.verbose = verbose;
        self.progress_allowed &= !quiet;
        self.color = match color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => {
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
            }
        };
        self
    }

    /// `label:` for stderr, in `style` when colour is on.
    fn label(&self, style: anstyle::Style, label: &str) -> String {
        if self.color { format!("{style}{label}:{style:#}") } else { format!("{label}:") }
    }

    /// A line of detail on stderr with `-v` (never on stdout, which stays the answer).
    pub fn detail(&self, text: &str) {
        if self.verbose > 0 {
            eprintln!("{text}");
        }
    }

    /// Prints `value` as JSON (with `--json`) or `human` lines. `value` is the command's
    /// report struct, whose shape spec/cli.md documents.
    pub fn emit(&self, value: &impl serde::Serialize, human: impl FnOnce() -> String) {
        if self.json {
            print_line(&serde_json::to_string_pretty(value).unwrap_or_default());
        } else if !self.quiet {
            let text = human();
            if !text.is_empty() {
                print_line(text.trim_end());
            }
        }
    }

    /// [`Self::emit`] even with `-q`: an answer a caller cannot do without (the address
    /// `escx serve` listens on, which `--listen 127.0.0.1:0` leaves to the system).
    pub fn emit_always(&self, value: &impl serde::Serialize, human: impl FnOnce() -> String) {
        if self.json {
            print_line(&serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            print_line(human().trim_end());
        }
    }

    /// A warning on stderr (with or without `--json`: stdout stays the command's answer).
    pub fn warn(&self, text: &str) {
        if !self.quiet {
            eprintln!("{} {text}", self.label(WARNING, "warning"));
        }
    }

    /// Whether progress bars may be drawn.
    pub fn progress_allowed(&self) -> bool {
        self.progress_allowed
    }

    /// A progress sink: a bar on a terminal, nothing otherwise.
    pub fn progress(&self) -> Bar {
        Bar {
            enabled: self.progress_allowed,
            min: PROGRESS_MIN_BYTES,
            template: "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            bar: Mutex::new(None),
        }
    }

    /// Prints the error (stderr, or stdout JSON) and returns the exit code.
    pub fn report_failure(&self, error: &anyhow::Error) -> u8 {
        if let Some(failure::Reported(exit)) = error.downcast_ref::<failure::Reported>() {
            return *exit;
        }
        let help = failure::help(error);
        if self.json {
            let mut value = serde_json::json!({
                "ok": false,
                "error": { "code": failure::code(error), "message": failure::message(error), "help": help },
            });
            if let Some(escx_manifest::Error::Manifest(diagnostics)) =
                error.chain().find_map(|e| e.downcast_ref::<escx_manifest::Error>())
            {
                value["error"]["diagnostics"] = diagnostics
                    .0
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "file": d.file, "line": d.line, "column": d.column,
                            "key": d.key, "message": d.message, "help": d.help,
                        })
                    })
                    .collect();
            }
            print_line(&serde_json::to_string_pretty(&value).unwrap_or_default());
        } else {
            eprintln!("{} {}", self.label(ERROR, "error"), failure::message(error));
            if self.verbose > 0 {
                for cause in error.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
                }
            }
            if let Some(help) = help {
                eprintln!("{} {help}", self.label(HELP, "help"));
            }
        }
        failure::exit_code(error)
    }
}

/// An indicatif bar behind the library's progress trait, counting bytes
/// ([`Ui::progress`]) or items ([`Ui::count_progress`]); drawn only on a terminal and only
/// for phases of at least `min`.
pub struct Bar {
    enabled: bool,
    min: u64,
    template: &'static str,
    bar: Mutex<Option<ProgressBar>>,
}

impl Ui {
    /// A [`Bar`] counting items (events, packages), for phases of at least `min` items.
    pub fn count_progress(&self, min: u64) -> Bar {
        Bar {
            enabled: self.progress_allowed,
            min,
            template: "{msg:>10} [{bar:30}] {pos}/{len} {per_sec} {eta}",
            bar: Mutex::new(None),
        }
    }
}

impl escx::progress::Progress for Bar {
    fn start(&self, label: &str, total: u64) {
        if !self.enabled || total < self.min {
            return;
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(self.template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_owned());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, count: u64) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.inc(count);
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
    }
}

/// Lowercase hex.
/// `n` and the noun, plural unless `n` is 1: `count(1, "entry")` is "1 entry",
/// `count(3, "entry")` "3 entries".
pub fn count(n: impl TryInto<u64>, noun: &str) -> String {
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    format!("{n} {}", self::noun(n, noun))
}

/// The noun alone, plural unless `n` is 1 ("token", "tokens").
pub fn noun(n: impl TryInto<u64>, noun: &str) -> String {
    if n.try_into().ok() == Some(1) {
        return noun.to_owned();
    }
    match noun.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{stem}ies"),
        _ if noun.ends_with(['s', 'x']) || noun.ends_with("sh") || noun.ends_with("ch") => {
            format!("{noun}es")
        }
        _ => format!("{noun}s"),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// "1.2 MiB"-style sizes for people.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// How a [`Table`] column is aligned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Amounts and counts.
    Right,
}

/// Rows printed in columns as wide as their widest cell (in characters), two spaces
/// apart, with no trailing spaces, so long party or package names never push a column out
/// of line.
pub struct Table {
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with one alignment per column.
    pub fn new(align: &[Align]) -> Self {
        Self { align: align.to_vec(), rows: Vec::new() }
    }

    /// Adds a row (missing cells are empty).
    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, each indented by `indent` and ending in a newline.
    pub fn render(&self, indent: &str) -> String {
        let width = |column: usize| {
            self.rows.iter().map(|row| row.get(column).map_or(0, |c| c.chars().count())).max().unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.align.len()).map(width).collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = indent.to_owned();
            for (column, (&align, &w)) in self.align.iter().zip(&widths).enumerate() {
                let cell = row.get(column).map_or("", String::as_str);
                if column > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => line.push_str(&format!("{cell:<w$}")),
                    Align::Right => line.push_str(&format!("{cell:>w$}")),
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_are_plural_unless_one() {
        assert_eq!(super::count(1usize, "package"), "1 package");
        assert_eq!(super::count(0usize, "package"), "0 packages");
        assert_eq!(super::count(2u64, "entry"), "2 entries");
        assert_eq!(super::count(2u64, "day"), "2 days");
        assert_eq!(super::count(3usize, "batch"), "3 batches");
        assert_eq!(super::count(1u32, "entry"), "1 entry");
    }

    #[test]
    fn tables_align_on_the_widest_cell_without_trailing_spaces() {
        use super::{Align, Table};
        let mut table = Table::new(&[Align::Left, Align::Right, Align::Left]);
        table.row(["acme", "1.00", "USD"]);
        table.row(["a-much-longer-party-name", "1234.50", ""]);
        assert_eq!(
            table.render("  "),
            "  acme                         1.00  USD\n  a-much-longer-party-name  1234.50\n"
        );
    }
}
