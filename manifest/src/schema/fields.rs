//! Field checks several tables share: money, currencies, parties, dates.

use super::raw::*;
use super::*;

pub(super) fn missing_at(c: &mut Collector<'_>, span: std::ops::Range<usize>, key: &str, help: &str) {
    let field = key.rsplit('.').next().unwrap_or(key);
    c.error(span, key, format!("missing `{field}`"), Some(help.to_owned()));
}

pub(super) fn money(value: &S<String>, key: &str, c: &mut Collector<'_>) -> Option<Micros> {
    match Micros::parse(value.get_ref()) {
        Ok(amount) => Some(amount),
        Err(e) => {
            c.error(
                value.span(),
                key,
                format!("{:?}: {e}", value.get_ref()),
                Some("write amounts as decimal strings, e.g. \"49.99\"".into()),
            );
            None
        }
    }
}

pub(super) fn check_currency(value: &S<String>, key: &str, c: &mut Collector<'_>) -> Option<String> {
    let text = value.get_ref();
    if text.len() == 3 && text.chars().all(|ch| ch.is_ascii_uppercase()) {
        Some(text.clone())
    } else {
        c.error(
            value.span(),
            key,
            format!("{text:?} is not an ISO 4217 currency code"),
            Some("use three capital letters, e.g. \"USD\" or \"EUR\"".into()),
        );
        None
    }
}

pub(super) fn check_party(value: &S<String>, key: &str, c: &mut Collector<'_>) -> bool {
    let text = value.get_ref();
    let valid = !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "-_./".contains(ch));
    if !valid {
        c.error(
            value.span(),
            key,
            format!("party {text:?} must be 1-64 characters of a-z, 0-9, '-', '_', '.', '/'"),
            None,
        );
    }
    valid
}

pub(super) fn parse_date(value: &S<String>, key: &str, c: &mut Collector<'_>) -> Option<UnixSeconds> {
    let text = value.get_ref();
    if text.len() != 10 {
        c.error(
            value.span(),
            key,
            format!("{text:?} is not a date"),
            Some("write YYYY-MM-DD, e.g. \"2026-01-01\"".into()),
        );
        return None;
    }
    match escx::timestamp::parse(text) {
        Ok(at) => Some(at),
        Err(_) => {
            c.error(
                value.span(),
                key,
                format!("{text:?} is not a date"),
                Some("write YYYY-MM-DD, e.g. \"2026-01-01\"".into()),
            );
            None
        }
    }
}
