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
const SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;";

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
        self.readers.lock().clear();
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
    connection.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
    Ok(connection)
}

/// Connections that read, lent on the caller's thread.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn read<R>(&self, work: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let idle = self.lock().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => open(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
        };
        let out = work(&connection);
        let mut idle = self.lock();
        if idle.len() < IDLE_READERS {
            idle.push(connection);
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
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
        job(self)
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

/// The statement, prepared once and kept, with `args` bound. SQLite takes `$N` for
/// a named parameter and numbers parameters by first appearance; each is bound by its
/// N instead, so a statement may use `$1` after `$2`, or twice.
fn prepare<'c>(
    connection: &'c Connection,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<rusqlite::CachedStatement<'c>> {
    let mut statement = connection.prepare_cached(sql)?;
    for index in 1..=statement.parameter_count() {
        let arg = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$')?.parse::<usize>().ok())
            .and_then(|number| args.get(number.checked_sub(1)?))
            .ok_or_else(|| Error::Corrupt(format!("no value for parameter {index} of: {sql}")))?;
        statement.raw_bind_parameter(index, arg)?;
    }
    Ok(statement)
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
