//! The one error of the storage layer: what kind of failure, where (a file, or a URL
//! without its password), and what the database said. Every store of every crate reports
//! its database's failures as this type, with the same codes.

/// What kind of failure a store met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A write transaction met a concurrent one (PostgreSQL's serialization failure,
    /// deadlock, or a key another transaction inserted first; SQLite's lock held past the
    /// busy timeout). It was rolled back: nothing of it was written, and running it again
    /// is safe. The stores run such transactions again themselves (`crate::retry`) and
    /// report this only when every attempt met one.
    Busy,
    /// The database could not be reached, refused a statement, or the store is not where
    /// it was said to be (or is where none should be).
    Failed,
    /// The database holds something it cannot have written: a damaged file, a value of the
    /// wrong type or out of range. Restore it from a backup.
    Corrupt,
    /// The database is not a store of this kind, or one of a newer schema than this build
    /// reads.
    Schema,
}

/// A store's failure.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    /// The file, or the URL with its password replaced.
    location: String,
    reason: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.location.is_empty() {
            write!(f, "{}: ", self.location)?;
        }
        f.write_str(&self.reason)?;
        if self.kind == Kind::Busy {
            f.write_str("; nothing was written, run it again")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl Error {
    /// A failure of `kind` at `location` (already redacted).
    pub fn new(kind: Kind, location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { kind, location: location.into(), reason: reason.into() }
    }

    /// [`Kind::Failed`].
    pub fn failed(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(Kind::Failed, location, reason)
    }

    /// [`Kind::Corrupt`].
    pub fn corrupt(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(Kind::Corrupt, location, reason)
    }

    /// What kind of failure.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether running the transaction again may succeed ([`Kind::Busy`]).
    pub fn is_busy(&self) -> bool {
        self.kind == Kind::Busy
    }

    /// Where: the file, or the URL without its password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// What the database said.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl escx::Fault for Error {
    fn code(&self) -> &'static str {
        match self.kind {
            Kind::Busy => "store-busy",
            Kind::Failed => "store-failed",
            Kind::Corrupt => "store-corrupt",
            Kind::Schema => "store-schema",
        }
    }

    fn class(&self) -> escx::ErrorClass {
        escx::ErrorClass::Environment
    }

    fn help(&self) -> Option<&'static str> {
        Some(match self.kind {
            Kind::Busy => "another writer held the database on every attempt; run it again",
            Kind::Failed => {
                "check that the database exists and can be reached (the file's directory, or the URL, \
                 its credentials and TLS settings)"
            }
            Kind::Corrupt => "the database is damaged; restore it from a backup",
            Kind::Schema => "point at a store of this kind, or upgrade escx to read a newer one",
        })
    }
}
