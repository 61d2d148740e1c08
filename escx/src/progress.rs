//! Progress reporting for long operations (packing, hashing large sections).
//!
//! The library only counts bytes; the CLI decides whether to draw a bar.

/// Receives byte counts from long-running operations. Implementations must be cheap:
/// `advance` is called once per hashed chunk.
pub trait Progress: Sync {
    /// A new phase starts, expected to process `total_bytes`.
    fn start(&self, _label: &str, _total_bytes: u64) {}
    /// `bytes` more have been processed.
    fn advance(&self, _bytes: u64) {}
    /// The current phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
