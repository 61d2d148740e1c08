//! Keeps spec/registry.md §7 in step with the crate's error codes.

#[test]
fn every_error_code_is_in_the_spec() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/registry.md")).unwrap();
    let source = include_str!("../src/lib.rs");
    // The string literals of `fn code`'s body.
    let body =
        source.split("fn code(&self) -> &'static str {").nth(1).unwrap().split("\n    }\n").next().unwrap();
    let codes: Vec<&str> = body.split('"').skip(1).step_by(2).collect();
    assert!(codes.len() >= 20, "{codes:?}");
    for code in codes {
        assert!(text.contains(&format!("| `{code}` |")), "{code} is not in spec/registry.md §7");
    }
}
