//! Where a store's database is, said the same way for the ledger, the issuer and the
//! operator: a PostgreSQL URL (`postgres://…`, `postgresql://…`) or the path of a SQLite
//! file. A directory that keeps keys beside its store (the issuer's, the operator's) holds
//! its SQLite file, or a file `database.url` naming the database instead.
//!
//! A URL may hold a password; every text this module prints replaces it with `***`.

use std::path::{Path, PathBuf};

use crate::Error;

/// In a directory that keeps a store, the file naming the database that holds it instead
/// of the directory's SQLite file. It may hold a password, so it is written 0600.
pub const DATABASE_URL_FILE: &str = "database.url";

/// A PostgreSQL URL. Its `Display` and `Debug` never show a password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(String);

impl PgUrl {
    /// The URL as given, password included: for connecting, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgUrl({})", redact(&self.0))
    }
}

/// Where a database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PgUrl),
}

impl Location {
    /// `postgres://…` or `postgresql://…` is a PostgreSQL database; any other text the
    /// path of a SQLite file.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Self::Postgres(PgUrl(text.to_owned()))
        } else {
            Self::Sqlite(PathBuf::from(text))
        }
    }

    /// [`Location::parse`] of a path given on a command line (a path that is not UTF-8
    /// is a SQLite file).
    pub fn from_path(path: &Path) -> Self {
        match path.to_str() {
            Some(text) => Self::parse(text),
            None => Self::Sqlite(path.to_path_buf()),
        }
    }

    /// The store of directory `dir`: the database `dir/database.url` names, else the SQLite
    /// file `dir/file`.
    pub fn of_dir(dir: &Path, file: &str) -> Result<Self, Error> {
        let path = dir.join(DATABASE_URL_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let location = Self::parse(&text);
                // A relative SQLite path in the file is relative to the directory.
                Ok(match location {
                    Self::Sqlite(relative) if relative.is_relative() => Self::Sqlite(dir.join(relative)),
                    other => other,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::Sqlite(dir.join(file))),
            Err(e) => Err(Error::failed(path.display().to_string(), e.to_string())),
        }
    }

    /// Whether it is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => write!(f, "{url}"),
        }
    }
}

/// Checks that `dir` is missing or empty and creates it 0700: where a directory whose store
/// is named by `database.url` is made.
pub fn create_empty_dir(dir: &Path) -> Result<(), Error> {
    if std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_some()) {
        return Err(Error::failed(dir.display().to_string(), "is not empty"));
    }
    escx::fsutil::create_private_dir(dir).map_err(|e| Error::failed(dir.display().to_string(), e.to_string()))
}

/// Writes `dir/database.url` naming `location` (0600), never over an existing one.
pub fn write_database_url(dir: &Path, location: &Location) -> Result<(), Error> {
    let text = match location {
        Location::Sqlite(path) => path.display().to_string(),
        Location::Postgres(url) => url.expose().to_owned(),
    };
    let path = dir.join(DATABASE_URL_FILE);
    escx::fsutil::write_atomic(&path, format!("{text}\n").as_bytes(), escx::fsutil::MODE_SECRET, false)
        .map_err(|e| Error::failed(path.display().to_string(), e.to_string()))
}

/// `url` with any password (in the user part or a `password=` parameter) replaced by
/// `***`.
pub fn redact(url: &str) -> String {
    let mut text = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    };
    let mut from = 0;
    while let Some(found) = text[from..].find("password=") {
        let start = from + found + "password=".len();
        let end = text[start..].find(['&', ' ']).map_or(text.len(), |n| start + n);
        text.replace_range(start..end, "***");
        from = start + 3;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(redact("postgres://escx:s3cret@db:5432/ledger"), "postgres://escx:***@db:5432/ledger");
        assert_eq!(redact("postgres://escx@db/ledger"), "postgres://escx@db/ledger");
        assert_eq!(redact("postgresql:///ledger?host=/tmp"), "postgresql:///ledger?host=/tmp");
        assert_eq!(
            redact("postgresql:///ledger?password=x&host=/tmp&password=yy"),
            "postgresql:///ledger?password=***&host=/tmp&password=***"
        );
        assert_eq!(redact("host=/tmp password=s3cret dbname=l"), "host=/tmp password=*** dbname=l");
        let location = Location::parse("postgres://escx:s3cret@db/ledger");
        assert_eq!(location.to_string(), "postgres://escx:***@db/ledger");
        assert!(!format!("{location:?}").contains("s3cret"));
    }

    #[test]
    fn urls_are_postgres_and_anything_else_a_file() {
        assert!(Location::parse("postgresql:///l?host=/run").is_postgres());
        assert!(Location::parse(" postgres://h/l\n").is_postgres());
        assert_eq!(Location::parse("ledger.db"), Location::Sqlite("ledger.db".into()));
    }

    #[test]
    fn a_directory_names_its_database_or_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Location::of_dir(dir.path(), "x.sqlite").unwrap(),
            Location::Sqlite(dir.path().join("x.sqlite"))
        );
        write_database_url(dir.path(), &Location::parse("postgres://u:p@h/d")).unwrap();
        assert_eq!(Location::of_dir(dir.path(), "x.sqlite").unwrap(), Location::parse("postgres://u:p@h/d"));
        assert!(write_database_url(dir.path(), &Location::parse("other.sqlite")).is_err(), "never replaced");
    }
}
