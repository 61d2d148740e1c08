//! `[telemetry]` (manifest.md §2).

use super::raw::*;
use super::*;

pub(super) fn validate_telemetry(raw: S<RawTelemetry>, c: &mut Collector<'_>) -> Option<Telemetry> {
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.metrics.is_empty() {
        c.error(
            span.clone(),
            "telemetry.metrics",
            "no metrics",
            Some("list what the meter counts, e.g. metrics = [\"invocations\", \"compute_ms\"]".into()),
        );
    }
    let mut metrics = Vec::new();
    for metric in &raw.metrics {
        let text = metric.get_ref();
        let valid = matches!(text.as_str(), "invocations" | "compute_ms" | "bytes")
            || text.strip_prefix("custom:").is_some_and(|name| {
                !name.is_empty()
                    && name.len() <= 32
                    && name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
            });
        if valid {
            metrics.push(text.clone());
        } else {
            c.error(
                metric.span(),
                "telemetry.metrics",
                format!("{text:?} is not a metric"),
                Some("use invocations, compute_ms, bytes, or custom:<name> (a-z, 0-9, '_')".into()),
            );
        }
    }
    let window_secs = match &raw.window {
        Some(window) => parse_window(window, c),
        None => {
            c.error(
                span.clone(),
                "telemetry.window",
                "missing `window`",
                Some("add window = \"1h\" (at least one hour)".into()),
            );
            None
        }
    };
    let cohort_min_size = match &raw.cohort_min_size {
        Some(size)
            if *size.get_ref() < i64::from(COHORT_MIN_SIZE_FLOOR)
                || *size.get_ref() > i64::from(u32::MAX) =>
        {
            c.error(
                size.span(),
                "telemetry.cohort_min_size",
                format!("{} is below the minimum of {COHORT_MIN_SIZE_FLOOR}", size.get_ref()),
                Some("smaller cohorts could identify customers; use 50 or more".into()),
            );
            None
        }
        // In COHORT_MIN_SIZE_FLOOR..=u32::MAX, checked above.
        Some(size) => u32::try_from(*size.get_ref()).ok(),
        None => Some(COHORT_MIN_SIZE_FLOOR),
    };
    let epsilon = match &raw.epsilon {
        Some(e) if !(e.get_ref().is_finite() && *e.get_ref() > 0.0 && *e.get_ref() <= EPSILON_MAX) => {
            c.error(
                e.span(),
                "telemetry.epsilon",
                format!("{} is not in (0, {EPSILON_MAX}]", e.get_ref()),
                Some("smaller is more private; 1.0 is a common choice".into()),
            );
            None
        }
        Some(e) => Some(*e.get_ref()),
        None => {
            c.error(
                span,
                "telemetry.epsilon",
                "missing `epsilon`",
                Some("add epsilon = 1.0 (the privacy budget per window)".into()),
            );
            None
        }
    };
    Some(Telemetry {
        metrics,
        window_secs: window_secs?,
        cohort_min_size: cohort_min_size?,
        epsilon: epsilon?,
    })
}

/// `"<n>h"` or `"<n>d"`, at least one hour.
pub(super) fn parse_window(value: &S<String>, c: &mut Collector<'_>) -> Option<u64> {
    let text = value.get_ref();
    let parsed =
        text.strip_suffix('h').and_then(|n| n.parse::<u64>().ok()).map(|h| h.saturating_mul(3600)).or_else(
            || text.strip_suffix('d').and_then(|n| n.parse::<u64>().ok()).map(|d| d.saturating_mul(86_400)),
        );
    match parsed {
        Some(secs) if (3600..=366 * 86_400).contains(&secs) => Some(secs),
        _ => {
            c.error(
                value.span(),
                "telemetry.window",
                format!("{text:?} is not a window of at least one hour"),
                Some("write whole hours or days, e.g. \"1h\", \"24h\", \"7d\" (at most 366d)".into()),
            );
            None
        }
    }
}
