//! `escx key ...`

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use escx::keyfile::{self, Argon2Params, Protection};
use escx::rotation::RotationStatement;
use escx::sig::{ALG_ML_DSA_87_NAME, SecretKey};
use serde::Serialize;

use crate::failure;
use crate::output::Ui;
use crate::secrets;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Generate an ML-DSA-87 key pair: BASE.key (secret, mode 0600) and BASE.pub.
    #[command(after_help = "\
The secret key is sealed with a passphrase (argon2id + XChaCha20-Poly1305) unless
--unencrypted is given. The passphrase is read from ESCX_PASSPHRASE if set, otherwise
prompted for twice on the terminal.

Examples:
  escx key generate --out acme
  ESCX_PASSPHRASE=... escx key generate --out ci-signer
  escx key generate --out throwaway --unencrypted --json")]
    Generate(GenerateArgs),
    /// Show a key file's algorithm, key id and protection.
    #[command(after_help = "Examples:\n  escx key show acme.pub\n  escx key show acme.key --json")]
    Show(ShowArgs),
    /// Endorse a new key with an old one (a rotation statement for trust policies).
    #[command(after_help = "\
The statement lets trust policies that list the old key accept the new key in its place
(see spec/trust-policy.md). Paste its last line into a [[rotation]] table, or refer to
the file with statement_file.

Examples:
  escx key rotate --key acme-2026.key --new acme-2027.pub -o acme-2027.rotation")]
    Rotate(RotateArgs),
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Base path: writes BASE.key and BASE.pub.
    #[arg(long, value_name = "BASE")]
    out: PathBuf,
    /// Store the secret key without a passphrase (protected only by file mode 0600).
    #[arg(long)]
    unencrypted: bool,
    /// Replace existing key files.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    /// A .pub or .key file, or a rotation statement.
    file: PathBuf,
    /// For a rotation statement: the old key's public file, to check its signature.
    #[arg(long, value_name = "FILE")]
    pubkey: Option<PathBuf>,
}

#[derive(Args)]
pub struct RotateArgs {
    /// The old (currently trusted) secret key.
    #[arg(long, value_name = "OLD.key")]
    key: PathBuf,
    /// The new public key.
    #[arg(long, value_name = "NEW.pub")]
    new: PathBuf,
    /// Where to write the statement.
    #[arg(short, long, value_name = "FILE")]
    out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

pub fn run(command: KeyCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        KeyCommand::Generate(args) => generate(args, ui),
        KeyCommand::Show(args) => show(args, ui),
        KeyCommand::Rotate(args) => rotate(args, ui),
    }
}

fn with_extension(base: &std::path::Path, extension: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

fn generate(args: GenerateArgs, ui: &Ui) -> anyhow::Result<()> {
    let secret_path = with_extension(&args.out, "key");
    let public_path = with_extension(&args.out, "pub");
    for path in [&secret_path, &public_path] {
        if !args.force && path.exists() {
            return Err(failure::exists(path, "pass --force to replace it"));
        }
    }
    let protection = if args.unencrypted {
        Protection::Unencrypted
    } else {
        Protection::Passphrase(secrets::new_passphrase(&secret_path)?, Argon2Params::DEFAULT)
    };
    let key = SecretKey::generate();
    keyfile::write_secret_key(&secret_path, &key, &protection, args.force)
        .map_err(failure::at(&secret_path))?;
    keyfile::write_public_key(&public_path, key.public_key(), args.force)
        .map_err(failure::at(&public_path))?;
    let sealed = !args.unencrypted;
    ui.emit(
        &Generated {
            key_id: key.id().to_string(),
            algorithm: ALG_ML_DSA_87_NAME,
            secret_key_file: &secret_path,
            public_key_file: &public_path,
            passphrase_protected: sealed,
        },
        || {
            format!(
                "generated {ALG_ML_DSA_87_NAME} key {}\n  secret  {} ({}, mode 0600)\n  public  {}",
                key.id(),
                secret_path.display(),
                if sealed { "passphrase-protected" } else { "NOT passphrase-protected" },
                public_path.display()
            )
        },
    );
    Ok(())
}

fn show(args: ShowArgs, ui: &Ui) -> anyhow::Result<()> {
    let path = &args.file;
    let bytes = std::fs::read(path).map_err(|e| escx::Error::io(path, e)).map_err(failure::at(path))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| escx::Error::KeyFile {
            path: path.clone(),
            reason: "not a key file: it is not text (an escx key file is a few lines of UTF-8)".into(),
        })
        .map_err(failure::at(path))?;
    if text.lines().any(|line| line.trim_start().starts_with("escx-rot-v1:")) {
        return show_rotation(path, &text, args.pubkey.as_deref(), ui);
    }
    let (kind, key_id, sealed) = if text.lines().any(|line| line.trim_start().starts_with("escx-pk-v1:")) {
        // A public key file whose key is malformed says so, not "give the .key file".
        let public = keyfile::parse_public_key(&text)
            .map_err(|e| escx::Error::KeyFile { path: path.clone(), reason: e.0 })
            .map_err(failure::at(path))?;
        ("public", public.id(), None)
    } else {
        let sealed = keyfile::secret_key_is_sealed(path).map_err(failure::at(path))?;
        // The public half is stored in clear, so the id is shown without the passphrase.
        let public = keyfile::secret_key_public_half(path).map_err(failure::at(path))?;
        ("secret", public.id(), Some(sealed))
    };
    ui.emit(
        &Shown {
            file: path,
            kind,
            algorithm: ALG_ML_DSA_87_NAME,
            key_id: key_id.to_string(),
            passphrase_protected: sealed,
        },
        || {
            let protection = match sealed {
                Some(true) => ", passphrase-protected",
                Some(false) => ", NOT passphrase-protected",
                None => "",
            };
            format!("{}: {kind} {ALG_ML_DSA_87_NAME} key {key_id}{protection}", path.display())
        },
    );
    Ok(())
}

/// `escx key show ROTATION [--pubkey OLD.pub]`: who endorses whom and when; the signature
/// is checked only against a key given (a statement proves nothing on its own).
fn show_rotation(path: &Path, text: &str, pubkey: Option<&Path>, ui: &Ui) -> anyhow::Result<()> {
    let statement = RotationStatement::parse(text)
        .map_err(|reason| escx::Error::KeyFile { path: path.to_path_buf(), reason })
        .map_err(failure::at(path))?;
    let (rotation, verified) = match pubkey {
        Some(old) => {
            let old = keyfile::read_public_key(old).map_err(failure::at(old))?;
            (statement.verify(&old).map_err(failure::at(path))?, true)
        }
        None => (statement.claims().map_err(failure::at(path))?, false),
    };
    let report = RotationShown {
        file: path,
        kind: "rotation",
        old_key_id: rotation.old_key_id.to_string(),
        new_key_id: rotation.new_key.id().to_string(),
        created_at: rotation.created_at.rfc3339(),
        signature_checked: verified,
    };
    ui.emit(&report, || {
        let check = if verified {
            "signature valid"
        } else {
            "signature not checked; pass --pubkey with the old key's public file"
        };
        format!(
            "{}: rotation statement: {} endorses {} (signed {}; {check})",
            path.display(),
            report.old_key_id,
            report.new_key_id,
            report.created_at
        )
    });
    Ok(())
}

fn rotate(args: RotateArgs, ui: &Ui) -> anyhow::Result<()> {
    let old = secrets::load_secret_key(&args.key)?;
    let new = keyfile::read_public_key(&args.new).map_err(failure::at(&args.new))?;
    let statement = RotationStatement::create(&old, &new, escx::now_unix());
    let comment = format!("escx key rotation: {} endorses {} as its successor", old.id(), new.id());
    if !args.force && args.out.exists() {
        return Err(failure::exists(&args.out, "pass --force to replace it"));
    }
    std::fs::write(&args.out, statement.to_text(&comment))
        .map_err(|e| escx::Error::io(&args.out, e))
        .map_err(failure::at(&args.out))?;
    ui.emit(
        &Rotated {
            old_key_id: old.id().to_string(),
            new_key_id: new.id().to_string(),
            statement_file: &args.out,
        },
        || format!("{} endorses {} -> {}", old.id(), new.id(), args.out.display()),
    );
    Ok(())
}

/// `escx key generate --json` (spec/cli.md).
#[derive(Serialize)]
struct Generated<'a> {
    key_id: String,
    algorithm: &'static str,
    secret_key_file: &'a Path,
    public_key_file: &'a Path,
    passphrase_protected: bool,
}

/// `escx key show --json`.
#[derive(Serialize)]
struct Shown<'a> {
    file: &'a Path,
    kind: &'static str,
    algorithm: &'static str,
    key_id: String,
    passphrase_protected: Option<bool>,
}

/// `escx key rotate --json`.
#[derive(Serialize)]
struct Rotated<'a> {
    old_key_id: String,
    new_key_id: String,
    statement_file: &'a Path,
}

/// `escx key show ROTATION --json`.
#[derive(Serialize)]
struct RotationShown<'a> {
    file: &'a Path,
    kind: &'static str,
    old_key_id: String,
    new_key_id: String,
    created_at: String,
    signature_checked: bool,
}
