//! `[package]` and `[publisher]` (manifest.md §2).

use super::raw::*;
use super::*;

pub(super) fn validate_package(raw: S<RawPackage>, c: &mut Collector<'_>) -> Option<Package> {
    let span = raw.span();
    let raw = raw.into_inner();
    let name = match raw.name {
        Some(name) => {
            let span = name.span();
            match PackageName::parse(name.into_inner()) {
                Ok(name) => Some(name),
                Err(e) => {
                    c.error(
                        span,
                        "package.name",
                        e.to_string(),
                        Some("use lowercase letters, digits, '-', '_', '.', optionally with one scope: \"acme/thermal\"".into()),
                    );
                    None
                }
            }
        }
        None => {
            c.error(span.clone(), "package.name", "missing `name`", Some("add name = \"scope/name\"".into()));
            None
        }
    };
    let version = match raw.version {
        Some(version) => match escx::header::parse_version(version.get_ref()) {
            Ok(v) => Some(v),
            Err(e) => {
                c.error(
                    version.span(),
                    "package.version",
                    format!("{:?} is not a semantic version: {e}", version.get_ref()),
                    Some("write MAJOR.MINOR.PATCH, e.g. \"1.2.0\"".into()),
                );
                None
            }
        },
        None => {
            c.error(span, "package.version", "missing `version`", Some("add version = \"0.1.0\"".into()));
            None
        }
    };
    if let Some(description) = &raw.description
        && description.get_ref().chars().count() > DESCRIPTION_CHARS_MAX
    {
        c.error(
            description.span(),
            "package.description",
            format!(
                "{} characters; the limit is {DESCRIPTION_CHARS_MAX}",
                description.get_ref().chars().count()
            ),
            Some("keep the description to one paragraph; put the rest in docs/".into()),
        );
    }
    if let Some(license) = &raw.license
        && let Err(e) = spdx::Expression::parse(license.get_ref())
    {
        c.error(
            license.span(),
            "package.license",
            format!("{:?} is not an SPDX license expression: {}", license.get_ref(), e.reason),
            Some("use SPDX identifiers such as \"MIT\", \"Apache-2.0\" or \"MIT OR Apache-2.0\"".into()),
        );
    }
    check_slug_list(&raw.keywords, "package.keywords", 24, false, c);
    check_slug_list(&raw.categories, "package.categories", 64, true, c);
    for (key, url) in [("package.homepage", &raw.homepage), ("package.repository", &raw.repository)] {
        if let Some(url) = url {
            check_url(url, key, c);
        }
    }
    Some(Package {
        name: name?,
        version: version?,
        description: raw.description.map(Spanned::into_inner),
        license: raw.license.map(Spanned::into_inner),
        keywords: raw.keywords.into_iter().map(Spanned::into_inner).collect(),
        categories: raw.categories.into_iter().map(Spanned::into_inner).collect(),
        homepage: raw.homepage.map(Spanned::into_inner),
        repository: raw.repository.map(Spanned::into_inner),
        metadata: raw.metadata,
    })
}

/// Keywords: `[a-z0-9-]`, 1..=max characters; categories may have `/`-separated parts.
pub(super) fn check_slug_list(
    items: &[S<String>],
    key: &str,
    max_chars: usize,
    allow_slash: bool,
    c: &mut Collector<'_>,
) {
    if items.len() > KEYWORDS_MAX {
        c.error(
            items[KEYWORDS_MAX].span(),
            key,
            format!("more than {KEYWORDS_MAX} entries"),
            Some("keep the most relevant five".into()),
        );
    }
    for item in items {
        let text = item.get_ref();
        let ok_char = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-';
        let valid = !text.is_empty()
            && text.len() <= max_chars
            && text.split('/').all(|part| !part.is_empty() && part.chars().all(ok_char))
            && (allow_slash || !text.contains('/'));
        if !valid {
            let shape = if allow_slash { "lowercase slugs separated by '/'" } else { "a lowercase slug" };
            c.error(
                item.span(),
                key,
                format!("{text:?} is not {shape} of at most {max_chars} characters (a-z, 0-9, '-')"),
                None,
            );
        }
    }
}

pub(super) fn check_url(url: &S<String>, key: &str, c: &mut Collector<'_>) {
    let text = url.get_ref();
    let host = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
    if host.is_none_or(|h| h.is_empty() || h.starts_with('/') || h.contains(char::is_whitespace)) {
        c.error(
            url.span(),
            key,
            format!("{text:?} is not an http(s) URL"),
            Some("write the full URL, e.g. \"https://example.com/acme\"".into()),
        );
    }
}

pub(super) fn validate_publisher(raw: S<RawPublisher>, c: &mut Collector<'_>) -> Option<Publisher> {
    let span = raw.span();
    let raw = raw.into_inner();
    let Some(name) = raw.name.filter(|n| !n.get_ref().trim().is_empty()) else {
        c.error(span, "publisher.name", "missing `name`", Some("add name = \"Acme Corp\"".into()));
        return None;
    };
    if let Some(email) = &raw.email {
        let text = email.get_ref();
        let valid =
            text.split_once('@').is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'));
        if !valid {
            c.error(email.span(), "publisher.email", format!("{text:?} is not an email address"), None);
        }
    }
    if let Some(url) = &raw.url {
        check_url(url, "publisher.url", c);
    }
    let key_id = raw.key_id.and_then(|k| match k.get_ref().parse::<escx::sig::KeyId>() {
        Ok(id) => Some(id),
        Err(e) => {
            c.error(
                k.span(),
                "publisher.key_id",
                e.to_string(),
                Some("the key id is the 32 hex digits shown for the publisher's public key file".into()),
            );
            None
        }
    });
    Some(Publisher {
        name: name.into_inner(),
        email: raw.email.map(Spanned::into_inner),
        url: raw.url.map(Spanned::into_inner),
        key_id,
    })
}
