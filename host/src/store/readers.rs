//! Connections for the reads on the hot path: the instance and idempotency lookups
//! every request makes.
//!
//! sqlx's pool pings each connection as it comes back, to find out whether a
//! cancelled query left it mid-protocol; that ping is a round trip per read (to the
//! SQLite thread, or to PostgreSQL). These connections are lent without it: one
//! whose query was cancelled, or failed on the connection itself, is closed instead
//! of being lent again, and one that sat idle is pinged first, as the pools do
//! ([`super::PING_WHEN_IDLE`]).

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{AnyConnection, Connection, Executor};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, AnyArguments<'q>>;

/// How long a read waits for a connection (a free one, or a new one opened), as
/// sqlx's pools do: a database that stops answering fails reads instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(super) struct Readers {
    url: String,
    /// Run on every new connection.
    setup: Option<&'static str>,
    /// With the time each was put back.
    idle: Mutex<Vec<(AnyConnection, Instant)>>,
    /// One per connection that may exist.
    permits: Semaphore,
}

impl Readers {
    pub(super) fn new(url: String, size: usize, setup: Option<&'static str>) -> Readers {
        Readers { url, setup, idle: Mutex::default(), permits: Semaphore::new(size) }
    }

    /// Runs `query` (built anew for a second try on a fresh connection, should the
    /// first connection turn out dead).
    pub(super) async fn fetch_optional<'q>(
        &self,
        query: impl Fn() -> Query<'q>,
    ) -> Result<Option<AnyRow>, sqlx::Error> {
        match self.try_fetch_optional(query()).await {
            Err(err) if super::lost_connection(&err) => self.try_fetch_optional(query()).await,
            other => other,
        }
    }

    async fn try_fetch_optional(&self, query: Query<'_>) -> Result<Option<AnyRow>, sqlx::Error> {
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
            Ok::<_, sqlx::Error>((permit, connection))
        });
        let (_permit, mut connection) = acquired.await.map_err(|_| sqlx::Error::PoolTimedOut)??;
        // Should this future be dropped mid-query, the connection is dropped with it.
        let row = query.fetch_optional(&mut connection).await;
        // A row, no row, or the database's verdict on the statement: the connection
        // itself is fine.
        if matches!(row, Ok(_) | Err(sqlx::Error::Database(_) | sqlx::Error::ColumnDecode { .. })) {
            self.lock().push((connection, Instant::now()));
        }
        row
    }

    async fn connect(&self) -> Result<AnyConnection, sqlx::Error> {
        let mut connection = AnyConnection::connect(&self.url).await?;
        if let Some(setup) = self.setup {
            connection.execute(setup).await?;
        }
        Ok(connection)
    }

    pub(super) async fn close(&self) {
        self.permits.close();
        let idle = std::mem::take(&mut *self.lock());
        for (connection, _) in idle {
            let _ = connection.close().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(AnyConnection, Instant)>> {
        // A poisoned lock means a panic elsewhere mid-push; the list itself is intact.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
