//! What commit batches are written through: one small interface over sqlx's pools
//! (PostgreSQL) and over a plain SQLite connection that the committer owns.
//!
//! sqlx runs each SQLite connection on a thread of its own, so every statement is a
//! hand-off to that thread and back: two thread wake-ups, each tens of microseconds,
//! and a batch is BEGIN, three or four statements and COMMIT. The SQLite committer
//! instead owns its connection and writes a whole batch on its own thread, which costs
//! one hand-off per batch (the callers' queue). The statements, the batching and the
//! failure handling are written once, against [`Writer`] and [`WriteTx`]; on SQLite
//! their futures finish without ever waiting.

use super::{Error, Result};
use rusqlite::types::{ToSql, ToSqlOutput};
use sqlx::any::AnyArguments;
use sqlx::{AnyPool, Row};
use std::borrow::Cow;
use std::path::Path;

/// A value for a statement's `$N`. Typed even when null, as PostgreSQL needs.
#[derive(Debug, Clone)]
pub(super) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<Cow<'a, str>>),
    Blob(&'a [u8]),
}

/// A database that commit batches are written to.
pub(super) trait Writer {
    /// Whether the database itself runs one write transaction at a time (SQLite), so
    /// that the order rows are inserted in is the order commits become visible in.
    const SERIAL: bool;

    type Tx<'a>: WriteTx
    where
        Self: 'a;

    /// Opens a transaction that may write.
    async fn begin(&mut self) -> Result<Self::Tx<'_>>;
}

/// An open transaction; dropped without [`WriteTx::commit`], it is rolled back.
pub(super) trait WriteTx {
    /// Runs one statement; how many rows it changed.
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64>;

    /// Runs a query whose rows are two text columns.
    async fn fetch_pairs(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<(String, String)>>;

    async fn commit(self) -> Result<()>;

    async fn rollback(self) -> Result<()>;
}

// --- sqlx (PostgreSQL) -----------------------------------------------------------------

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, AnyArguments<'q>>;

impl Writer for AnyPool {
    const SERIAL: bool = false;
    type Tx<'a> = super::Tx<'static>;

    async fn begin(&mut self) -> Result<Self::Tx<'_>> {
        // Nothing is written before BEGIN succeeds: a connection found dead by it is
        // replaced and BEGIN sent again.
        match sqlx::Pool::begin(self).await {
            Err(err) if super::lost_connection(&err) => Ok(sqlx::Pool::begin(self).await?),
            other => Ok(other?),
        }
    }
}

impl WriteTx for super::Tx<'_> {
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        Ok(bind(sqlx::query(sql), args).execute(&mut **self).await?.rows_affected())
    }

    async fn fetch_pairs(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<(String, String)>> {
        let rows = bind(sqlx::query(sql), args).fetch_all(&mut **self).await?;
        Ok(rows
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn commit(self) -> Result<()> {
        Ok(sqlx::Transaction::commit(self).await?)
    }

    async fn rollback(self) -> Result<()> {
        Ok(sqlx::Transaction::rollback(self).await?)
    }
}

fn bind<'q>(query: Query<'q>, args: &'q [Arg<'_>]) -> Query<'q> {
    args.iter().fold(query, |query, arg| match arg {
        Arg::Int(int) => query.bind(*int),
        Arg::Text(text) => query.bind(text.as_deref()),
        Arg::Blob(blob) => query.bind(*blob),
    })
}

// --- SQLite, on the committer's own thread ---------------------------------------------

/// Statement shapes kept prepared: each kind of row statement in every chunk size.
const PREPARED_STATEMENTS: usize = 128;

/// Opens the committer's connection to the database file that sqlx created, with the
/// same settings as every other SQLite connection of the store.
pub(super) fn open_sqlite(path: &Path) -> Result<rusqlite::Connection> {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    connection.execute_batch(super::SQLITE_SETUP)?;
    connection.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
    // Read back, so that the log shows what commits really run under.
    let journal_mode: String = connection.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    let synchronous = match connection.query_row("PRAGMA synchronous", [], |row| row.get::<_, i64>(0))? {
        0 => "off",
        1 => "normal",
        2 => "full",
        _ => "extra",
    };
    tracing::info!(path = %path.display(), journal_mode, synchronous, "sqlite store opened");
    Ok(connection)
}

impl Writer for rusqlite::Connection {
    const SERIAL: bool = true;
    type Tx<'a> = rusqlite::Transaction<'a>;

    async fn begin(&mut self) -> Result<Self::Tx<'_>> {
        // Take the write lock now, waiting out other writers (busy_timeout): a
        // transaction that read first could not take it later once another
        // connection had written.
        Ok(self.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }
}

impl WriteTx for rusqlite::Transaction<'_> {
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let mut statement = prepare(self, sql, args)?;
        Ok(statement.raw_execute()? as u64)
    }

    async fn fetch_pairs(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<(String, String)>> {
        let mut statement = prepare(self, sql, args)?;
        let mut rows = statement.raw_query();
        let mut pairs = Vec::new();
        while let Some(row) = rows.next()? {
            pairs.push((row.get(0)?, row.get(1)?));
        }
        Ok(pairs)
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
    connection: &'c rusqlite::Connection,
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
            Arg::Blob(blob) => blob.to_sql(),
        }
    }
}

/// Whether `err` is a unique-constraint violation, on either backend.
pub(super) fn unique_violation(err: &Error) -> bool {
    match err {
        Error::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => {
            failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        }
        Error::Db(sqlx::Error::Database(db)) => db.is_unique_violation(),
        _ => false,
    }
}

// --- conversions for the binders -------------------------------------------------------

impl From<i64> for Arg<'_> {
    fn from(int: i64) -> Self {
        Arg::Int(Some(int))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(int: Option<i64>) -> Self {
        Arg::Int(int)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(text: Option<&'a str>) -> Self {
        Arg::Text(text.map(Cow::Borrowed))
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(text: &'a str) -> Self {
        Arg::Text(Some(Cow::Borrowed(text)))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(text: &'a String) -> Self {
        Arg::Text(Some(Cow::Borrowed(text)))
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(text: &'a Option<String>) -> Self {
        Arg::Text(text.as_deref().map(Cow::Borrowed))
    }
}

impl From<String> for Arg<'_> {
    fn from(text: String) -> Self {
        Arg::Text(Some(Cow::Owned(text)))
    }
}

impl From<Option<String>> for Arg<'_> {
    fn from(text: Option<String>) -> Self {
        Arg::Text(text.map(Cow::Owned))
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(blob: &'a [u8]) -> Self {
        Arg::Blob(blob)
    }
}
