//! Keeps spec/metering.md in step with the code: contexts and codes.

use escx_metering as metering;

#[test]
fn metering_contexts_and_codes_are_in_the_spec() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/metering.md")).unwrap();
    for context in metering::ALL_CONTEXTS {
        assert!(text.contains(&format!("`{}`", context.as_str())), "{} missing", context.as_str());
    }
    for context in metering::ALL_HASH_CONTEXTS {
        assert!(text.contains(&format!("\"{context}\"")), "derive_key context {context:?} missing");
    }
    let source = include_str!("../src/lib.rs");
    let codes: Vec<&str> = source
        .lines()
        .filter(|line| line.trim_start().starts_with("Self::") && line.contains("=> \""))
        .filter_map(|line| line.split("=> \"").nth(1)?.split('"').next())
        .collect();
    assert!(codes.len() >= 18, "{codes:?}");
    for code in codes {
        assert!(text.contains(&format!("| `{code}` |")), "{code} missing from spec/metering.md §8");
    }
    assert!(text.contains(&format!("{} days", metering::REPORT_LATE_SECS / 86_400)));
}
