//! Keeps spec/settlement.md in step with the code's error codes.

#[test]
fn every_error_code_is_in_the_spec() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/settlement.md")).unwrap();
    let mut codes = Vec::new();
    for source in [
        include_str!("../src/waterfall.rs"),
        include_str!("../src/lib.rs"),
        include_str!("../src/statement/mod.rs"),
    ] {
        // The string literals of `fn code`'s body.
        let body = source
            .split("fn code(&self) -> &'static str {")
            .nth(1)
            .unwrap()
            .split("\n    }\n")
            .next()
            .unwrap();
        codes.extend(body.split('"').skip(1).step_by(2));
    }
    assert!(codes.len() >= 12);
    for code in codes {
        assert!(text.contains(&format!("`{code}`")), "{code} is not in spec/settlement.md");
    }
}

#[test]
fn every_context_string_is_in_the_spec() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/settlement.md")).unwrap();
    use escx_settlement::{ledger, statement};
    for context in [
        ledger::CONTEXT_SETTLEMENT_ID,
        ledger::CONTEXT_SETTLEMENT_CONTENT,
        statement::CONTEXT_LEAF,
        statement::CONTEXT_NODE,
        statement::CONTEXT_STATEMENT_HASH,
        statement::CONTEXT_STATEMENT.as_str(),
    ] {
        assert!(text.contains(context), "{context} is not in spec/settlement.md");
    }
}

#[test]
fn every_proof_context_label_and_code_is_in_spec_proofs() {
    use escx_settlement::proofs;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/proofs.md")).unwrap();
    for context in proofs::ALL_CONTEXTS {
        assert!(text.contains(&format!("\"{context}\"")), "{context} missing from spec/proofs.md");
    }
    for label in proofs::ALL_TRANSCRIPTS {
        let label = std::str::from_utf8(label).unwrap();
        assert!(text.contains(&format!("\"{label}\"")), "transcript label {label} missing");
    }
    let source = include_str!("../src/proofs.rs");
    let body =
        source.split("fn code(&self) -> &'static str {").nth(1).unwrap().split("\n    }\n").next().unwrap();
    let codes: Vec<&str> = body.split('"').skip(1).step_by(2).collect();
    assert_eq!(codes.len(), 5);
    for code in codes {
        assert!(text.contains(&format!("| `{code}` |")), "{code} missing from spec/proofs.md §7");
    }
}
