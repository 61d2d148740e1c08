//! A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` from the system's
//! PostgreSQL into a temporary directory, listening on a unix socket only, stopped and
//! removed when dropped. The binaries are found in `$ESCX_PG_BINDIR`, on `PATH`, or in
//! Debian's `/usr/lib/postgresql/<version>/bin` (`.ci/run` installs the package when it is
//! missing). PostgreSQL refuses to run as root, so under root the server runs as the
//! `postgres` user the package creates, in a directory handed to it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Cluster {
    root: tempfile::TempDir,
    bin: PathBuf,
    socket: PathBuf,
    /// Under root: the user the server runs as.
    user: Option<String>,
    next_database: AtomicUsize,
    /// The server's options, to start it again after [`Cluster::crash`].
    options: String,
}

const PORT: u16 = 5432;

fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ESCX_PG_BINDIR") {
        return dir.into();
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return dir;
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries (initdb, pg_ctl): install Debian's postgresql package \
             (apt-get install postgresql) or set ESCX_PG_BINDIR; .ci/run does the former"
        )
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl Cluster {
    /// Starts a cluster for tests (a few hundred milliseconds): `fsync` off, for tests
    /// that never crash the server (those use [`Cluster::start_durable`]).
    pub fn start() -> Self {
        Self::start_with("-c fsync=off -c synchronous_commit=off")
    }

    /// Starts a cluster that is durable on commit (PostgreSQL's defaults: `fsync` and
    /// `synchronous_commit` on), for benchmarks and the crash tests.
    pub fn start_durable() -> Self {
        Self::start_with("-c fsync=on -c synchronous_commit=on")
    }

    fn start_with(durability: &str) -> Self {
        let bin = bindir();
        let root = tempfile::Builder::new().prefix("escx-pg").tempdir().unwrap();
        let user = is_root().then(|| "postgres".to_owned());
        if let Some(user) = &user {
            let status = Command::new("chown").args(["-R", user]).arg(root.path()).status().unwrap();
            assert!(status.success(), "chown {} to {user}", root.path().display());
        }
        let options = format!(
            "-c listen_addresses= -k {} -p {PORT} {durability} -c max_connections=200",
            root.path().display()
        );
        let cluster = Self {
            socket: root.path().to_path_buf(),
            root,
            bin,
            user,
            next_database: AtomicUsize::new(0),
            options,
        };
        let data = cluster.root.path().join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "escx",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
        );
        cluster.start_server();
        cluster
    }

    fn start_server(&self) {
        let data = self.root.path().join("data");
        let log = self.root.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-o",
                &self.options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Crashes the server: every server process is stopped at once, with no checkpoint and
    /// no clean shutdown (`pg_ctl stop -m immediate`), so the next start recovers from the
    /// write-ahead log as after a crash. Open connections break.
    pub fn crash(&self) {
        let data = self.root.path().join("data").display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// Starts the server again after [`Cluster::crash`] (crash recovery runs first).
    pub fn restart(&self) {
        self.start_server();
    }

    /// `program` of the server's binaries, as the server's user.
    fn command(&self, program: &str) -> Command {
        let tool = self.bin.join(program);
        match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&tool);
                c
            }
            None => Command::new(&tool),
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).current_dir(self.root.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgresql:///{name}?host={}&port={PORT}&user=escx", self.socket.display())
    }

    /// A new, empty database; its URL.
    pub fn database(&self) -> String {
        let name = format!("escx_{}", self.next_database.fetch_add(1, Ordering::Relaxed));
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        self.url(&name)
    }

    /// The directory holding the server's socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.root.path().join("data").display().to_string();
        let _ = self.command("pg_ctl").args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
    }
}
