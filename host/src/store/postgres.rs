//! The PostgreSQL backend: one pool of typed connections for reads, writes and the
//! committer.
//!
//! The pool is ours, not sqlx's: sqlx's pool pings every connection as it comes back
//! (to find one that a cancelled query left mid-protocol), a round trip per use. Here
//! a connection goes back only when what it ran finished, whatever the database said
//! of the statement; one whose future was dropped mid-query, or that failed on the
//! connection itself, is closed instead. One that sat idle is pinged before it is
//! lent ([`super::needs_ping`]).

use super::backend::{Arg, Backend, Col, Decode, End, Row, WriteTx, Writer};
use super::group_commit::Committer;
use super::notify::Notifier;
use super::{Error, Result};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgRow};
use sqlx::{Connection, Executor, Postgres as Pg};
use std::convert::Infallible;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};

/// A statement that waits longer than this for a row lock fails (and its commit is
/// retried) instead of stalling its host's commits behind another host's.
const SETUP: &str = "SET lock_timeout = '3s'";

/// Connections that may be open at once.
const CONNECTIONS: usize = 24;

/// How long a use waits for a connection (a free one, or a new one opened): a
/// database that stops answering fails requests instead of hanging them.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(super) struct Postgres {
    pub(super) committer: Committer<Infallible>,
    pub(super) notifier: Notifier,
    pub(super) url: String,
    pool: Arc<Pool>,
}

impl Postgres {
    /// Connects to the database at `url`, brings its schema up to date and starts the
    /// committer.
    pub(super) async fn connect(url: &str) -> Result<Postgres> {
        let pool = Arc::new(Pool {
            options: PgConnectOptions::from_str(url)?,
            idle: Mutex::default(),
            permits: Semaphore::new(CONNECTIONS),
        });
        {
            let mut lent = pool.acquire().await?;
            sqlx::migrate!("migrations/postgres").run(&mut lent.connection).await?;
            lent.give_back();
        }
        let notifier = Notifier::default();
        Ok(Postgres {
            committer: Committer::spawn(pool.clone(), notifier.clone()),
            notifier,
            url: url.to_owned(),
            pool,
        })
    }

    pub(super) async fn begin(&self) -> Result<PgTx<'_>> {
        Pool::begin(&self.pool).await
    }

    /// Ends a transaction as its work says.
    pub(super) async fn finish<R>(tx: PgTx<'_>, out: Result<End<R>>) -> Result<R> {
        match out {
            Ok(End::Commit(out)) => tx.commit().await.map(|()| out),
            Ok(End::Rollback(out)) => {
                // Rolled back either way: a connection lost meanwhile ends it too.
                let _ = tx.rollback().await;
                Ok(out)
            }
            Err(err) => {
                // Whatever the rollback meets, the statement's error is the news.
                let _ = tx.rollback().await;
                Err(err)
            }
        }
    }

    /// Runs `work` on a lent connection, and once more on another, should the first
    /// turn out dead (the database restarted since it was last used): for reads.
    async fn again_if_lost<T>(&self, sql: &str, args: &[Arg<'_>], decode: Decode<T>) -> Result<Vec<T>> {
        match self.pool.acquire().await?.fetch_all(sql, args, decode).await {
            Err(Error::Db(err)) if super::lost_connection(&err) => {
                self.pool.acquire().await?.fetch_all(sql, args, decode).await
            }
            other => other,
        }
    }
}

impl Backend for Postgres {
    async fn fetch_all<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        self.again_if_lost(sql, args, decode).await
    }

    async fn write_all<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        // Not repeated: a write whose connection was lost may have been made.
        self.pool.acquire().await?.fetch_all(sql, args, decode).await
    }

    async fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        self.pool.acquire().await?.execute(sql, args).await
    }

    async fn ready(&self) -> Result<()> {
        self.again_if_lost("SELECT CAST(1 AS BIGINT) AS one", &[], |row| row.int("one")).await?;
        // A connection of its own: a probe given up on mid-statement must not leave a
        // pooled connection behind in a transaction, and it shows that new connections
        // can be made.
        let mut connection = self.pool.connect().await?;
        connection.execute("BEGIN").await?;
        // Writes nothing, but is refused where writing is (a read-only transaction).
        connection.execute("DELETE FROM idempotency_keys WHERE 1 = 0").await?;
        connection.execute("ROLLBACK").await?;
        connection.close().await?;
        Ok(())
    }

    async fn close(&self) {
        self.committer.close().await;
        self.notifier.close();
        self.pool.permits.close();
        let idle = std::mem::take(&mut *self.pool.lock());
        for (connection, _) in idle {
            let _ = connection.close().await;
        }
    }
}

#[derive(Debug)]
pub(super) struct Pool {
    options: PgConnectOptions,
    /// With the time each was given back.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    /// One per connection that may be open.
    permits: Semaphore,
}

impl Pool {
    async fn acquire(&self) -> Result<Lent<'_>> {
        let acquired = tokio::time::timeout(ACQUIRE_TIMEOUT, async {
            let permit = self.permits.acquire().await.map_err(|_| sqlx::Error::PoolClosed)?;
            let idle = self.lock().pop();
            let connection = match idle {
                Some((mut connection, since)) => {
                    let alive = !super::needs_ping(since.elapsed()) || super::is_alive(&mut connection).await;
                    if alive { connection } else { self.connect().await? }
                }
                None => self.connect().await?,
            };
            Ok::<_, sqlx::Error>(Lent { pool: self, connection, _permit: permit, sound: true })
        });
        Ok(acquired.await.map_err(|_| sqlx::Error::PoolTimedOut)??)
    }

    async fn connect(&self) -> Result<PgConnection, sqlx::Error> {
        let mut connection = PgConnection::connect_with(&self.options).await?;
        connection.execute(SETUP).await?;
        Ok(connection)
    }

    /// Opens a transaction on a lent connection. Nothing is written before BEGIN
    /// succeeds: a connection found dead by it is replaced and BEGIN sent again.
    async fn begin(&self) -> Result<PgTx<'_>> {
        match self.acquire().await?.begin().await {
            Err(Error::Db(err)) if super::lost_connection(&err) => self.acquire().await?.begin().await,
            other => other,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PgConnection, Instant)>> {
        // A poisoned lock means a panic elsewhere mid-push; the list itself is intact.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection lent from the pool. Dropped, it is closed; [`Lent::give_back`] returns
/// it, unless a statement failed on the connection itself.
struct Lent<'p> {
    pool: &'p Pool,
    connection: PgConnection,
    _permit: SemaphorePermit<'p>,
    /// No statement failed on the connection itself.
    sound: bool,
}

impl<'p> Lent<'p> {
    fn give_back(self) {
        if self.sound {
            self.pool.lock().push((self.connection, Instant::now()));
        }
    }

    /// Notes whether `outcome` leaves the connection fit to be lent again: a result, or
    /// the database's verdict on the statement, does.
    fn check<T>(&mut self, outcome: Result<T, sqlx::Error>) -> Result<T> {
        if let Err(err) = &outcome {
            // The server may end a session with an error of its own (57P01, class 08).
            let verdict = matches!(err, sqlx::Error::Database(_) | sqlx::Error::ColumnDecode { .. });
            self.sound &= verdict && !super::lost_connection(err);
        }
        Ok(outcome?)
    }

    async fn execute(mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let done = bind(sqlx::query(sql), args).execute(&mut self.connection).await;
        let changed = self.check(done).map(|done| done.rows_affected());
        self.give_back();
        changed
    }

    async fn fetch_all<T>(mut self, sql: &str, args: &[Arg<'_>], decode: Decode<T>) -> Result<Vec<T>> {
        let rows = bind(sqlx::query(sql), args).fetch_all(&mut self.connection).await;
        let rows = self.check(rows);
        self.give_back();
        rows?.iter().map(|row| decode(row)).collect()
    }

    async fn begin(mut self) -> Result<PgTx<'p>> {
        let begun = self.connection.execute("BEGIN").await.map(drop);
        self.check(begun)?;
        Ok(PgTx { lent: self })
    }
}

/// A transaction on a lent connection. Dropped unfinished, its connection is closed,
/// which ends the transaction.
pub(super) struct PgTx<'p> {
    lent: Lent<'p>,
}

impl PgTx<'_> {
    async fn end(mut self, statement: &str) -> Result<()> {
        let ended = self.lent.connection.execute(statement).await.map(drop);
        let ended = self.lent.check(ended);
        self.lent.give_back();
        ended
    }
}

impl WriteTx for PgTx<'_> {
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let done = bind(sqlx::query(sql), args).execute(&mut self.lent.connection).await;
        self.lent.check(done).map(|done| done.rows_affected())
    }

    async fn fetch_all<T>(&mut self, sql: &str, args: &[Arg<'_>], decode: Decode<T>) -> Result<Vec<T>> {
        let rows = bind(sqlx::query(sql), args).fetch_all(&mut self.lent.connection).await;
        self.lent.check(rows)?.iter().map(|row| decode(row)).collect()
    }

    async fn commit(self) -> Result<()> {
        self.end("COMMIT").await
    }

    async fn rollback(self) -> Result<()> {
        self.end("ROLLBACK").await
    }
}

impl Writer for Arc<Pool> {
    const SERIAL: bool = false;
    type Tx<'a> = PgTx<'a>;
    type Job = Infallible;

    async fn begin(&mut self) -> Result<PgTx<'_>> {
        Pool::begin(self).await
    }

    fn run(&mut self, job: Infallible) {
        match job {}
    }
}

type Query<'q> = sqlx::query::Query<'q, Pg, PgArguments>;

fn bind<'q>(query: Query<'q>, args: &'q [Arg<'_>]) -> Query<'q> {
    args.iter().fold(query, |query, arg| match arg {
        Arg::Int(int) => query.bind(*int),
        Arg::Text(text) => query.bind(text.as_deref()),
        Arg::Blob(blob) => query.bind(blob.as_ref()),
    })
}

impl Row for PgRow {
    fn opt_int(&self, col: Col<'_>) -> Result<Option<i64>> {
        get(self, col)
    }

    fn opt_text(&self, col: Col<'_>) -> Result<Option<String>> {
        get(self, col)
    }

    fn opt_blob(&self, col: Col<'_>) -> Result<Option<Vec<u8>>> {
        get(self, col)
    }
}

fn get<'r, T>(row: &'r PgRow, col: Col<'_>) -> Result<Option<T>>
where
    T: sqlx::Decode<'r, Pg> + sqlx::Type<Pg>,
{
    use sqlx::Row as _;
    Ok(match col {
        Col::Name(name) => row.try_get(name)?,
        Col::Index(index) => row.try_get(index)?,
    })
}
