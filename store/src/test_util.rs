//! For tests of the crates that keep data (feature `test-util`): throwaway PostgreSQL
//! clusters, with TLS and PgBouncer in front when asked, and a reader of every stored cell.
//!
//! A cluster runs `initdb` and `pg_ctl` from the system's PostgreSQL into a temporary
//! directory and is stopped and removed when dropped. The binaries are found in
//! `$ESCX_PG_BINDIR`, on `PATH`, or in Debian's `/usr/lib/postgresql/<version>/bin`
//! (`.ci/run` installs the package when it is missing). PostgreSQL refuses to run as root,
//! so under root the server runs as the `postgres` user the package creates, in a
//! directory handed to it. These helpers panic on failure: they are for tests.
#![allow(clippy::missing_panics_doc)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::db::{Db, Row, Sql};
use crate::location::{Location, PgUrl};
use crate::pg::{PgConn, Within};

/// Every row of every table of the store `db` opened (in its PostgreSQL schema), by table:
/// what someone who reads the database learns.
pub fn all_rows(db: &Db) -> Vec<(String, Row)> {
    let tables: Vec<String> = if db.is_postgres() {
        db.rows(
            "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = current_schema() ORDER BY 1",
            &[],
        )
    } else {
        db.rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1", &[])
    }
    .unwrap()
    .iter()
    .map(|row| row.text(0).unwrap().to_owned())
    .collect();
    assert!(!tables.is_empty(), "{} holds no table", db.location());
    let mut rows = Vec::new();
    for table in tables {
        for row in db.rows(&format!("SELECT * FROM {table}"), &[]).unwrap() {
            rows.push((table.clone(), row));
        }
    }
    rows
}

/// A throwaway cluster.
pub struct Cluster {
    root: tempfile::TempDir,
    bin: PathBuf,
    socket: PathBuf,
    /// Under root: the user the server runs as.
    user: Option<String>,
    next_database: AtomicUsize,
    /// The server's options, to start it again after [`Cluster::crash`].
    options: String,
    /// With TLS: the loopback port it listens on, and the CA that signed its certificate.
    tls: Option<(u16, PathBuf)>,
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

/// A free loopback TCP port (free when asked; tests use it at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    /// Starts a cluster for tests (a few hundred milliseconds): `fsync` off, for tests
    /// that never crash the server (those use [`Cluster::start_durable`]). It listens on
    /// a unix socket only.
    pub fn start() -> Self {
        Self::start_with("-c fsync=off -c synchronous_commit=off", false, false)
    }

    /// Starts a cluster that is durable on commit (PostgreSQL's defaults: `fsync` and
    /// `synchronous_commit` on), for benchmarks and the crash tests.
    pub fn start_durable() -> Self {
        Self::start_with("-c fsync=on -c synchronous_commit=on", false, false)
    }

    /// Starts a cluster that also listens on a loopback TCP port with TLS on and required
    /// (`hostssl` only): its certificate names `localhost` and `127.0.0.1` and is signed by
    /// a CA made here ([`Cluster::ca`]).
    pub fn start_tls() -> Self {
        Self::start_with("-c fsync=off -c synchronous_commit=off", true, false)
    }

    /// A durable cluster ([`Cluster::start_durable`]) listening on a loopback TCP port that
    /// accepts TLS and plain connections alike ([`Cluster::start_tls`]'s certificate): for
    /// benchmarks that compare the two over the same transport.
    pub fn start_tls_or_plain_durable() -> Self {
        Self::start_with("-c fsync=on -c synchronous_commit=on", true, true)
    }

    fn start_with(durability: &str, tls: bool, plain_tcp: bool) -> Self {
        let bin = bindir();
        let root = tempfile::Builder::new().prefix("escx-pg").tempdir().unwrap();
        let user = is_root().then(|| "postgres".to_owned());
        let mut options =
            format!("-k {} -p {PORT} {durability} -c max_connections=200", root.path().display());
        let tls = tls.then(|| {
            let port = free_port();
            let ca = make_certificates(root.path());
            options += &format!(
                " -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
                dir = root.path().display()
            );
            (port, ca)
        });
        match &tls {
            Some((port, _)) => options = options.replace(&format!("-p {PORT}"), &format!("-p {port}")),
            None => options += " -c listen_addresses=",
        }
        if let Some(user) = &user {
            let status = Command::new("chown").args(["-R", user]).arg(root.path()).status().unwrap();
            assert!(status.success(), "chown {} to {user}", root.path().display());
        }
        let cluster = Self {
            socket: root.path().to_path_buf(),
            root,
            bin,
            user,
            next_database: AtomicUsize::new(0),
            options,
            tls,
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
        if cluster.tls.is_some() {
            // Over TCP only TLS is accepted (unless asked otherwise); the unix socket stays
            // for administration.
            let plain = if plain_tcp { "trust" } else { "reject" };
            std::fs::write(
                data.join("pg_hba.conf"),
                format!(
                    "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 {plain}\n"
                ),
            )
            .unwrap();
        }
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
        as_server_user(self.user.as_deref(), &self.bin.join(program))
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

    fn socket_port(&self) -> u16 {
        self.tls.as_ref().map_or(PORT, |(port, _)| *port)
    }

    /// The URL of database `name` over the unix socket.
    pub fn url(&self, name: &str) -> String {
        format!("postgresql:///{name}?host={}&port={}&user=escx", self.socket.display(), self.socket_port())
    }

    /// A new, empty database; its URL (over the unix socket).
    pub fn database(&self) -> String {
        let name = format!("escx_{}", self.next_database.fetch_add(1, Ordering::Relaxed));
        admin(&self.url("postgres"), &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The URL of a new, empty database over loopback TCP, as `host` (`localhost` or
    /// `127.0.0.1`), with `params` (`sslmode=…&sslrootcert=…`). Only for [`Cluster::start_tls`].
    pub fn tcp_database(&self, host: &str, params: &str) -> String {
        let (port, _) = self.tls.as_ref().expect("a cluster started with start_tls");
        let name = self.database().split_once("///").unwrap().1.split_once('?').unwrap().0.to_owned();
        format!("postgres://escx@{host}:{port}/{name}?{params}")
    }

    /// The CA that signed the server's certificate (PEM). Only for [`Cluster::start_tls`].
    pub fn ca(&self) -> &Path {
        &self.tls.as_ref().expect("a cluster started with start_tls").1
    }

    /// The directory holding the server's socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket
    }

    /// Starts PgBouncer (Debian's `pgbouncer`) in front of this cluster in transaction
    /// pooling mode, with at most `pool_size` server connections per database, so clients
    /// share them between transactions.
    pub fn pgbouncer(&self, pool_size: u32) -> Pooler {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .expect("no pgbouncer: install Debian's pgbouncer package (.ci/run does)");
        let dir = tempfile::Builder::new().prefix("escx-pgbouncer").tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("users.txt"), "\"escx\" \"\"\n").unwrap();
        std::fs::write(
            dir.path().join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={socket} port={server}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                 listen_port = {port}\nunix_socket_dir = {dir}\nauth_type = trust\nauth_file = {dir}/users.txt\n\
                 pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                socket = self.socket.display(),
                server = self.socket_port(),
                dir = dir.path().display(),
            ),
        )
        .unwrap();
        if let Some(user) = &self.user {
            let status = Command::new("chown").args(["-R", user]).arg(dir.path()).status().unwrap();
            assert!(status.success());
        }
        // Started directly (`-u` drops root itself), so that the child killed on drop is
        // PgBouncer and not a `runuser` that would leave it running; its output goes to
        // its log file, never to the test's pipes.
        let mut command = Command::new(&binary);
        if let Some(user) = &self.user {
            command.args(["-u", user]);
        }
        let child = command
            .arg(dir.path().join("pgbouncer.ini"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pooler = Pooler { child, port, _dir: dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "pgbouncer did not listen within 20 s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        pooler
    }
}

/// A running PgBouncer, stopped when dropped.
pub struct Pooler {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Pooler {
    /// The URL of database `url` (a [`Cluster::database`] URL) through the pooler.
    pub fn url(&self, url: &str) -> String {
        let name = url.split_once("///").unwrap().1.split_once('?').unwrap().0;
        format!("postgres://escx@127.0.0.1:{}/{name}?sslmode=disable", self.port)
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn as_server_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Every row of a query of integer columns (counts, sequence numbers), run on `url`
/// outside the stores: what a test checks behind a store's back.
pub fn query_ints(url: &str, sql: &str) -> Vec<Vec<i64>> {
    let conn = PgConn::connect(&pg_url(url)).unwrap();
    let rows = conn.query(sql, &[], Within::Read).unwrap();
    rows.iter().map(|row| (0..row.len()).map(|i| row.get::<_, i64>(i)).collect()).collect()
}

/// Runs statements (outside any transaction) on `url`: an administrator's change, or
/// damage a test does on purpose.
pub fn admin(url: &str, sql: &str) {
    let Location::Postgres(url) = Location::parse(url) else { unreachable!("a PostgreSQL URL") };
    let conn: PgConn = PgConn::connect(&url).unwrap();
    conn.batch(sql, Within::Read).unwrap();
}

/// A CA, and a server certificate it signs for `localhost` and `127.0.0.1` (`server.crt`,
/// `server.key` in `dir`); the CA's PEM file.
fn make_certificates(dir: &Path) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "escx test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let server = server_params.signed_by(&server_key, &ca_issuer).unwrap();
    std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let path = dir.join("ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    path
}

/// A CA that signed nothing this cluster uses (for the test that a wrong CA is refused).
pub fn unrelated_ca(dir: &Path) -> PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "another CA");
    let path = dir.join("other-ca.pem");
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.root.path().join("data").display().to_string();
        let _ = self.command("pg_ctl").args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
    }
}

/// The URL as the layer takes it.
pub fn pg_url(url: &str) -> PgUrl {
    match Location::parse(url) {
        Location::Postgres(url) => url,
        Location::Sqlite(_) => panic!("{url} is not a PostgreSQL URL"),
    }
}
