//! Keeps spec/licensing.md in step with the code: contexts, purposes, codes.

use escx_licensing::messages;

fn spec() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/licensing.md")).unwrap()
}

#[test]
fn every_context_and_purpose_is_in_the_spec() {
    let text = spec();
    for context in messages::ALL_CONTEXTS {
        assert!(text.contains(&format!("`{}`", context.as_str())), "{} missing", context.as_str());
    }
    for purpose in [
        messages::PURPOSE_REDEEM,
        messages::PURPOSE_LICENSE,
        messages::PURPOSE_TRANSFER,
        escx_licensing::issuer::PURPOSE_CONTENT_KEY,
        escx_licensing::issuer::PURPOSE_WRAPPED_KEY,
    ] {
        assert!(text.contains(purpose), "{purpose} missing");
    }
    for context in messages::ALL_HASH_CONTEXTS.iter().chain(&[
        escx_licensing::issuer::CONTEXT_SPENT_TOKEN,
        escx_licensing::issuer::CONTEXT_REQUEST_ID,
        escx_licensing::issuer::CONTEXT_REDEMPTION_ID,
        escx_licensing::verify::CONTEXT_CHALLENGE,
    ]) {
        assert!(text.contains(&format!("\"{context}\"")), "derive_key context {context:?} missing");
    }
    assert!(text.contains(std::str::from_utf8(escx_licensing::poprf::INFO_LABEL).unwrap()));
}

#[test]
fn every_error_code_is_in_the_spec() {
    let source = include_str!("../src/lib.rs");
    let text = spec();
    let codes: Vec<&str> = source
        .lines()
        .filter_map(|line| line.split("=> \"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .filter(|code| code.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !code.is_empty())
        // LicenseCheck::name is a message word, not a code.
        .filter(|code| !escx_licensing::LicenseCheck::ALL.iter().any(|check| check.name() == *code))
        .collect();
    assert!(codes.len() >= 18, "{codes:?}");
    let checks = escx_licensing::LicenseCheck::ALL.map(|check| check.code());
    for code in codes.into_iter().chain(checks) {
        assert!(text.contains(&format!("| `{code}` |")), "{code} missing from spec/licensing.md §9");
    }
}
