//! What the store asks of a database, and the two that answer it: SQLite
//! ([`super::sqlite`]) and PostgreSQL ([`super::postgres`]).
//!
//! Every statement is written once, in the SQL both accept (`$N` placeholders, ids
//! and JSON as text, times as epoch milliseconds), bound from [`Arg`]s and decoded
//! from a [`Row`]; the backends differ in how statements reach the database:
//! - SQLite: one thread owns the only connection that writes, and runs the commit
//!   batches and every other write in turn; reads run on the caller's thread, on
//!   connections of their own. No statement hops threads but a write's hand-over.
//! - PostgreSQL: one pool of typed connections for reads, writes and the committer.

use super::{Error, Result};
use std::borrow::Cow;

/// A value for a statement's `$N`. Typed even when null, as PostgreSQL needs.
#[derive(Debug, Clone)]
pub(super) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<Cow<'a, str>>),
    Blob(Cow<'a, [u8]>),
}

impl Arg<'_> {
    /// The same value, owning what it borrowed: for a write sent to another thread.
    pub(super) fn into_owned(self) -> Arg<'static> {
        match self {
            Arg::Int(int) => Arg::Int(int),
            Arg::Text(text) => Arg::Text(text.map(|text| Cow::Owned(text.into_owned()))),
            Arg::Blob(blob) => Arg::Blob(Cow::Owned(blob.into_owned())),
        }
    }
}

/// A column of a [`Row`], by name or by position.
#[derive(Debug, Clone, Copy)]
pub(super) enum Col<'a> {
    Name(&'a str),
    Index(usize),
}

impl<'a> From<&'a str> for Col<'a> {
    fn from(name: &'a str) -> Self {
        Col::Name(name)
    }
}

impl From<usize> for Col<'_> {
    fn from(index: usize) -> Self {
        Col::Index(index)
    }
}

impl std::fmt::Display for Col<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Col::Name(name) => f.write_str(name),
            Col::Index(index) => write!(f, "#{index}"),
        }
    }
}

/// A row a statement returned, as either backend hands it over.
pub(super) trait Row {
    fn opt_int(&self, col: Col<'_>) -> Result<Option<i64>>;
    fn opt_text(&self, col: Col<'_>) -> Result<Option<String>>;
    fn opt_blob(&self, col: Col<'_>) -> Result<Option<Vec<u8>>>;
}

impl dyn Row + '_ {
    pub(super) fn int<'c>(&self, col: impl Into<Col<'c>>) -> Result<i64> {
        let col = col.into();
        self.opt_int(col)?.ok_or_else(|| null(col))
    }

    pub(super) fn text<'c>(&self, col: impl Into<Col<'c>>) -> Result<String> {
        let col = col.into();
        self.opt_text(col)?.ok_or_else(|| null(col))
    }

    pub(super) fn blob<'c>(&self, col: impl Into<Col<'c>>) -> Result<Vec<u8>> {
        let col = col.into();
        self.opt_blob(col)?.ok_or_else(|| null(col))
    }

    pub(super) fn int_or_null<'c>(&self, col: impl Into<Col<'c>>) -> Result<Option<i64>> {
        self.opt_int(col.into())
    }

    pub(super) fn text_or_null<'c>(&self, col: impl Into<Col<'c>>) -> Result<Option<String>> {
        self.opt_text(col.into())
    }
}

fn null(col: Col<'_>) -> Error {
    Error::Corrupt(format!("column {col} is null"))
}

/// Turns a row into a value; a plain function, so that a read can be sent anywhere.
pub(super) type Decode<T> = fn(&dyn Row) -> Result<T>;

/// An open transaction; dropped without [`WriteTx::commit`], it is rolled back.
pub(super) trait WriteTx {
    /// Runs one statement; how many rows it changed.
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64>;

    /// Runs a query; its rows, decoded.
    async fn fetch_all<T>(&mut self, sql: &str, args: &[Arg<'_>], decode: Decode<T>) -> Result<Vec<T>>;

    async fn fetch_optional<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Option<T>> {
        Ok(self.fetch_all(sql, args, decode).await?.into_iter().next())
    }

    async fn commit(self) -> Result<()>;

    async fn rollback(self) -> Result<()>;
}

/// A database that commit batches are written to.
pub(super) trait Writer {
    /// Whether the database itself runs one write transaction at a time (SQLite), so
    /// that the order rows are inserted in is the order commits become visible in.
    const SERIAL: bool;

    type Tx<'a>: WriteTx
    where
        Self: 'a;

    /// Other work the committer runs between batches, in their turn (SQLite's writes).
    type Job: Send + 'static;

    /// Opens a transaction that may write.
    async fn begin(&mut self) -> Result<Self::Tx<'_>>;

    fn run(&mut self, job: Self::Job);
}

/// How a write transaction ends: committed, or rolled back (it decided to write
/// nothing after all, an idempotency key it claimed included).
pub(super) enum End<T> {
    Commit(T),
    Rollback(T),
}

/// The backends, behind one face: reads, lone writes, commits.
pub(super) trait Backend {
    /// Runs a query that writes nothing; its rows, decoded.
    async fn fetch_all<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>>;

    /// Like [`Backend::fetch_all`], for a read that may run long (a scan, a large value).
    async fn scan<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        self.fetch_all(sql, args, decode).await
    }

    /// Runs one statement that writes, in a transaction of its own; its rows, decoded.
    async fn write_all<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>>;

    /// Runs one statement that writes, in a transaction of its own; the rows changed.
    async fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64>;

    /// Whether a read can be made and a write transaction opened and written in.
    async fn ready(&self) -> Result<()>;

    /// Commits what is queued, then closes every connection.
    async fn close(&self);
}

/// Polls a future that never waits: what the SQLite writer's statements return.
pub(super) fn ready<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let future = std::pin::pin!(future);
    match future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => Err(Error::Corrupt("a SQLite write waited".into())),
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
        Arg::Blob(Cow::Borrowed(blob))
    }
}

impl From<Vec<u8>> for Arg<'_> {
    fn from(blob: Vec<u8>) -> Self {
        Arg::Blob(Cow::Owned(blob))
    }
}
