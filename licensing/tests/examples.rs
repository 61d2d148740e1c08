//! The embedding examples in `examples/` build and run (each asserts what it shows).

#[path = "../examples/license_in_process.rs"]
mod license_in_process;

#[test]
fn license_in_process_runs() {
    license_in_process::main().unwrap();
}
