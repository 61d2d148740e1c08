//! One module per noun.

pub mod key;
pub mod package;
