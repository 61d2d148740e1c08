//! The embedding examples in `examples/` build and run (each asserts what it shows).

#[path = "../examples/settle_and_verify.rs"]
mod settle_and_verify;

#[test]
fn settle_and_verify_runs() {
    settle_and_verify::main().unwrap();
}
