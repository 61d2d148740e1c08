//! One module per noun.

pub mod key;
pub mod manifest;
pub mod package;
