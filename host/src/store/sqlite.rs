//! The SQLite backend: one thread owns the only connection that writes; reads run on
//! the caller's thread, on connections of their own.
//!
//! SQLite has one write lock per file. A thread that owns the one writing connection
//! takes every write in turn, the commit batches ([`super::group_commit`]) and the
//! lone writes between them, so nothing in this process ever waits on the lock, and
//! the fsync of every write stays off the runtime's threads. A write costs one
//! hand-over to that thread and back, a batch of commits one for the whole batch.
//!
//! A read is answered from the page cache in microseconds, less than a hand-over to
//! another thread costs, so it runs where it is asked for, on a connection taken from
//! a list (WAL: readers never wait for the writer).

use super::backend::{Arg, Backend, Col, Decode, End, Row, WriteTx, Writer};
use super::group_commit::Committer;
use super::{Error, Result};
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Every connection: WAL, so readers never wait for the writer; FULL, so a transition
/// is acknowledged only once it is on disk.
const SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;";

/// Statement shapes kept prepared per connection: each kind of row statement in every
/// chunk size, on the writer.
const PREPARED_STATEMENTS: usize = 128;

/// Reading connections kept open when idle; more are opened while more threads read.
const IDLE_READERS: usize = 16;

/// What the writer thread runs between batches.
pub(super) type Job = Box<dyn FnOnce(&mut Connection) + Send>;

#[derive(Debug)]
pub(super) struct Sqlite {
    pub(super) committer: Committer<Job>,
    readers: Readers,
}

impl Sqlite {
    /// Opens (or creates) the database file at `path`, brings its schema up to date and
    /// starts the writer thread.
    pub(super) fn open(path: &Path) -> Result<Sqlite> {
        let mut writer = open(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        migrate(&mut writer, &sqlx::migrate!("migrations/sqlite"))?;
        // Read back, so that the log shows what commits really run under.
        let journal_mode: String = writer.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        let synchronous = match writer.query_row("PRAGMA synchronous", [], |row| row.get::<_, i64>(0))? {
            0 => "off",
            1 => "normal",
            2 => "full",
            _ => "extra",
        };
        tracing::info!(path = %path.display(), journal_mode, synchronous, "sqlite store opened");
        Ok(Sqlite {
            committer: Committer::spawn_thread(writer)?,
            readers: Readers { path: path.to_owned(), idle: Mutex::default() },
        })
    }

    /// Runs `work` on the writer thread, in its turn.
    async fn write<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.committer
            .submit(Box::new(move |connection| {
                // The caller may have gone; what was written stands regardless.
                let _ = done.send(work(connection));
            }))
            .await?;
        outcome.await.map_err(|_| Error::CommitterStopped)?
    }

    /// Runs `work` in a write transaction on the writer thread; it is committed if
    /// `work` says so.
    pub(super) async fn transaction<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Transaction<'_>) -> Result<End<R>> + Send + 'static,
    ) -> Result<R> {
        self.write(move |connection| {
            let mut tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            match work(&mut tx)? {
                End::Commit(out) => {
                    tx.commit()?;
                    Ok(out)
                }
                // Dropped: rolled back.
                End::Rollback(out) => Ok(out),
            }
        })
        .await
    }
}

impl Backend for Sqlite {
    async fn fetch_all<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        self.readers.read(|connection| query(connection, sql, args, decode))
    }

    async fn scan<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        self.readers.scan(|connection| query(connection, sql, args, decode))
    }

    async fn write_all<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        let (sql, args) = owned(sql, args);
        self.write(move |connection| query(connection, &sql, &args, decode)).await
    }

    async fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let (sql, args) = owned(sql, args);
        self.write(move |connection| Ok(prepare(connection, &sql, &args)?.raw_execute()? as u64)).await
    }

    async fn ready(&self) -> Result<()> {
        self.readers.read(|connection| Ok(connection.query_row("SELECT 1", [], |_| Ok(()))?))?;
        self.write(|connection| {
            // Give up on the write lock (held by another process) well within the
            // probe's time.
            connection.busy_timeout(Duration::from_secs(1))?;
            let probe =
                connection.execute_batch("BEGIN IMMEDIATE; DELETE FROM idempotency_keys WHERE 1 = 0;");
            let _ = connection.execute_batch("ROLLBACK");
            connection.busy_timeout(BUSY_TIMEOUT)?;
            Ok(probe?)
        })
        .await
    }

    async fn close(&self) {
        // The writer closes last: the last connection to close checkpoints the WAL
        // into the file and deletes it, which a read-only one cannot.
        self.readers.close();
        self.committer.close().await;
    }
}

/// How long a connection waits for the write lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn owned(sql: &str, args: &[Arg<'_>]) -> (String, Vec<Arg<'static>>) {
    (sql.to_owned(), args.iter().cloned().map(Arg::into_owned).collect())
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let connection = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    connection.execute_batch(SETUP)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
    Ok(connection)
}

/// Connections that read, lent on the caller's thread.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Idle>,
}

#[derive(Debug, Default)]
struct Idle {
    connections: Vec<Connection>,
    /// The store closed: no connection is opened or kept any more.
    closed: bool,
}

impl Readers {
    fn read<R>(&self, work: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let idle = {
            let mut idle = self.lock();
            if idle.closed {
                return Err(Error::CommitterStopped);
            }
            idle.connections.pop()
        };
        let connection = match idle {
            Some(connection) => connection,
            None => open(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
        };
        let out = work(&connection);
        let mut idle = self.lock();
        if !idle.closed && idle.connections.len() < IDLE_READERS {
            idle.connections.push(connection);
        }
        out
    }

    /// A read that may run long (a scan, a large value): on a worker thread of the
    /// runtime, it first hands the thread's other tasks to another thread.
    fn scan<R>(&self, work: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread { tokio::task::block_in_place(|| self.read(work)) } else { self.read(work) }
    }

    /// Closes the idle connections, and every one lent as it comes back.
    fn close(&self) {
        let mut idle = self.lock();
        idle.closed = true;
        idle.connections.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // A poisoned lock means a panic elsewhere mid-push; the list itself is intact.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn query<T>(connection: &Connection, sql: &str, args: &[Arg<'_>], decode: Decode<T>) -> Result<Vec<T>> {
    let mut statement = prepare(connection, sql, args)?;
    let mut rows = statement.raw_query();
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        decoded.push(decode(row)?);
    }
    Ok(decoded)
}

/// Brings the schema up to date with `migrator`'s migrations, each in a transaction
/// of its own, recorded in sqlx's table, so that files written by earlier builds
/// (which ran them through sqlx) carry on.
fn migrate(connection: &mut Connection, migrator: &sqlx::migrate::Migrator) -> Result<()> {
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
             version BIGINT PRIMARY KEY,
             description TEXT NOT NULL,
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
             success BOOLEAN NOT NULL,
             checksum BLOB NOT NULL,
             execution_time BIGINT NOT NULL
         )",
    )?;
    for migration in migrator.iter() {
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied: Option<(Vec<u8>, bool)> = tx
            .query_row(
                "SELECT checksum, success FROM _sqlx_migrations WHERE version = ?1",
                [migration.version],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map(Some)
            .or_else(|err| if err == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(err) })?;
        match applied {
            Some((checksum, true)) if checksum == *migration.checksum => continue,
            Some(_) => {
                return Err(Error::Corrupt(format!(
                    "migration {} was changed after it was applied, or failed",
                    migration.version
                )));
            }
            None => {}
        }
        let started = std::time::Instant::now();
        tx.execute_batch(&migration.sql)?;
        Connection::execute(
            &tx,
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            rusqlite::params![
                migration.version,
                &*migration.description,
                &*migration.checksum,
                i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX)
            ],
        )?;
        tx.commit()?;
    }
    // A version this build does not know was applied by a newer one.
    let applied: Vec<(i64, bool)> = connection
        .prepare("SELECT version, success FROM _sqlx_migrations ORDER BY version")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (version, success) in applied {
        if !success || !migrator.iter().any(|migration| migration.version == version) {
            return Err(Error::Corrupt(format!(
                "migration {version} is not one of this build's, or failed: the database is of another build"
            )));
        }
    }
    Ok(())
}

// --- the writer thread -----------------------------------------------------------------

impl Writer for Connection {
    const SERIAL: bool = true;
    type Tx<'a> = rusqlite::Transaction<'a>;
    type Job = Job;

    async fn begin(&mut self) -> Result<Self::Tx<'_>> {
        Ok(self.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    fn run(&mut self, job: Job) {
        // A job that panics loses its own answer (its caller hears that the writer
        // stopped, and its transaction rolls back as it unwinds); the writer goes on.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(self))).is_err() {
            tracing::error!("a write on the SQLite writer thread panicked");
        }
    }
}

impl WriteTx for rusqlite::Transaction<'_> {
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        Ok(prepare(self, sql, args)?.raw_execute()? as u64)
    }

    async fn fetch_all<T>(&mut self, sql: &str, args: &[Arg<'_>], decode: Decode<T>) -> Result<Vec<T>> {
        query(self, sql, args, decode)
    }

    async fn commit(self) -> Result<()> {
        Ok(rusqlite::Transaction::commit(self)?)
    }

    async fn rollback(self) -> Result<()> {
        Ok(rusqlite::Transaction::rollback(self)?)
    }
}

/// The statement, prepared once and kept, with `args` bound. SQLite reads `$N` as a
/// name, numbering parameters by first appearance, and finds a name's number by a walk
/// of the list, which made binding a batch's hundreds of values quadratic; `?N` is
/// parameter N itself. So `$N` is written `?N` here, and each is bound by its N (a
/// statement may use `$1` after `$2`, or twice).
fn prepare<'c>(
    connection: &'c Connection,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<rusqlite::CachedStatement<'c>> {
    let mut statement = connection.prepare_cached(&numbered(sql))?;
    let count = statement.parameter_count();
    if count > args.len() {
        return Err(Error::Corrupt(format!("no value for parameter {count} of: {sql}")));
    }
    for (index, arg) in (1..=count).zip(args) {
        statement.raw_bind_parameter(index, arg)?;
    }
    Ok(statement)
}

/// `sql` with each `$N` written `?N`.
fn numbered(sql: &str) -> String {
    let mut numbered = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        numbered.push_str(&rest[..at]);
        let digits = rest[at + 1..].starts_with(|c: char| c.is_ascii_digit());
        numbered.push(if digits { '?' } else { '$' });
        rest = &rest[at + 1..];
    }
    numbered.push_str(rest);
    numbered
}

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            Arg::Int(int) => int.to_sql(),
            Arg::Text(Some(text)) => text.as_ref().to_sql(),
            Arg::Text(None) => Ok(ToSqlOutput::from(rusqlite::types::Null)),
            Arg::Blob(blob) => blob.as_ref().to_sql(),
        }
    }
}

impl Row for rusqlite::Row<'_> {
    fn opt_int(&self, col: Col<'_>) -> Result<Option<i64>> {
        match value(self, col)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(int) => Ok(Some(int)),
            _ => Err(mistyped(col, "an integer")),
        }
    }

    fn opt_text(&self, col: Col<'_>) -> Result<Option<String>> {
        match value(self, col)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(text) => {
                Ok(Some(String::from_utf8(text.to_vec()).map_err(|_| mistyped(col, "UTF-8 text"))?))
            }
            _ => Err(mistyped(col, "text")),
        }
    }

    fn opt_blob(&self, col: Col<'_>) -> Result<Option<Vec<u8>>> {
        match value(self, col)? {
            ValueRef::Null => Ok(None),
            ValueRef::Blob(blob) | ValueRef::Text(blob) => Ok(Some(blob.to_vec())),
            _ => Err(mistyped(col, "a blob")),
        }
    }
}

fn value<'r>(row: &'r rusqlite::Row<'_>, col: Col<'_>) -> Result<ValueRef<'r>> {
    Ok(match col {
        Col::Name(name) => row.get_ref(name)?,
        Col::Index(index) => row.get_ref(index)?,
    })
}

fn mistyped(col: Col<'_>, expected: &str) -> Error {
    Error::Corrupt(format!("column {col} is not {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_a_newer_builds_file_is_refused() -> Result<()> {
        let mut connection = Connection::open_in_memory()?;
        let migrator = sqlx::migrate!("migrations/sqlite");
        migrate(&mut connection, &migrator)?;
        // Again: nothing to do.
        migrate(&mut connection, &migrator)?;
        connection.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99990101000000, 'from a newer build', TRUE, x'00', 0)",
            [],
        )?;
        let refused = migrate(&mut connection, &migrator);
        assert!(
            matches!(&refused, Err(Error::Corrupt(why)) if why.contains("99990101000000")),
            "{refused:?}"
        );
        Ok(())
    }

    #[test]
    fn parameters_are_numbered_as_written() {
        assert_eq!(
            numbered("SELECT $2, $1 WHERE a = '$' AND b = $10"),
            "SELECT ?2, ?1 WHERE a = '$' AND b = ?10"
        );
    }

    #[test]
    fn a_parameter_is_bound_by_its_number_wherever_it_appears() -> Result<()> {
        let connection = Connection::open_in_memory()?;
        let args = [Arg::from(7), Arg::from("x")];
        let mut statement = prepare(&connection, "SELECT $2 || $1 || $2 AS value", &args)?;
        let mut rows = statement.raw_query();
        let row = rows.next()?.ok_or_else(|| Error::Corrupt("no row".into()))?;
        assert_eq!((row as &dyn Row).text("value")?, "x7x");
        Ok(())
    }
}
