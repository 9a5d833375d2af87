//! A real `switchyard serve` process with a database of its own.

use super::Response;
use reqwest::Method;
use serde_json::Value;
use sqlx::Connection;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server process, its database and a client. Dropping it stops the process and
/// deletes the database.
#[derive(Debug)]
pub struct TestServer {
    pub base_url: String,
    pub database_url: String,
    child: Option<Child>,
    port: u16,
    client: reqwest::Client,
    scratch: PathBuf,
    /// The PostgreSQL database to drop, with the URL of the server it lives on.
    postgres: Option<(String, String)>,
    /// The extra `serve` flags of the last start, kept by [`TestServer::restart`].
    flags: Vec<String>,
    /// Environment variables the process gets besides the harness's.
    env: Vec<(String, String)>,
}

fn scratch_folder(run_id: &str) -> PathBuf {
    let scratch = std::env::temp_dir().join(format!("switchyard-it-{run_id}"));
    std::fs::create_dir_all(&scratch).expect("scratch folder");
    scratch
}

/// Where the test databases are created; CI and this machine run PostgreSQL here.
pub fn postgres_server() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// `host:port` of the PostgreSQL server the test databases are created on.
pub fn postgres_address() -> String {
    let server = postgres_server();
    let authority = server.split_once("://").map_or(server.as_str(), |(_, rest)| rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    authority.split(['/', '?']).next().unwrap_or(authority).to_owned()
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with(backend, &[]).await
    }

    /// Starts a server with extra `serve` flags (e.g. `--modules DIR`).
    pub async fn start_with(backend: Backend, flags: &[&str]) -> TestServer {
        let mut server = TestServer::prepared(backend).await;
        server.spawn(flags).await;
        server
    }

    /// Starts a server with extra `serve` flags and environment variables.
    pub async fn start_with_env(backend: Backend, flags: &[&str], env: &[(&str, &str)]) -> TestServer {
        let mut server = TestServer::prepared(backend).await;
        server.env = env.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        server.spawn(flags).await;
        server
    }

    /// Starts a server listening on `ip` (at the harness's port): every interface, say.
    pub async fn start_on(backend: Backend, ip: &str, flags: &[&str]) -> TestServer {
        let mut server = TestServer::prepared(backend).await;
        let listen = format!("{ip}:{}", server.port);
        let flags: Vec<&str> =
            ["--listen", listen.as_str()].into_iter().chain(flags.iter().copied()).collect();
        server.spawn(&flags).await;
        server
    }

    /// Starts a server with this TOML config file (kept for its restarts).
    pub async fn start_with_config(backend: Backend, toml: &str) -> TestServer {
        let mut server = TestServer::prepared(backend).await;
        let config = server.config_file(toml);
        server.spawn(&["--config", &config]).await;
        server
    }

    /// Starts a server with this TOML config file on a new database of the PostgreSQL
    /// server at `postgres` (see [`postgres_server`]), reaching it at `route(url)`
    /// instead of `url` (a proxy in front of PostgreSQL, say); its restarts and
    /// [`TestServer::another_host`] keep that route.
    pub async fn start_routed(postgres: &str, toml: &str, route: impl FnOnce(&str) -> String) -> TestServer {
        let mut server = TestServer::prepared_on(postgres).await;
        server.database_url = route(&server.database_url);
        let config = server.config_file(toml);
        server.spawn(&["--config", &config]).await;
        server
    }

    /// Runs the server with this TOML config file, expecting it to refuse to start:
    /// its exit status and what it printed.
    pub async fn refused_config(backend: Backend, toml: &str) -> (std::process::ExitStatus, String) {
        let server = TestServer::prepared(backend).await;
        let config = server.config_file(toml);
        let run = server.command(&["--config", &config]).output();
        let output = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the server exits within 30 s")
            .expect("the server runs");
        let printed = [output.stdout, output.stderr].concat();
        (output.status, String::from_utf8_lossy(&printed).into_owned())
    }

    /// A server with a database and scratch folder of its own, not started yet.
    async fn prepared(backend: Backend) -> TestServer {
        match backend {
            Backend::Sqlite => {
                let scratch = scratch_folder(&uuid::Uuid::new_v4().simple().to_string());
                let database_url = format!("sqlite://{}", scratch.join("switchyard.db").display());
                TestServer::new(database_url, scratch, None)
            }
            Backend::Postgres => TestServer::prepared_on(&postgres_server()).await,
        }
    }

    /// A server with a new database on the PostgreSQL server at `server`, not started yet.
    async fn prepared_on(server: &str) -> TestServer {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let scratch = scratch_folder(&run_id);
        let database = format!("switchyard_it_{run_id}");
        let mut admin =
            sqlx::PgConnection::connect(&format!("{server}/postgres")).await.unwrap_or_else(|err| {
                panic!("PostgreSQL answers at {server} (set SWITCHYARD_TEST_POSTGRES otherwise): {err}")
            });
        sqlx::query(&format!("CREATE DATABASE {database}")).execute(&mut admin).await.expect("create db");
        TestServer::new(format!("{server}/{database}"), scratch, Some((server.to_owned(), database)))
    }

    /// A second server process on this one's database, with its flags, as another host
    /// would run: its own port, module cache and memory. Dropping it leaves the database alone.
    pub async fn another_host(&self) -> TestServer {
        let scratch = scratch_folder(&uuid::Uuid::new_v4().simple().to_string());
        let mut host = TestServer::new(self.database_url.clone(), scratch, None);
        // The same flags, config file included: hosts of one deployment share a config.
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        host.spawn(&flags).await;
        host
    }

    fn new(database_url: String, scratch: PathBuf, postgres: Option<(String, String)>) -> TestServer {
        let port = free_port();
        TestServer {
            base_url: format!("http://127.0.0.1:{port}"),
            database_url,
            child: None,
            port,
            client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client"),
            scratch,
            postgres,
            flags: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Stops the process (SIGKILL) and starts it again on the same database and port,
    /// with the same flags.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Starts the process again after [`TestServer::stop`], with the same flags.
    pub async fn start_again(&mut self) {
        let flags = self.flags.clone();
        self.spawn(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    }

    /// Runs one statement with one text parameter on this server's database, to set up
    /// the state a crash leaves behind; the rows it changed.
    pub async fn execute_sql(&self, sql: &str, parameter: &str) -> u64 {
        if let Some((server, database)) = self.postgres_database() {
            let mut connection =
                sqlx::PgConnection::connect(&format!("{server}/{database}")).await.expect("connect");
            sqlx::query(sql).bind(parameter).execute(&mut connection).await.expect("execute").rows_affected()
        } else {
            let mut connection = sqlx::SqliteConnection::connect(&self.database_url).await.expect("connect");
            sqlx::query(sql).bind(parameter).execute(&mut connection).await.expect("execute").rows_affected()
        }
    }

    /// The first column, as text, of the rows one query with one text parameter finds
    /// in this server's database: to see what the hosts keep there (leases, say).
    pub async fn query_texts(&self, sql: &str, parameter: &str) -> Vec<String> {
        // The server that created the database reads it straight from PostgreSQL (past
        // any proxy its hosts go through); another host reads it as it reaches it.
        let postgres = match self.postgres_database() {
            Some((server, database)) => Some(format!("{server}/{database}")),
            None => self.database_url.starts_with("postgres").then(|| self.database_url.clone()),
        };
        if let Some(url) = postgres {
            let mut connection = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::query_scalar(sql).bind(parameter).fetch_all(&mut connection).await.expect("query")
        } else {
            let mut connection = sqlx::SqliteConnection::connect(&self.database_url).await.expect("connect");
            sqlx::query_scalar(sql).bind(parameter).fetch_all(&mut connection).await.expect("query")
        }
    }

    /// Stops the process as an operator would (SIGTERM) and waits for it to exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running server");
        let pid = child.id().expect("a pid").to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the server stops within 30 s of SIGTERM")
            .expect("wait")
    }

    /// The port it listens on (kept across restarts), which its default `host_id`
    /// (`HOSTNAME:PORT`) ends with.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes the process (SIGSTOP), as a host stalls: a long GC-like pause, a VM
    /// migrated, a disk that hangs. [`TestServer::resume`] lets it go on.
    pub async fn pause(&self) {
        self.signal("-STOP").await;
    }

    pub async fn resume(&self) {
        self.signal("-CONT").await;
    }

    async fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("a running server").to_string();
        let sent = Command::new("kill").args([signal, &pid]).status().await.expect("kill");
        assert!(sent.success(), "kill {signal} {pid}");
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts a server with these `serve` flags that must refuse to start: waits for
    /// it to exit with a failure, and returns what it logged.
    pub async fn start_refused(backend: Backend, flags: &[&str]) -> String {
        let mut server = TestServer::prepared(backend).await;
        server.launch(flags);
        let mut child = server.child.take().expect("a started server");
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the server exits within 30 s")
            .expect("wait");
        assert!(!status.success(), "the server should have refused to start; log:\n{}", server.log());
        server.log()
    }

    async fn spawn(&mut self, flags: &[&str]) {
        self.launch(flags);
        for _ in 0..300 {
            if let Ok(response) = self.client.get(format!("{}/healthz", self.base_url)).send().await
                && response.status().is_success()
            {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the server exited with {status}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server did not become healthy in 30 s; log:\n{}", self.log());
    }

    /// Starts the process, listening on this server's port unless `flags` say otherwise.
    fn launch(&mut self, flags: &[&str]) {
        self.flags = flags.iter().map(|flag| flag.to_string()).collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scratch.join("server.log"))
            .expect("log file");
        let child = self
            .command(flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start the server: {err}; run `cargo xtask test`"));
        self.child = Some(child);
    }

    /// `switchyard serve` on this server's port, database and module cache, with `flags`.
    fn command(&self, flags: &[&str]) -> Command {
        let mut command = Command::new(super::binary());
        command
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--database",
                &self.database_url,
            ])
            .arg("--module-cache")
            .arg(self.module_cache())
            .args(flags)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env("RUST_LOG", "info,sqlx=warn");
        command
    }

    /// Where this server keeps compiled modules.
    pub fn module_cache(&self) -> PathBuf {
        self.scratch.join("modules")
    }

    /// Waits until the log satisfies `holds`, for at most 30 s; returns it. The server
    /// writes its lines from a thread of its own, a moment after they are logged.
    pub async fn wait_for_log(&self, holds: impl Fn(&str) -> bool) -> String {
        for _ in 0..3000 {
            let log = self.log();
            if holds(&log) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the log never showed what was expected within 30 s; log:\n{}", self.log());
    }

    /// What the server logged so far (plain text: its stderr is no terminal).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.join("server.log")).unwrap_or_default()
    }

    /// Sends a request; `headers` are extra (name, value) pairs.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Response {
        let mut request = self.client.request(method, format!("{}{path}", self.base_url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap_or_else(|err| panic!("{path}: {err}"));
        Response {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("response body").to_vec(),
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, &[], None).await
    }

    /// POSTs `body` as JSON with an `Idempotency-Key`.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Response {
        let body = serde_json::to_vec(body).expect("json");
        self.request(
            Method::POST,
            path,
            &[("idempotency-key", key), ("content-type", "application/json")],
            Some(body),
        )
        .await
    }

    pub async fn deploy(&self, wasm: Vec<u8>) -> Response {
        self.request(Method::POST, "/v1/definitions", &[("content-type", "application/wasm")], Some(wasm))
            .await
    }

    /// The value of `name` in `GET /metrics` (0 if it is not listed).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = String::from_utf8(self.get("/metrics").await.expect(200).body).expect("utf-8");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The sum of the series of `name` in `GET /metrics` that carry every one of
    /// `labels` (0 if none does).
    pub async fn metric_where(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = String::from_utf8(self.get("/metrics").await.expect(200).body).expect("utf-8");
        text.lines()
            .filter_map(|line| {
                let (series, value) = line.strip_prefix(name)?.strip_prefix('{')?.split_once("} ")?;
                let pairs: Vec<&str> = series.split(',').collect();
                let all = labels
                    .iter()
                    .all(|(label, wanted)| pairs.contains(&format!("{label}=\"{wanted}\"").as_str()));
                all.then(|| value.trim().parse::<f64>().ok()).flatten()
            })
            .sum()
    }

    /// Waits until metric `name` satisfies `holds`, for at most 30 s; returns its value.
    pub async fn wait_for_metric(&self, name: &str, holds: impl Fn(f64) -> bool) -> f64 {
        for _ in 0..3000 {
            let value = self.metric(name).await;
            if holds(value) {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} never reached the expected value within 30 s; log:\n{}", self.log());
    }

    /// Replaces the content of the config file this server was started with (its
    /// `--config`), for its next start.
    pub fn rewrite_config(&self, toml: &str) {
        let path =
            self.flags.iter().skip_while(|flag| *flag != "--config").nth(1).expect("started with --config");
        std::fs::write(path, toml).expect("config file");
    }

    /// A config file for this server's next start, kept in its scratch folder.
    pub fn config_file(&self, toml: &str) -> String {
        let path = self.scratch.join(format!("config-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, toml).expect("config file");
        path.display().to_string()
    }

    /// The PostgreSQL server URL and this server's database on it, if it has one.
    pub fn postgres_database(&self) -> Option<(&str, &str)> {
        self.postgres.as_ref().map(|(server, database)| (server.as_str(), database.as_str()))
    }

    /// Ends every PostgreSQL session on this server's database, as a restart of
    /// PostgreSQL or a failover would; how many there were.
    pub async fn end_database_sessions(&self) -> i64 {
        let (server, database) =
            self.postgres.as_ref().expect("a server on a PostgreSQL database of its own");
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await.expect("connect");
        sqlx::query_scalar("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .fetch_one(&mut admin)
            .await
            .expect("terminate the sessions")
    }

    /// The instance once it is finished, waiting on long-polls (at most 30 s).
    pub async fn finished(&self, id: &str) -> Value {
        self.wait_until(id, |instance| instance["status"] != "running").await
    }

    /// The instance once `holds` is true of it, waiting on long-polls (at most 30 s).
    pub async fn wait_until(&self, id: &str, holds: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/v1/instances/{id}");
        let started = std::time::Instant::now();
        let mut instance = self.get(&path).await.expect(200).json();
        while !holds(&instance) {
            assert!(started.elapsed() < Duration::from_secs(30), "not there after 30 s: {instance}");
            let etag = format!("\"{}\"", instance["revision"]);
            let headers = [("if-none-match", etag.as_str()), ("prefer", "wait=5")];
            let polled = self.request(Method::GET, &path, &headers, None).await;
            if polled.status == 200 {
                instance = polled.json();
            }
        }
        instance
    }

    /// `(trigger kind, trigger name, to_state)` of every history entry of `id`.
    pub async fn steps(&self, id: &str) -> Vec<(String, String, String)> {
        let history = self.get(&format!("/v1/instances/{id}/history")).await.expect(200).json();
        let text = |entry: &Value, field: &str| {
            entry.pointer(field).and_then(Value::as_str).unwrap_or_default().to_owned()
        };
        history["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|entry| {
                (text(entry, "/trigger/kind"), text(entry, "/trigger/name"), text(entry, "/to_state"))
            })
            .collect()
    }

    /// `POST /v1/admin/instances/{id}/{verb}` (`cancel`, `force-complete`) with `body`.
    pub async fn admin(&self, id: &str, verb: &str, body: Value) -> Response {
        let body = serde_json::to_vec(&body).expect("json");
        self.request(Method::POST, &format!("/v1/admin/instances/{id}/{verb}"), &[], Some(body)).await
    }

    /// Creates an instance of `definition` and returns its body.
    pub async fn create(&self, definition: &str, input: Value) -> Value {
        self.create_answer(definition, input).await.expect(201).json()
    }

    /// Asks for an instance of `definition` with a fresh key; what the server answered.
    pub async fn create_answer(&self, definition: &str, input: Value) -> Response {
        let key = uuid::Uuid::new_v4().to_string();
        let path = format!("/v1/definitions/{definition}/instances");
        self.post(&path, &key, &serde_json::json!({ "input": input })).await
    }

    /// Runs `action` on instance `id` with a fresh key.
    pub async fn act(&self, id: &str, action: &str, payload: Value) -> Response {
        let key = uuid::Uuid::new_v4().to_string();
        self.post(
            &format!("/v1/instances/{id}/actions/{action}"),
            &key,
            &serde_json::json!({ "payload": payload }),
        )
        .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
        if let Some((server, database)) = self.postgres.take() {
            // Drop runs inside the test's runtime: drop the database from a thread of its own.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async {
                    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await?;
                    Ok::<_, sqlx::Error>(())
                })?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            });
            if let Ok(Err(err)) = dropped.join() {
                eprintln!("could not drop test database: {err}");
            }
        }
    }
}

pub(super) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}
