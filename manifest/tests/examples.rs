//! The embedding examples in `examples/` build and run (each asserts what it shows).

#[path = "../examples/install_from_registry.rs"]
mod install_from_registry;

#[test]
fn install_from_registry_runs() {
    install_from_registry::main().unwrap();
}
