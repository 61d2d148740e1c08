//! Fixtures and helpers shared by the CLI tests and the service benchmark.
// Each user takes the fixtures it needs: the tests both manifests, the bench one.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
/// The log is `--quiet` (5xx only) and goes to the test's stderr.
pub fn serve(dir: &std::path::Path, args: &[&str]) -> (std::process::Child, String) {
    serve_logging(dir, &[args, &["--quiet"]].concat(), std::process::Stdio::inherit())
}

/// [`serve`] with the service's log (its stderr) going to `log`.
#[allow(dead_code)]
pub fn serve_logging(
    dir: &std::path::Path,
    args: &[&str],
    log: impl Into<std::process::Stdio>,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_escx"))
        .current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(log)
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

/// A running `escx serve`, killed if the test fails before stopping it.
pub struct Server {
    pub child: Child,
    pub addr: String,
    /// Its log (stderr), read as it is written so the pipe never fills.
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_on(dir, "127.0.0.1:0", args)
    }

    /// [`Server::start`] listening on `listen`; `addr` is what the service printed.
    pub fn start_on(dir: &Path, listen: &str, args: &[&str]) -> Self {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_escx"))
            .current_dir(dir)
            .env_remove("ESCX_PASSPHRASE")
            .args(["serve", "--listen", listen])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("the server did not start within 30 s");
        let addr = line
            .strip_prefix("listening on http://")
            .or_else(|| line.strip_prefix("listening on https://"))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self { child, addr, log, reader: Some(reader) }
    }

    /// The log written so far.
    #[allow(dead_code)]
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The whole log, once the server has exited.
    #[allow(dead_code)]
    pub fn final_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM, then the exit status (bounded).
    pub fn stop(self) -> std::process::ExitStatus {
        self.stop_with_log().0
    }

    /// [`Server::stop`], and the whole log.
    pub fn stop_with_log(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.final_log());
            }
            assert!(Instant::now() < deadline, "the server did not stop within 20 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP/1.1 exchange: status, headers (lowercase names) and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("no end of headers");
    let head = String::from_utf8_lossy(&answer[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, answer[split + 4..].to_vec())
}
