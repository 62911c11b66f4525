//! A private PostgreSQL cluster and a private Redis server, on free ports
//! in temporary directories, that a test can stop and start again to play
//! an outage. Both servers refuse to run as root, so they run as the
//! `postgres` user (`runuser`) when the test runs as root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::free_port;

const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A command run as the `postgres` user when this process is root.
fn as_server_user(program: &str) -> Command {
    match is_root() {
        true => {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", program]);
            command
        }
        false => Command::new(program),
    }
}

/// A directory the `postgres` user owns, removed at the end.
fn server_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status();
    assert!(status.is_ok_and(|s| s.success()) || !is_root(), "cannot give {} to the postgres user", dir.path().display());
    dir
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

fn run(mut command: Command, what: &str) {
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub struct PrivatePostgres {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// A new cluster (trust authentication, user `postgres`), running.
    pub fn start() -> Self {
        let bin = Path::new(POSTGRES_BIN);
        assert!(bin.join("initdb").exists(), "PostgreSQL 15's server programs are needed in {POSTGRES_BIN} (Debian: postgresql-15)");
        let dir = server_dir();
        let mut initdb = as_server_user(&format!("{POSTGRES_BIN}/initdb"));
        initdb.args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"]).arg(Self::data(dir.path()));
        run(initdb, "initdb");
        let cluster = Self { addr: free_port(), dir };
        cluster.resume();
        cluster
    }

    fn data(dir: &Path) -> PathBuf {
        dir.join("data")
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.addr)
    }

    /// Stops the server (fast: open connections are cut).
    pub fn stop(&self) {
        run(self.pg_ctl(&["-m", "fast", "-w", "stop"]), "pg_ctl stop");
    }

    /// Starts the server again on the same port, and waits until it accepts connections.
    pub fn resume(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.addr.port(), self.dir.path().display());
        let log = self.dir.path().join("server.log");
        run(self.pg_ctl(&["-w", "-t", "30", "-l", log.to_str().unwrap(), "-o", &options, "start"]), "pg_ctl start");
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = as_server_user(&format!("{POSTGRES_BIN}/pg_ctl"));
        command.arg("-D").arg(Self::data(self.dir.path())).args(args);
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

pub struct PrivateRedis {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let redis = Self { addr: free_port(), dir: server_dir() };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Stops the server at once, keeping nothing.
    pub fn stop(&self) {
        let mut shutdown = Command::new("redis-cli");
        shutdown.args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string(), "shutdown", "nosave"]);
        let _ = shutdown.stdout(Stdio::null()).stderr(Stdio::null()).status();
        for _ in 0..200 {
            if std::net::TcpStream::connect(self.addr).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on {} did not stop", self.addr);
    }

    /// Starts the server again on the same port, and waits until it answers.
    pub fn resume(&self) {
        let mut command = as_server_user("redis-server");
        let port = self.addr.port().to_string();
        command.args(["--bind", "127.0.0.1", "--port", &port, "--save", "", "--appendonly", "no", "--daemonize", "yes", "--dir"]);
        command.arg(self.dir.path());
        run(command, "redis-server (Debian: redis-server)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on {}", self.addr);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let mut shutdown = Command::new("redis-cli");
        shutdown.args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string(), "shutdown", "nosave"]);
        let _ = shutdown.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}
