//! Fixtures shared by the CLI tests and the service benchmark.

/// A paid package's manifest: `acme/thermal` 1.0.0, tier "standard" at 49.00 USD a month.
pub const PAID_MANIFEST: &str = "[package]\nname = \"acme/thermal\"\nversion = \"1.0.0\"\n[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n\
     [[pricing.tier]]\nname = \"standard\"\nprice = \"49.00\"\nunit = \"month\"\n";
