//! Keeps spec/settlement.md in step with the code's error codes.

#[test]
fn every_error_code_is_in_the_spec() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/settlement.md")).unwrap();
    let mut codes = Vec::new();
    for source in [include_str!("../src/waterfall.rs"), include_str!("../src/lib.rs")] {
        // The string literals of `fn code`'s body.
        let body = source.split("pub fn code(&self)").nth(1).unwrap().split("\n    }\n").next().unwrap();
        codes.extend(body.split('"').skip(1).step_by(2));
    }
    assert!(codes.len() >= 12);
    for code in codes {
        assert!(text.contains(&format!("`{code}`")), "{code} is not in spec/settlement.md");
    }
}
