//! A throwaway PostgreSQL cluster.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the cluster is initialised
//! and run as the `postgres` system user (created by Debian's package), in a temporary data
//! directory handed to that user. Authentication is `trust` on loopback only, `fsync` is off
//! (a test cluster does not need durability), and the socket lives in the data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, listening, wait_until};

#[derive(Debug)]
pub struct PostgresServer {
    child: Child,
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    as_user: Option<String>,
    _dir: tempfile::TempDir,
}

impl PostgresServer {
    /// Initialise a cluster and start it on a free port.
    pub fn start() -> Self {
        let bin = bin_dir();
        let as_user = is_root().then(|| "postgres".to_owned());
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        if let Some(user) = &as_user {
            for p in [dir.path(), data.as_path()] {
                let status = Command::new("chown")
                    .arg(user)
                    .arg(p)
                    .status()
                    .expect("chown");
                assert!(status.success(), "chown {} to {user}", p.display());
            }
        }
        let out = run_as(&as_user, &bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-instructions",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("initdb must be installed (the postgresql package)");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..10 {
            let port = free_port();
            let mut child = run_as(&as_user, &bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-p",
                    &port.to_string(),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                ])
                .args(["-c", "max_connections=50", "-c"])
                .arg(format!("unix_socket_directories={}", data.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("postgres must be installed (the postgresql package)");
            let mut exited = false;
            let up = wait_until(Duration::from_secs(30), || {
                exited = child.try_wait().ok().flatten().is_some();
                exited || (listening(port) && ready(&bin, port))
            });
            if up && !exited {
                return Self {
                    child,
                    port,
                    bin,
                    data,
                    as_user,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start postgres on a free port");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Create a fresh database (for tests that want isolation inside one cluster).
    pub fn create_database(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .expect("createdb");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url_for(name)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // An immediate stop takes the backends and shared memory with it; a plain kill of the
        // postmaster would leave both behind for a moment.
        let _ = run_as(&self.as_user, &self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready(bin: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

fn run_as(user: &Option<String>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// The newest `/usr/lib/postgresql/*/bin`, else whatever `initdb` is on the PATH.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map_or_else(|| PathBuf::from(""), |(_, b)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_answers_and_stops() {
        let pg = PostgresServer::start();
        let port = pg.port();
        assert!(listening(port));
        let url = pg.create_database("palisade_probe");
        assert!(url.ends_with("/palisade_probe"));
        drop(pg);
        assert!(
            wait_until(Duration::from_secs(10), || !listening(port)),
            "postgres still listening after drop"
        );
    }

    #[test]
    fn redis_starts_and_stops() {
        let mut r = crate::RedisServer::start();
        assert!(crate::redis::ping(r.port()));
        assert_eq!(r.get("nothing"), 0);
        let port = r.port();
        r.kill();
        assert!(!crate::redis::ping(port));
    }
}
