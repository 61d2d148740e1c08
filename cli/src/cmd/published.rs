//! What `escx proof` and `escx audit` read of what an operator publishes: statements and
//! rotations from a directory or a service, verified under the line of operator keys an
//! auditor holds, and statement proofs files.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use escx::rotation::RotationStatement;
use escx_manifest::Micros;
use escx_settlement::payout::Period;
use escx_settlement::proofs::{Claim, Proven};
use escx_settlement::statement::{self, OperatorKeys, Verified};
use rayon::prelude::*;

use crate::failure::{self, UsageError};

pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    super::common::read(path)
}

pub(crate) fn files(dir: &Path, extension: &str) -> anyhow::Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| escx::Error::io(dir, e))
        .map_err(failure::at(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    found.sort();
    Ok(found)
}

/// The operator's line of keys: the public key given, then each successor the rotation
/// statements beside the statements endorse (settlement.md §4.5) — every `*.rot` file of a
/// statements directory, or `GET /v1/rotations` of a service.
pub(crate) fn operator_keys(path: &Path, statements: &Path) -> anyhow::Result<OperatorKeys> {
    let root = escx::keyfile::read_public_key(path).map_err(failure::at(path))?;
    let rotations = match as_url(statements) {
        Some(url) => served_rotations(url)?,
        None if statements.is_dir() => files(statements, "rot")?
            .iter()
            .map(|p| RotationStatement::read(p).map_err(failure::at(p)))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    Ok(OperatorKeys::follow(root, &rotations).map_err(escx_settlement::Error::from)?)
}

/// The rotations a service publishes; none from a service that predates them (404).
pub(crate) fn served_rotations(url: &str) -> anyhow::Result<Vec<RotationStatement>> {
    let base = service_base(url);
    let client = crate::http::Client::new(base)?;
    let Some(body) = client.get_optional("/v1/rotations")? else { return Ok(Vec::new()) };
    let list: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("{base}/v1/rotations: the answer is not JSON"))?;
    list["rotations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| {
            let line = line.as_str().unwrap_or_default();
            RotationStatement::parse(line)
                .map_err(|reason| anyhow::Error::from(escx::Error::Envelope { reason }))
                .with_context(|| format!("{base}/v1/rotations"))
        })
        .collect()
}

/// Where statements come from: the files of a directory or the statements of a service,
/// in the order of their numbers, each read only when it is verified.
pub(crate) enum Source {
    Files(Vec<(u64, PathBuf)>),
    Service { base: String, client: crate::http::Client, seqs: Vec<u64> },
}

impl Source {
    /// Lists the statements of `dir` (a directory, one file, or a service's URL) by number.
    /// A directory's files are read once for the number each claims (one at a time, so
    /// memory stays flat); one whose number cannot be read goes first, and fails its check.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Self> {
        if let Some(url) = as_url(dir) {
            let base = service_base(url).to_owned();
            let client = crate::http::Client::new(&base)?;
            let list: serde_json::Value = serde_json::from_slice(&client.get("/v1/statements")?)
                .with_context(|| format!("{base}/v1/statements: the answer is not JSON"))?;
            let mut seqs: Vec<u64> = list["statements"]
                .as_array()
                .map(|items| items.iter().filter_map(|s| s["seq"].as_u64()).collect())
                .unwrap_or_default();
            if seqs.is_empty() {
                return Err(
                    UsageError(format!("{base}/v1/statements: the service publishes no statement")).into()
                );
            }
            seqs.sort_unstable();
            return Ok(Self::Service { base, client, seqs });
        }
        let paths = files(dir, "cbor")?;
        if paths.is_empty() {
            return Err(UsageError(format!("{}: no statement files (*.cbor)", dir.display())).into());
        }
        // `statement-<n>.cbor` (what `escx statement export --dir` writes) is taken at its
        // name, which the statement must then bear out; any other file is read for the
        // number it claims.
        let mut numbered = paths
            .into_iter()
            .map(|path| match seq_from_name(&path) {
                Some(seq) => Ok((seq, path)),
                None => Ok((statement::claimed_seq(&read(&path)?).unwrap_or(0), path)),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        numbered.sort();
        Ok(Self::Files(numbered))
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Files(files) => files.len(),
            Self::Service { seqs, .. } => seqs.len(),
        }
    }

    /// The `index`th statement by number: (its claimed number, its name, its bytes).
    pub(crate) fn fetch(&self, index: usize) -> anyhow::Result<(u64, String, Vec<u8>)> {
        match self {
            Self::Files(files) => {
                let (seq, path) = &files[index];
                Ok((*seq, path.display().to_string(), read(path)?))
            }
            Self::Service { base, client, seqs } => {
                let path = format!("/v1/statements/{}", seqs[index]);
                Ok((seqs[index], format!("{base}{path}"), client.get(&path)?))
            }
        }
    }
}

/// The number in a file name `statement-<n>.cbor`, when it is one (`n` without leading zeros).
pub(crate) fn seq_from_name(path: &Path) -> Option<u64> {
    let digits = path.file_name()?.to_str()?.strip_prefix("statement-")?.strip_suffix(".cbor")?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A statement verified from a source must be the one its place there claims: the number
/// in its file name, or the one the service listed it under (`statement-chain`).
pub(crate) fn check_place(name: &str, claimed: u64, verified: &Verified) -> anyhow::Result<()> {
    if verified.payload.seq != claimed {
        return Err(escx_settlement::Error::from(statement::StatementError::Chain {
            reason: format!(
                "{name} holds statement {}, not statement {claimed}: a file is named by its statement's number",
                verified.payload.seq
            ),
        })
        .into());
    }
    Ok(())
}

/// Every statement in `dir`, verified under the operator's keys (in parallel) and chained.
pub(crate) fn load_statements(dir: &Path, operator: &OperatorKeys) -> anyhow::Result<Vec<Verified>> {
    let source = Source::open(dir)?;
    // A file that cannot be read fails in its place, as `audit_statements` does.
    let loaded: Vec<anyhow::Result<_>> = (0..source.len()).map(|i| source.fetch(i)).collect();
    let mut verified = loaded
        .into_par_iter()
        .map(|item| {
            let (claimed, name, bytes) = item?;
            let verified = operator
                .verify(&bytes)
                .map_err(escx_settlement::Error::from)
                .with_context(|| name.clone())?;
            check_place(&name, claimed, &verified)?;
            Ok(verified)
        })
        // The first failure by position, not whichever thread failed first.
        .collect::<Vec<anyhow::Result<_>>>()
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    operator.verify_chain(&mut verified).map_err(escx_settlement::Error::from)?;
    Ok(verified)
}

/// Where each statement's proofs file comes from: `statement-<seq>.proofs` in a directory,
/// or `GET /v1/statements/<seq>/proofs` of a service (service.md §2), whose answer is
/// checked exactly as the file. One client serves every statement.
pub(crate) enum ProofSource<'a> {
    Dir(&'a Path),
    Service { base: &'a str, client: crate::http::Client },
}

impl<'a> ProofSource<'a> {
    pub(crate) fn open(source: &'a Path) -> anyhow::Result<Self> {
        Ok(match as_url(source) {
            Some(url) => {
                let base = service_base(url);
                Self::Service { base, client: crate::http::Client::new(base)? }
            }
            None => Self::Dir(source),
        })
    }

    /// Statement `seq`'s proofs file, named for errors.
    pub(crate) fn fetch(&self, seq: u64) -> anyhow::Result<(String, Vec<u8>)> {
        match self {
            Self::Service { base, client } => {
                let path = format!("/v1/statements/{seq}/proofs");
                Ok((format!("{base}{path}"), client.get(&path)?))
            }
            Self::Dir(dir) => {
                let path = dir.join(format!("statement-{seq}.proofs"));
                Ok((path.display().to_string(), read(&path)?))
            }
        }
    }
}

/// `path` as the URL of an `escx serve`, when it is one.
pub(crate) fn as_url(path: &Path) -> Option<&str> {
    path.to_str().filter(|s| s.starts_with("http://") || s.starts_with("https://"))
}

/// The service's base URL from its URL or its `/v1/statements`.
pub(crate) fn service_base(url: &str) -> &str {
    url.trim_end_matches('/').trim_end_matches("/v1/statements")
}

pub(crate) fn period(text: &str) -> anyhow::Result<Period> {
    Ok(Period::parse(text).ok_or_else(|| UsageError(format!("--period: {text:?} is not YYYY-MM")))?)
}

/// The sentence a verified proof stands for, and nothing more.
pub(crate) fn proven_text(proven: &Proven) -> String {
    let over = format!(
        "{}'s payouts in {} over statements {}..{} ({}, {})",
        proven.party,
        proven.period,
        proven.statements.0,
        proven.statements.1,
        crate::output::count(proven.entries, "entry"),
        proven.currency
    );
    match proven.claim {
        Claim::Total(total) => {
            format!("{over} total {} {}", escx_settlement::payout::Signed(total), proven.currency)
        }
        Claim::AtLeast(x) => format!("{over} are at least {} {}", Micros(x), proven.currency),
    }
}
