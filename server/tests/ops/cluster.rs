//! A throwaway PostgreSQL cluster of the test's own (initdb + pg_ctl, as the `postgres` user
//! when running as root) that the test may stop and start. The shared server is never
//! touched.

use std::path::{Path, PathBuf};
use std::process::Command;

fn find_pg_bin(name: &str) -> PathBuf {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries (Debian: apt-get install postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("{name} not found: install the PostgreSQL server binaries"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL cluster in a temporary directory, stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    pg_ctl: PathBuf,
    root: bool,
    dir: PathBuf,
    data: String,
    options: String,
    log: String,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl Cluster {
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program).args(args);
            c
        } else {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }

    /// Creates and starts a cluster (blocking: call from `spawn_blocking`).
    pub fn create() -> Self {
        let root = is_root();
        let dir =
            std::env::temp_dir().join(format!("vexil-ops-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the cluster directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let data = dir.join("data").to_string_lossy().into_owned();
        let cluster = Self {
            pg_ctl: find_pg_bin("pg_ctl"),
            root,
            options: format!("-p {port} -k {} -h 127.0.0.1 -c fsync=off", dir.display()),
            log: dir.join("log").to_string_lossy().into_owned(),
            data,
            dir,
            port,
        };
        let initdb = find_pg_bin("initdb");
        let out = cluster
            .command(
                &initdb,
                &[
                    "-D",
                    &cluster.data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.start();
        cluster
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Starts the cluster and waits until it accepts connections (blocking).
    pub fn start(&self) {
        let out = self
            .command(
                &self.pg_ctl,
                &[
                    "-D",
                    &self.data,
                    "-o",
                    &self.options,
                    "-l",
                    &self.log,
                    "-w",
                    "start",
                ],
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the cluster (fast shutdown: connections are closed) and waits (blocking).
    pub fn stop(&self) {
        let out = self
            .command(
                &self.pg_ctl,
                &["-D", &self.data, "-m", "fast", "-w", "stop"],
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command(&self.pg_ctl, &["-D", &self.data, "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
