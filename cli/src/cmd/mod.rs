//! One module per noun.

pub mod client;
pub mod deps;
pub mod dispute;
pub mod hold;
pub mod key;
pub mod ledger;
pub mod license;
pub mod manifest;
pub mod package;
pub mod payout;
pub mod registry;
pub mod settle;
pub mod statement;
