//! Keeps spec/settlement.md in step with the code's error codes.

#[test]
fn every_error_code_is_in_the_spec() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/settlement.md")).unwrap();
    let source = include_str!("../src/waterfall.rs");
    // The string literals of `fn code`'s body.
    let body = source.split("pub fn code(&self)").nth(1).unwrap().split("\n    }\n").next().unwrap();
    let codes: Vec<&str> = body.split('"').skip(1).step_by(2).collect();
    assert!(codes.len() >= 2);
    for code in codes {
        assert!(text.contains(&format!("`{code}`")), "{code} is not in spec/settlement.md");
    }
}
