//! Fixtures and helpers shared by the CLI tests and the service benchmark.
// Each user takes the fixtures it needs: the tests both manifests, the bench one.
#![allow(dead_code)]

/// A paid package's manifest: `acme/thermal` 1.0.0, tier "standard" at 49.00 USD a month.
pub const PAID_MANIFEST: &str = "[package]\nname = \"acme/thermal\"\nversion = \"1.0.0\"\n[pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n\
     [[pricing.tier]]\nname = \"standard\"\nprice = \"49.00\"\nunit = \"month\"\n";

/// `acme/thermal` 1.0.0 with a monthly tier and a metered one (1.20 USD an hour), a meter
/// counting invocations, and a referrer's 10 % of the remainder in its waterfall.
pub const METERED_MANIFEST: &str = "[package]\nname = \"acme/thermal\"\nversion = \"1.0.0\"\n\
     [pricing]\nlicense_type = \"paid\"\ncurrency = \"USD\"\n\
     [[pricing.tier]]\nname = \"standard\"\nprice = \"49.00\"\nunit = \"month\"\n\
     [[pricing.tier]]\nname = \"metered\"\nprice = \"1.20\"\nunit = \"hour\"\n\
     [telemetry]\nmetrics = [\"invocations\"]\nwindow = \"24h\"\ncohort_min_size = 50\nepsilon = 1.0\n\
     [revenue]\ncurrency = \"USD\"\nresidual = \"acme\"\neffective_from = \"2026-01-01\"\n\
     [[revenue.step]]\nparty = \"referrer\"\nshare_of_remaining_bps = 1000\n";

/// Copies the directory tree `from` to `to` (a wallet or an issuer directory handed to
/// another process, a set of public files handed to an auditor).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Starts `escx serve --listen 127.0.0.1:0 ARGS` in `dir`; the child and the address it
/// printed on its first line.
pub fn serve(dir: &std::path::Path, args: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_escx"))
        .current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("escx serve printed {line:?}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    (child, addr)
}
