//! The handlers, one file per part a service may serve (service.md §2).

pub(crate) mod issuer;
pub(crate) mod ledger;
pub(crate) mod metering;
pub(crate) mod registry;
