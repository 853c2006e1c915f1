//! Throwaway databases and an in-process control plane (the `server` feature).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::Connection;
use tokio::net::TcpListener;
use vexil_server::{Config, Server, StartError};

use crate::ServerTask;

/// Which database engine a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite (a temporary file).
    Sqlite,
}

/// Installs a test log subscriber once, if `TEST_LOG` is set (to a filter such as `debug`).
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// The URL of a PostgreSQL server where databases may be created (its `postgres` database).
pub fn postgres_admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(find_postgres)
}

fn find_postgres() -> String {
    if let Ok(url) = std::env::var("VEXIL_TEST_DATABASE_URL")
        && !url.trim().is_empty()
    {
        return url;
    }
    let forced = std::env::var("VEXIL_TEST_THROWAWAY_PG").is_ok_and(|v| v == "1");
    let local = SocketAddr::from(([127, 0, 0, 1], 5432));
    if !forced && TcpStream::connect_timeout(&local, Duration::from_secs(1)).is_ok() {
        return "postgres://postgres@127.0.0.1:5432/postgres".to_owned();
    }
    match start_throwaway_cluster() {
        Ok(url) => url,
        Err(e) => panic!(
            "no PostgreSQL for the tests: set VEXIL_TEST_DATABASE_URL, run one on 127.0.0.1:5432 \
             (user postgres, trust auth), or install the server binaries (Debian: \
             `apt-get install postgresql`) so the tests can start a throwaway cluster. \
             Starting one failed: {e}"
        ),
    }
}

fn find_pg_bin(name: &str) -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs `program args` as the `postgres` user when we are root (initdb refuses root).
fn pg_command(program: &Path, args: &[&str], as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn start_throwaway_cluster() -> Result<String, String> {
    let cluster = PostgresCluster::start()?;
    let url = cluster.admin_url.clone();
    // Shared by every test of the process: its watchdog stops it when the process exits.
    std::mem::forget(cluster);
    Ok(url)
}

/// A throwaway PostgreSQL cluster of a test's own (`initdb` and `pg_ctl` from `PATH` or
/// `/usr/lib/postgresql/*/bin`, run as the `postgres` user when the test runs as root), on a
/// free port of 127.0.0.1 with trust authentication. A test may stop and restart it
/// ([`PostgresCluster::stop_fast`], [`PostgresCluster::restart`]) to see what an outage does.
/// Dropping it stops it and removes its files; a watchdog does the same if the test process
/// dies first.
#[derive(Debug)]
pub struct PostgresCluster {
    /// The URL of its `postgres` database, as user `postgres`.
    pub admin_url: String,
    pg_ctl: PathBuf,
    data: String,
    opts: String,
    log: String,
    dir: PathBuf,
    as_postgres: bool,
}

impl PostgresCluster {
    /// Creates and starts a cluster.
    pub fn start() -> Result<Self, String> {
        let initdb = find_pg_bin("initdb").ok_or("initdb not found")?;
        let pg_ctl = find_pg_bin("pg_ctl").ok_or("pg_ctl not found")?;
        let root = is_root();
        let dir = std::env::temp_dir().join(format!("vexil-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map_err(|e| format!("chown: {e}"))?
                .success();
            if !ok {
                return Err("cannot chown the cluster directory to the postgres user".into());
            }
        }
        let data = dir.join("data").to_string_lossy().into_owned();
        let dir_s = dir.to_string_lossy().into_owned();
        let out = pg_command(
            &initdb,
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            root,
        )
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let cluster = Self {
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            opts: format!("-p {port} -k {dir_s} -h 127.0.0.1 -c fsync=off"),
            log: dir.join("log").to_string_lossy().into_owned(),
            pg_ctl,
            data,
            dir,
            as_postgres: root,
        };
        // A watchdog outlives this process by at most a second: once the test process is
        // gone it stops the cluster and removes its directory.
        let stop = if root {
            format!(
                "runuser -u postgres -- '{}' -D '{}' -m immediate stop",
                cluster.pg_ctl.display(),
                cluster.data
            )
        } else {
            format!(
                "'{}' -D '{}' -m immediate stop",
                cluster.pg_ctl.display(),
                cluster.data
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{dir_s}'",
            pid = std::process::id()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("watchdog: {e}"))?;
        cluster.restart()?;
        Ok(cluster)
    }

    /// The URL of `database` in this cluster, as user `postgres`.
    pub fn url(&self, database: &str) -> String {
        with_database(&self.admin_url, database)
    }

    /// Starts the (stopped) cluster again on the same port and data, waiting until it
    /// accepts connections.
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl(&["-o", &self.opts, "-l", &self.log, "-w", "start"])
    }

    /// Stops the cluster the way an operator's fast shutdown does (`pg_ctl stop -m fast`:
    /// sessions are disconnected, open transactions rolled back), waiting until it is down.
    pub fn stop_fast(&self) -> Result<(), String> {
        self.pg_ctl(&["-m", "fast", "-w", "stop"])
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-D", self.data.as_str()];
        all.extend_from_slice(args);
        let out = pg_command(&self.pg_ctl, &all, self.as_postgres)
            .output()
            .map_err(|e| format!("pg_ctl {args:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// The engine.
    pub backend: Backend,
    /// The URL the server connects with.
    pub url: String,
    /// PostgreSQL: the database name, dropped on drop.
    pg_name: Option<String>,
    /// SQLite: the directory holding the file, removed on drop.
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// Creates a fresh, empty database.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("vexil_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = connect_retry(admin).await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
                let _ = conn.close().await;
                Self {
                    backend,
                    url: with_database(admin, &name),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = dir.path().join("vexil.db").to_string_lossy().into_owned();
                Self {
                    backend,
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
        }
    }

    /// Row counts of every control-plane table plus the sum of environment versions: equal
    /// before and after a rejected request means the request changed nothing.
    pub async fn fingerprint(&self) -> BTreeMap<&'static str, i64> {
        const QUERIES: &[(&str, &str)] = &[
            ("projects", "SELECT COUNT(*) FROM projects"),
            ("environments", "SELECT COUNT(*) FROM environments"),
            (
                "environment_versions",
                "SELECT CAST(COALESCE(SUM(version), 0) AS BIGINT) FROM environments",
            ),
            ("flags", "SELECT COUNT(*) FROM flags"),
            (
                "flag_versions",
                "SELECT CAST(COALESCE(SUM(version), 0) AS BIGINT) FROM flags",
            ),
            ("flag_tags", "SELECT COUNT(*) FROM flag_tags"),
            ("flag_configs", "SELECT COUNT(*) FROM flag_configs"),
            (
                "flag_config_versions",
                "SELECT COUNT(*) FROM flag_config_versions",
            ),
            ("segments", "SELECT COUNT(*) FROM segments"),
            ("segment_keys", "SELECT COUNT(*) FROM segment_keys"),
            ("change_log", "SELECT COUNT(*) FROM change_log"),
            ("audit_log", "SELECT COUNT(*) FROM audit_log"),
            ("api_tokens", "SELECT COUNT(*) FROM api_tokens"),
            ("access_keys", "SELECT COUNT(*) FROM access_keys"),
        ];
        let mut out = BTreeMap::new();
        match self.backend {
            Backend::Postgres => {
                let mut c = connect_retry(&self.url).await;
                for (name, sql) in QUERIES {
                    let n: i64 = sqlx::query_scalar(*sql)
                        .fetch_one(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                    out.insert(*name, n);
                }
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.url))
                    .await
                    .expect("open the test SQLite file");
                for (name, sql) in QUERIES {
                    let n: i64 = sqlx::query_scalar(*sql)
                        .fetch_one(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                    out.insert(*name, n);
                }
            }
        }
        out
    }

    /// Runs one SQL statement directly (e.g. to check what the database itself refuses).
    pub async fn execute(&self, sql: &'static str) -> Result<u64, sqlx::Error> {
        match self.backend {
            Backend::Postgres => {
                let mut c = connect_retry(&self.url).await;
                Ok(sqlx::query(sql).execute(&mut c).await?.rows_affected())
            }
            Backend::Sqlite => {
                let mut c =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.url)).await?;
                Ok(sqlx::query(sql).execute(&mut c).await?.rows_affected())
            }
        }
    }
}

async fn connect_retry(url: &str) -> sqlx::PgConnection {
    let mut last = None;
    for _ in 0..5 {
        match sqlx::PgConnection::connect(url).await {
            Ok(c) => return c,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("cannot connect to PostgreSQL at {url}: {last:?}")
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin = postgres_admin_url().to_owned();
        // Drop runs outside async context; a short-lived thread with its own runtime does the
        // best-effort cleanup.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut c)
                        .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}

/// A running control plane for one test.
#[derive(Debug)]
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub base_url: String,
    /// An HTTP client (no default credentials).
    pub client: reqwest::Client,
    /// The bootstrap admin token.
    pub admin_token: String,
    /// The test's database.
    pub database: TestDatabase,
    /// The serving task: its failure fails the test (see [`ServerTask`]).
    server: Option<ServerTask<StartError>>,
}

/// Starts the real server on `127.0.0.1:0` against a fresh database of `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Like [`spawn_app`], letting the test adjust the configuration first.
pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
    init_tracing();
    let database = TestDatabase::create(backend).await;
    let admin_token = format!("vxa_{}", uuid::Uuid::new_v4().simple());
    let mut config = Config::with_database(database.url.clone());
    config.bootstrap_token = Some(admin_token.clone());
    config.database_max_connections = 10;
    // Tests stop servers with streams open: close them over 1 s, not the default 5 s.
    config.drain_ms = 1_000;
    adjust(&mut config);
    let server = Server::build(config).await.expect("the server starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("local address");
    let task = ServerTask::spawn("the test server", move |stop| {
        server.serve(listener, async {
            let _ = stop.await;
        })
    });
    TestApp {
        addr,
        base_url: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client"),
        admin_token,
        database,
        server: Some(task),
    }
}

impl TestApp {
    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A request to `path` authenticated with `token`.
    pub fn request_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// `GET path` as admin.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request_as(reqwest::Method::GET, path, &self.admin_token)
    }

    /// `POST path` with a JSON body, as admin.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.request_as(reqwest::Method::POST, path, &self.admin_token)
            .json(body)
    }

    /// `PUT path` with a JSON body, as admin.
    pub fn put(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.request_as(reqwest::Method::PUT, path, &self.admin_token)
            .json(body)
    }

    /// `PATCH path` with a JSON body, as admin.
    pub fn patch(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.request_as(reqwest::Method::PATCH, path, &self.admin_token)
            .json(body)
    }

    /// `DELETE path` as admin.
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.request_as(reqwest::Method::DELETE, path, &self.admin_token)
    }

    /// Creates an API token with `role` (`admin`, `editor`, `viewer`) and returns its secret.
    pub async fn token(&self, name: &str, role: &str) -> String {
        let res = self
            .post(
                "/api/v1/tokens",
                &serde_json::json!({"name": name, "role": role}),
            )
            .send()
            .await
            .expect("create token");
        assert_eq!(res.status(), 201, "create token {name}");
        let body: serde_json::Value = res.json().await.expect("token JSON");
        body["secret"].as_str().expect("secret").to_owned()
    }

    /// Creates a project and its environments (as admin).
    pub async fn project(&self, key: &str, environments: &[&str]) {
        let res = self
            .post(
                "/api/v1/projects",
                &serde_json::json!({"key": key, "name": key}),
            )
            .send()
            .await
            .expect("create project");
        assert_eq!(res.status(), 201, "create project {key}");
        for env in environments {
            let res = self
                .post(
                    &format!("/api/v1/projects/{key}/environments"),
                    &serde_json::json!({"key": env, "name": env}),
                )
                .send()
                .await
                .expect("create environment");
            assert_eq!(res.status(), 201, "create environment {env}");
        }
    }

    /// Stops the server and waits for it to finish in-flight requests.
    ///
    /// # Panics
    ///
    /// If the server failed in the background or does not stop within 20 s.
    pub async fn stop(mut self) {
        if let Some(task) = self.server.take() {
            task.stop(Duration::from_secs(20)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The server goes before its database (dropped with the fields); a failure it had
        // in the background fails the test here (see `ServerTask`'s `Drop`).
        drop(self.server.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
    }
}
