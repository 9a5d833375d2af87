//! A PostgreSQL cluster of the test's own, made with `initdb` in a temporary folder,
//! that the test may stop and start again: the machine's PostgreSQL is shared and must
//! never be restarted. Dropping it stops it (`-m immediate`) and deletes the folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long `pg_ctl` may wait for the server to start or stop (its `-t`, in seconds).
const PG_CTL_TIMEOUT_S: &str = "15";

#[derive(Debug)]
pub struct PrivatePostgres {
    /// `postgres://postgres@127.0.0.1:PORT`: where [`super::TestServer`] creates databases.
    pub url: String,
    /// Owned by the `postgres` user: the data folder, the socket and the server's log.
    folder: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// Makes a cluster and starts it on a free port of 127.0.0.1, with no durability to
    /// pay for (`fsync` and full pages off: it is thrown away).
    pub async fn start() -> PrivatePostgres {
        let bin = binaries();
        let folder = std::env::temp_dir().join(format!("switchyard-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&folder).expect("a folder for the private cluster");
        // Tests run as root and `initdb` refuses root: the cluster belongs to `postgres`.
        let mut chown = Command::new("chown");
        chown.arg("postgres:postgres").arg(&folder);
        run("chown", chown).await;
        let port = super::server::free_port();
        let cluster =
            PrivatePostgres { url: format!("postgres://postgres@127.0.0.1:{port}"), folder, bin, port };
        let initdb = cluster.bin.join("initdb");
        let data = cluster.data();
        let mut init = Command::new("runuser");
        init.args(["-u", "postgres", "--"]).arg(&initdb).arg("-D").arg(&data);
        init.args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        run("initdb", init).await;
        cluster.start_again().await;
        cluster
    }

    /// Stops the server as an operator restarting it does (`-m fast`: sessions ended,
    /// a clean shutdown), and waits until it is down.
    pub async fn stop(&self) {
        run("pg_ctl stop", self.pg_ctl(&["-m", "fast", "stop"])).await;
    }

    /// Starts the server (again, after [`PrivatePostgres::stop`]: the same port and
    /// data), and waits until it accepts connections.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.folder.display()
        );
        let log = self.folder.join("postgres.log");
        let mut start = self.pg_ctl(&["-o", &options, "-l"]);
        start.arg(log).arg("start");
        run("pg_ctl start", start).await;
    }

    fn data(&self) -> PathBuf {
        self.folder.join("data")
    }

    /// `pg_ctl -D DATA -w -t …` as `postgres`, with `args`.
    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl")).arg("-D").arg(self.data());
        command.args(["-w", "-t", PG_CTL_TIMEOUT_S]).args(args);
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // `pg_ctl -t` bounds the wait; the server may be down already.
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// The `bin` folder of the newest PostgreSQL installed under `/usr/lib/postgresql`.
fn binaries() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse::<u32>().ok()?, entry.path())))
        .filter(|(_, path)| path.join("bin/initdb").is_file() && path.join("bin/pg_ctl").is_file())
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, path)) => path.join("bin"),
        None => panic!(
            "no PostgreSQL server binaries (initdb, pg_ctl) under {}/<version>/bin: \
             install the postgresql package to run a private cluster",
            root.display()
        ),
    }
}

/// Runs `command` for at most a minute and asserts that it succeeded.
async fn run(what: &str, command: Command) {
    let mut command = tokio::process::Command::from(command);
    let output = tokio::time::timeout(Duration::from_secs(60), command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
        .unwrap_or_else(|err| panic!("{what} did not run: {err}"));
    assert!(
        output.status.success(),
        "{what} failed with {}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
