//! Keeps spec/ and the code in step: every context string, error code and limit the
//! code uses must appear in the normative text.

use escx::sig::SigningContext;

fn spec(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_context_string_is_in_the_format_spec() {
    let text = spec("escx-format.md");
    for context in escx::hash::ALL_CONTEXTS {
        assert!(
            text.contains(&format!("`{context}`")),
            "derive_key context {context:?} missing from the spec"
        );
    }
    for context in SigningContext::ALL {
        assert!(
            text.contains(&format!("`{}`", context.as_str())),
            "signing context {:?} missing",
            context.as_str()
        );
    }
    assert!(spec("keys.md").contains("escx v1 secret key file seal"));
}

#[test]
fn every_error_code_is_in_the_format_spec() {
    let source = include_str!("../src/error.rs");
    let text = spec("escx-format.md");
    let codes: Vec<&str> = source
        .lines()
        .filter_map(|line| line.split("=> \"").nth(1))
        .filter_map(|rest| rest.strip_suffix("\","))
        .filter(|code| code.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect();
    assert!(codes.len() > 30, "found only {} codes; did the code() match change shape?", codes.len());
    for code in codes {
        assert!(text.contains(&format!("| `{code}` |")), "error code {code:?} is not in escx-format.md §12");
    }
}

#[test]
fn limits_in_the_spec_match_the_constants() {
    let text = spec("escx-format.md");
    assert_eq!(escx::container::SECTIONS_MAX, 16);
    assert!(text.contains("`1..=16`"));
    assert_eq!(escx::container::SIGNATURES_MAX, 16);
    assert!(text.contains(&format!("16 · {}", escx::container::SIGNATURE_BLOCK_BYTES)));
    assert_eq!(escx::container::ZSTD_WINDOW_LOG_MAX, 25);
    assert_eq!(escx::archive::ENTRIES_MAX, 1_000_000);
    assert_eq!(escx::archive::PATH_BYTES_MAX, 4096);
    assert_eq!(escx::container::ZSTD_LEVEL, 3);
    assert!(text.contains("level 3"));
}
