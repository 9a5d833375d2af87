//! Durable state: definitions, instances, history and idempotency records.
//!
//! One set of portable SQL statements runs on SQLite (embedded default) and PostgreSQL
//! through sqlx's `Any` driver: `$N` placeholders, ids and JSON as text, times as
//! epoch milliseconds. The backends differ only where their semantics do, and say so.
//!
//! Invariant: a transition's instance row, history entry and idempotency record are
//! written in one transaction ([`Store::commit`]), or not at all.

/// `read!(store, |pool| query.fetch_…(pool).await)`: runs a read on the store's read
/// pool, and once more should the connection turn out dead (the database restarted
/// since it was last used): a read can be repeated. A macro, not a function taking a
/// closure, so the futures stay `Send` without higher-ranked bounds.
macro_rules! read {
    ($store:expr, |$pool:ident| $query:expr) => {{
        let $pool = &$store.read;
        match $query {
            Err(err) if $crate::store::lost_connection(&err) => $query,
            other => other,
        }
    }};
}

mod artifacts;
mod effects;
mod events;
mod feed;
mod group_commit;
mod leases;
mod lifecycle;
mod notify;
mod readers;
mod rows;
mod transition;
mod writer;

pub use effects::Progress;
pub use lifecycle::{Deletion, Pinning, Retirement};
pub use notify::Heard;

use crate::model::{
    DefinitionVersion, Effect, HistoryEntry, IdempotencyKey, IdempotencyRecord, Instance, InstanceFilter,
    InstanceId, ModuleHash, PostedEvent, Revision, Status, Timestamp,
};
use readers::Readers;
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, Connection, Executor, Row};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The instance changed since the revision the caller computed from.
    #[error("the instance changed concurrently")]
    RevisionConflict,
    /// A row with this primary key exists already.
    #[error("already exists")]
    Duplicate,
    #[error("a stored row is malformed: {0}")]
    Corrupt(String),
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// An error of the SQLite committer's own connection.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// The transaction of a whole commit batch failed.
    #[error("database error")]
    Batch(#[source] std::sync::Arc<Error>),
    /// A COMMIT failed, and may have committed all the same.
    #[error("the commit's outcome is unknown")]
    Unconfirmed(#[source] std::sync::Arc<Error>),
    #[error("cannot start the committer")]
    Committer(#[source] std::io::Error),
    /// The store is closing, or its committer died.
    #[error("the committer has stopped")]
    CommitterStopped,
    #[error("the database did not answer in time")]
    Unresponsive,
    /// A posted event with this id is kept already.
    #[error("the event was received already")]
    EventDuplicate,
    /// An effect's key names another open effect of the instance.
    #[error("an effect key is used by another open effect of the instance")]
    EffectKeyInUse,
    /// The effect a transition consumed was closed meanwhile (its result delivered
    /// already, or cancelled).
    #[error("the effect is closed already")]
    EffectClosed,
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An operation's idempotency key is held by a live record: the operation was
    /// undone, and the kept response is the answer.
    #[error("the idempotency key is taken")]
    KeyTaken,
    /// A start or migration onto a version that was deleted or retired meanwhile.
    #[error("the version takes no new instances")]
    VersionGone,
    /// The lease a write was made under changed hands: another host works on it now.
    #[error("the lease was lost to another host")]
    LeaseLost,
}

impl Error {
    /// Whether this is the database's passing trouble — a deadlock, a serialization
    /// failure, a lock wait given up, a lost connection, a database restarting — from
    /// which nothing was committed: the same write may well succeed if made again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Db(err) => transient(err),
            Error::Batch(inner) => inner.is_transient(),
            _ => false,
        }
    }

    /// Whether the database could not be reached or failed for a moment, nothing
    /// written: a transient failure, or no connection to be had within the pool's wait
    /// (not retried: that wait was long already).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Db(sqlx::Error::PoolTimedOut) => true,
            Error::Batch(inner) => inner.is_unavailable(),
            other => other.is_transient(),
        }
    }

    /// Whether the change may or may not have been committed: its COMMIT failed.
    pub fn is_unconfirmed(&self) -> bool {
        match self {
            Error::Unconfirmed(_) => true,
            Error::Batch(inner) => inner.is_unconfirmed(),
            _ => false,
        }
    }
}

/// A serialization failure, a deadlock, a lock wait given up, or a lost connection.
fn transient(err: &sqlx::Error) -> bool {
    let conflict = |db: &dyn sqlx::error::DatabaseError| {
        db.code().is_some_and(|code| matches!(&*code, "40001" | "40P01" | "55P03"))
    };
    matches!(err, sqlx::Error::Database(db) if conflict(db.as_ref())) || lost_connection(err)
}

/// An idempotency record kept in its operation's own transaction, in place of one
/// created before `expired_before`.
#[derive(Debug, Clone, Copy)]
pub struct Keyed<'a> {
    pub record: &'a IdempotencyRecord,
    pub expired_before: Timestamp,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Store {
    /// Writes other than transitions, through [`Store::writing`]. On SQLite a pool of
    /// one connection; on PostgreSQL the same pool as `read`.
    write: AnyPool,
    /// How `write` begins a transaction: on SQLite by taking the write lock at once
    /// (see [`writer`]).
    begin_write: &'static str,
    /// The database, for connections of their own ([`Store::ready`]).
    url: String,
    /// Run on the readiness probe's connection: on SQLite, give up on the write lock
    /// well within [`READY_TIMEOUT`].
    probe_setup: Option<&'static str>,
    /// On SQLite, every write waits its turn here, the committer's batches included:
    /// SQLite has one write lock, and its own wait for it (`busy_timeout`) is neither
    /// fair nor unbounded. PostgreSQL locks rows instead.
    write_turn: Option<WriteTurn>,
    read: AnyPool,
    /// The lookups every request makes, on connections of their own.
    hot_reads: Arc<Readers>,
    committer: group_commit::Committer,
    /// The database's clock in SQL ([`leases`]): what lease expiries are judged by.
    clock: &'static str,
    /// How far the database's clock is ahead of this host's, in ms, when last read.
    clock_offset: Arc<std::sync::atomic::AtomicI64>,
    /// Takes each batch's ids for the other hosts (PostgreSQL).
    notifier: notify::Notifier,
}

/// One change to an instance, committed atomically.
#[derive(Debug)]
pub struct Commit {
    pub instance: Instance,
    /// The revision the change was computed from; `None` creates the instance.
    pub base_revision: Option<Revision>,
    pub history: HistoryEntry,
    pub idempotency: Option<IdempotencyRecord>,
    /// Records created before this have expired: a key held only by one is free.
    pub expired_before: Timestamp,
    /// The bulk migration this change is a step of, and the token of the lease it was
    /// computed under: counted in the same transaction, if the lease is still held.
    pub migration: Option<(uuid::Uuid, i64)>,
    /// The effects the transition asks for (the outbox), written with it.
    pub effects: Vec<Effect>,
    /// Keys of open timers the transition cancels.
    pub cancel_timers: Vec<String>,
    /// The effect whose result this transition consumed: it must still be open, and
    /// is closed in the same transaction, so a result is delivered once.
    pub settles: Option<Settle>,
    /// The posted event this transition applies, kept in the same transaction, so an
    /// event id applies once ([`Error::EventDuplicate`] if it is kept already).
    pub event: Option<PostedEvent>,
    /// The parent's child effect a new instance is started for, and the token of the
    /// lease it was started under: it must still be pending and leased under that
    /// token, and records the child in the same transaction, so a child starts once.
    pub child_of: Option<(String, i64)>,
    /// Cancels every open effect of the instance (an admin's cancel), before the
    /// effects this transition asks for are written.
    pub cancels_effects: bool,
    /// The lease the effects due at once are written with: (owner, expiry).
    pub leased_to: Option<(String, Timestamp)>,
    /// The change puts the instance on its `definition_version` (a start or a
    /// migration): the version must still exist and not be retired when it commits
    /// ([`Error::VersionGone`]), decided under a lock on the version's row.
    pub onto_version: bool,
}

/// An effect's result, recorded as the effect closes.
#[derive(Debug, Clone)]
pub struct Settle {
    pub effect_id: String,
    /// Attempts made, the last one included.
    pub attempts: u32,
    /// The event it came back as (JSON).
    pub result: String,
    /// The token of the lease the result was worked out under: the effect closes only
    /// if it still has it. `None` for a participant's report, which needs no lease.
    pub lease_token: Option<i64>,
}

/// The version a new instance starts on ([`Store::start_version`]).
#[derive(Debug, Clone)]
pub struct StartVersion {
    pub version: u32,
    /// Retired versions take no new instances.
    pub retired: bool,
    pub sha256: ModuleHash,
}

/// How many instances of one version are in one status.
#[derive(Debug, Clone)]
pub struct InstanceCount {
    pub version: u32,
    pub status: Status,
    pub count: i64,
}

impl Store {
    /// Connects to `sqlite://PATH` or `postgres://URL` and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let store = if url.starts_with("sqlite:") {
            let url = if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") };
            let options = || {
                pool_options().after_connect(|conn, _meta| {
                    Box::pin(async move { conn.execute(SQLITE_SETUP).await.map(drop) })
                })
            };
            let write = options().max_connections(1).connect(&url).await?;
            let read = options().max_connections(8).connect(&url).await?;
            sqlx::migrate!("migrations/sqlite").run(&write).await?;
            let path = SqliteConnectOptions::from_str(&url)?.get_filename().to_owned();
            let turn = WriteTurn::default();
            let committer = group_commit::Committer::spawn_thread(writer::open_sqlite(&path)?, turn.clone())?;
            let hot_reads = Arc::new(Readers::new(url.clone(), HOT_READERS, Some(SQLITE_SETUP)));
            Store {
                committer,
                notifier: notify::Notifier::default(),
                write,
                begin_write: "BEGIN IMMEDIATE",
                url,
                probe_setup: Some("PRAGMA busy_timeout = 1000"),
                write_turn: Some(turn),
                read,
                hot_reads,
                clock: leases::SQLITE_CLOCK,
                clock_offset: Arc::default(),
            }
        } else {
            let pool =
                pool_options().max_connections(16).acquire_timeout(Duration::from_secs(10)).after_connect(
                    |conn, _meta| Box::pin(async move { conn.execute(POSTGRES_SETUP).await.map(drop) }),
                );
            let pool = pool.connect(url).await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            let notifier = notify::Notifier::default();
            let committer = group_commit::Committer::spawn(pool.clone(), notifier.clone());
            let hot_reads = Arc::new(Readers::new(url.to_owned(), HOT_READERS, None));
            Store {
                committer,
                notifier,
                write: pool.clone(),
                begin_write: "BEGIN",
                url: url.to_owned(),
                probe_setup: None,
                write_turn: None,
                read: pool,
                hot_reads,
                clock: leases::POSTGRES_CLOCK,
                clock_offset: Arc::default(),
            }
        };
        store.read_clock().await?;
        Ok(store)
    }

    /// Whether reads and commits can be made now, for readiness checks: the committer
    /// runs, a read answers, and a write transaction can be opened and can write (on
    /// SQLite the write lock can be taken; on PostgreSQL the database is not read-only),
    /// all within [`READY_TIMEOUT`].
    pub async fn ready(&self) -> Result<()> {
        if !self.committer.is_running() {
            return Err(Error::CommitterStopped);
        }
        // A connection of its own: a probe given up on mid-statement must not leave a
        // pooled connection behind in a transaction, and it shows that new connections
        // can be made.
        let probe = async {
            sqlx::query("SELECT 1").execute(&self.read).await?;
            let mut connection = sqlx::AnyConnection::connect(&self.url).await?;
            if let Some(setup) = self.probe_setup {
                connection.execute(setup).await?;
            }
            let mut tx = connection.begin_with(self.begin_write).await?;
            // Writes nothing, but is refused where writing is (a read-only transaction).
            sqlx::query("DELETE FROM idempotency_keys WHERE 1 = 0").execute(&mut *tx).await?;
            tx.rollback().await?;
            connection.close().await?;
            Ok(())
        };
        tokio::time::timeout(READY_TIMEOUT, probe).await.map_err(|_| Error::Unresponsive)?
    }

    /// Commits what is queued, then closes every connection.
    pub async fn close(&self) {
        self.committer.close().await;
        self.notifier.close();
        self.hot_reads.close().await;
        self.write.close().await;
        self.read.close().await;
    }

    /// The connection for a write other than a transition, with the write turn.
    async fn writing(&self) -> Result<Writing<'_>> {
        let turn = match &self.write_turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        Ok(Writing { _turn: turn, connection: self.write.acquire().await?, begin: self.begin_write })
    }

    // --- definitions -------------------------------------------------------------------

    /// Stores a new version; [`Error::Duplicate`] if the name and version exist,
    /// [`Error::KeyTaken`] if `keyed`'s key is.
    pub async fn insert_definition_version(
        &self,
        version: &DefinitionVersion,
        module: &[u8],
        keyed: Option<Keyed<'_>>,
    ) -> Result<()> {
        let manifest =
            postcard::to_allocvec(&version.manifest).map_err(|err| Error::Corrupt(err.to_string()))?;
        let mut writing = self.writing().await?;
        let mut tx = writing.begin().await?;
        claim(&mut tx, keyed).await?;
        sqlx::query("INSERT INTO definitions (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(&version.name)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO definition_versions (name, version, sha256, manifest, module, deployed_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, version) DO NOTHING",
        )
        .bind(&version.name)
        .bind(i64::from(version.version))
        .bind(&version.sha256.0)
        .bind(manifest)
        .bind(module)
        .bind(version.deployed_at.0)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(Error::Duplicate);
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn definition_version(&self, name: &str, version: u32) -> Result<Option<DefinitionVersion>> {
        let sql = format!("{} WHERE name = $1 AND version = $2", rows::DEFINITION_VERSION_SELECT);
        let row = read!(self, |pool| sqlx::query(&sql)
            .bind(name)
            .bind(i64::from(version))
            .fetch_optional(pool)
            .await)?;
        row.as_ref().map(rows::definition_version).transpose()
    }

    pub async fn definition_version_with_hash(
        &self,
        sha256: &ModuleHash,
    ) -> Result<Option<DefinitionVersion>> {
        let sql = format!("{} WHERE sha256 = $1", rows::DEFINITION_VERSION_SELECT);
        let row = read!(self, |pool| sqlx::query(&sql).bind(&sha256.0).fetch_optional(pool).await)?;
        row.as_ref().map(rows::definition_version).transpose()
    }

    /// Every version of `name` (or of every definition), by name and version.
    pub async fn definition_versions(&self, name: Option<&str>) -> Result<Vec<DefinitionVersion>> {
        let rows = match name {
            Some(name) => {
                let sql = format!("{} WHERE name = $1 ORDER BY version", rows::DEFINITION_VERSION_SELECT);
                read!(self, |pool| sqlx::query(&sql).bind(name).fetch_all(pool).await)?
            }
            None => {
                let sql = format!("{} ORDER BY name, version", rows::DEFINITION_VERSION_SELECT);
                read!(self, |pool| sqlx::query(&sql).fetch_all(pool).await)?
            }
        };
        rows.iter().map(rows::definition_version).collect()
    }

    /// The bytes of the module with this sha256, if a version deployed it.
    pub async fn module_with_hash(&self, sha256: &ModuleHash) -> Result<Option<Vec<u8>>> {
        let module = read!(self, |pool| {
            sqlx::query_scalar("SELECT module FROM definition_versions WHERE sha256 = $1")
                .bind(&sha256.0)
                .fetch_optional(pool)
                .await
        })?;
        Ok(module)
    }

    /// The version a new instance of `name` starts on, and whether it is retired:
    /// `requested` if given, else the pinned version, else the highest one not retired.
    /// One indexed lookup: every start makes it, so its cost must not grow with the
    /// instances (a definition's summary counts them all).
    pub async fn start_version(&self, name: &str, requested: Option<u32>) -> Result<Option<StartVersion>> {
        let query = || {
            match requested {
            Some(version) => sqlx::query(
                "SELECT version, retired_at, sha256 FROM definition_versions WHERE name = $1 AND version = $2",
            )
            .bind(name)
            .bind(i64::from(version)),
            None => sqlx::query(
                "SELECT chosen.version, chosen.retired_at, chosen.sha256 FROM definitions
                 JOIN definition_versions chosen ON chosen.name = definitions.name
                 WHERE definitions.name = $1 AND chosen.version = COALESCE(definitions.pinned_version,
                     (SELECT MAX(version) FROM definition_versions WHERE name = $1 AND retired_at IS NULL))",
            )
            .bind(name),
        }
        };
        let Some(row) = read!(self, |pool| query().fetch_optional(pool).await)? else { return Ok(None) };
        let retired_at: Option<i64> = row.try_get(1)?;
        Ok(Some(StartVersion {
            version: rows::version(row.try_get(0)?)?,
            retired: retired_at.is_some(),
            sha256: ModuleHash(row.try_get(2)?),
        }))
    }

    /// The version an admin pinned for new instances, if any.
    pub async fn pinned_version(&self, name: &str) -> Result<Option<u32>> {
        let pinned: Option<Option<i64>> = read!(self, |pool| {
            sqlx::query_scalar("SELECT pinned_version FROM definitions WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
        })?;
        pinned.flatten().map(rows::version).transpose()
    }

    pub async fn instance_counts(&self, name: &str) -> Result<Vec<InstanceCount>> {
        let rows = read!(self, |pool| {
            sqlx::query(
                "SELECT definition_version, status, COUNT(*) AS n FROM instances
                     WHERE definition = $1 GROUP BY definition_version, status",
            )
            .bind(name)
            .fetch_all(pool)
            .await
        })?;
        rows.iter().map(rows::instance_count).collect()
    }

    // --- instances ---------------------------------------------------------------------

    pub async fn instance(&self, id: InstanceId) -> Result<Option<Instance>> {
        let sql = format!("{} WHERE id = $1", rows::INSTANCE_SELECT);
        let row = self.hot_reads.fetch_optional(|| sqlx::query(&sql).bind(id.to_string())).await?;
        row.as_ref().map(rows::instance).transpose()
    }

    pub async fn instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        enum Param {
            Text(String),
            Int(i64),
        }
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        let mut condition = |column: &str, param: Param| {
            params.push(param);
            conditions.push(format!("{column} ${}", params.len()));
        };
        if let Some(definition) = &filter.definition {
            condition("definition =", Param::Text(definition.clone()));
        }
        if let Some(version) = filter.version {
            condition("definition_version =", Param::Int(i64::from(version)));
        }
        if let Some(state) = &filter.state {
            condition("state =", Param::Text(state.clone()));
        }
        if let Some(status) = filter.status {
            condition("status =", Param::Text(status.as_str().into()));
        }
        if let Some(parent) = filter.parent {
            condition("parent_id =", Param::Text(parent.to_string()));
        }
        if let Some(before) = filter.before {
            condition("id <", Param::Text(before.to_string()));
        }
        let mut sql = String::from(rows::INSTANCE_SELECT);
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit));
        let query = || {
            params.iter().fold(sqlx::query(&sql), |query, param| match param {
                Param::Text(text) => query.bind(text),
                Param::Int(int) => query.bind(*int),
            })
        };
        let rows = read!(self, |pool| query().fetch_all(pool).await)?;
        rows.iter().map(rows::instance).collect()
    }

    pub async fn history(&self, id: InstanceId) -> Result<Vec<HistoryEntry>> {
        let sql = format!("{} WHERE instance_id = $1 ORDER BY seq", rows::HISTORY_SELECT);
        let rows = read!(self, |pool| sqlx::query(&sql).bind(id.to_string()).fetch_all(pool).await)?;
        rows.iter().map(rows::history_entry).collect()
    }

    /// Writes a transition: the instance (created, or updated if still at
    /// `base_revision`), its history entry and the idempotency record, in one
    /// transaction shared with the other commits of its batch (see [`group_commit`]).
    /// [`Error::RevisionConflict`] if the instance moved on; [`Error::Duplicate`] if the
    /// idempotency key was stored meanwhile.
    pub async fn commit(&self, commit: Commit) -> Result<()> {
        self.committer.commit(commit).await
    }

    /// Changes each time this process has written a commit batch: a hint for feed
    /// readers that there may be more to read.
    pub fn batches_written(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committer.batches_written()
    }

    /// Commits and batches so far: how well group commit batches under the load seen.
    pub fn commit_stats(&self) -> group_commit::Stats {
        self.committer.stats()
    }

    // --- idempotency -------------------------------------------------------------------

    /// `SELECT ... FOR UPDATE` where rows are locked (PostgreSQL); on SQLite a write
    /// transaction holds the one write lock from its start.
    fn for_update(&self) -> &'static str {
        if self.write_turn.is_some() { "" } else { " FOR UPDATE" }
    }

    /// The live records (none older than `not_before`) whose scope starts with one of
    /// `prefixes`, or that are `exact`, oldest first. The prefixes are matched with
    /// `LIKE`, without an index: for diagnostics, not for requests.
    pub async fn idempotency_records_under(
        &self,
        prefixes: &[String],
        exact: Option<&IdempotencyKey>,
        not_before: Timestamp,
    ) -> Result<Vec<IdempotencyRecord>> {
        let mut conditions: Vec<String> = (1..=prefixes.len()).map(|n| format!("scope LIKE ${n}")).collect();
        if exact.is_some() {
            conditions.push(format!(
                "(scope = ${} AND idempotency_key = ${})",
                prefixes.len() + 1,
                prefixes.len() + 2
            ));
        }
        if conditions.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT scope, idempotency_key, fingerprint, status, headers, body, created_at FROM idempotency_keys
             WHERE created_at >= ${} AND ({}) ORDER BY created_at",
            prefixes.len() + exact.map_or(1, |_| 3),
            conditions.join(" OR ")
        );
        let query = || {
            let query = prefixes.iter().fold(sqlx::query(&sql), |query, prefix| {
                // `%` and `_` in a prefix are taken literally by nobody: ids have neither.
                query.bind(format!("{prefix}%"))
            });
            let query = match exact {
                Some(key) => query.bind(&key.scope).bind(&key.key),
                None => query,
            };
            query.bind(not_before.0)
        };
        let found = read!(self, |pool| query().fetch_all(pool).await)?;
        found.iter().map(rows::idempotency_record).collect()
    }

    /// The record kept under `key`. One older than `not_before` has expired: it is
    /// deleted here, so that the key can be used afresh before the sweeper comes by.
    pub async fn idempotency_record(
        &self,
        key: &IdempotencyKey,
        not_before: Timestamp,
    ) -> Result<Option<IdempotencyRecord>> {
        let query = || {
            sqlx::query(
                "SELECT scope, idempotency_key, fingerprint, status, headers, body, created_at FROM idempotency_keys
                 WHERE scope = $1 AND idempotency_key = $2",
            )
        };
        let row = self.hot_reads.fetch_optional(|| query().bind(&key.scope).bind(&key.key)).await?;
        let Some(record) = row.as_ref().map(rows::idempotency_record).transpose()? else { return Ok(None) };
        if record.created_at >= not_before {
            return Ok(Some(record));
        }
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2 AND created_at < $3",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .bind(not_before.0)
        .execute(&mut *self.writing().await?)
        .await?;
        Ok(None)
    }

    /// Keeps a response that was not a transition (an error, a deploy), in place of
    /// a record created before `expired_before`. [`Error::Duplicate`] if the key was
    /// stored meanwhile.
    pub async fn insert_idempotency_record(
        &self,
        record: &IdempotencyRecord,
        expired_before: Timestamp,
    ) -> Result<()> {
        let mut writing = self.writing().await?;
        let mut tx = writing.begin().await?;
        transition::insert_idempotency_records(&mut tx, &[record], expired_before).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets records created before `before`, [`SWEEP_CHUNK`] at a time so that no
    /// write waits long behind a large backlog; returns how many.
    pub async fn delete_idempotency_records(&self, before: Timestamp) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM idempotency_keys WHERE (scope, idempotency_key) IN
                 (SELECT scope, idempotency_key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
            )
            .bind(before.0)
            .bind(SWEEP_CHUNK)
            .execute(&mut *self.writing().await?)
            .await?
            .rows_affected();
            deleted += done;
            // Records created meanwhile are newer than `before`: the backlog only shrinks.
            if done < SWEEP_CHUNK as u64 {
                return Ok(deleted);
            }
        }
    }
}

/// Every SQLite connection: WAL, so readers never wait for the writer; FULL, so a
/// transition is acknowledged only once it is on disk.
/// A statement that waits longer than this for a row lock fails (and its commit is
/// retried) instead of stalling its host's commits behind another host's.
const POSTGRES_SETUP: &str = "SET lock_timeout = '3s'";

const SQLITE_SETUP: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;";

/// How long a readiness probe may take: long enough for a write turn under load, short
/// enough for an orchestrator's probe (they time out after 1 to 10 s).
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Expired idempotency records deleted per transaction.
const SWEEP_CHUNK: i64 = 1_000;

/// Connections for the hot reads.
const HOT_READERS: usize = 8;

/// A connection idle this long is pinged before it is lent. One in steady use is not:
/// on the hot path a ping per use would be a third of the round trips. One that sat
/// idle may have died meanwhile (the database restarted, a proxy dropped it), and a
/// request must not be the one to find out.
pub(super) const PING_WHEN_IDLE: Duration = Duration::from_secs(1);

/// Whether `err` says the connection is gone (closed, reset, or ended by the server:
/// SQLSTATE classes 08 and 57P), rather than a verdict on the statement. Noting it
/// makes every connection that sat idle since be pinged before it is used again.
pub(super) fn lost_connection(err: &sqlx::Error) -> bool {
    let lost = match err {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
        }
        _ => false,
    };
    if lost {
        connections_lost_at().note();
    }
    lost
}

/// When this process last saw a connection lost. A connection idle since before then
/// may have died with it, however short its idle time: it is pinged before use. One
/// instant for the process, not per store: a store that did not see the failure pings
/// a few connections for nothing, and never misses one.
fn connections_lost_at() -> &'static LostAt {
    static LOST_AT: std::sync::OnceLock<LostAt> = std::sync::OnceLock::new();
    LOST_AT.get_or_init(|| LostAt(std::sync::Mutex::new(None)))
}

struct LostAt(std::sync::Mutex<Option<std::time::Instant>>);

impl LostAt {
    fn note(&self) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(std::time::Instant::now());
    }

    /// Whether a connection idle for `idle_for` was idle already when one was lost.
    fn predates(&self, idle_for: Duration) -> bool {
        let lost_at = *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        lost_at.is_some_and(|lost_at| lost_at.elapsed() <= idle_for)
    }
}

/// Whether a connection idle for `idle_for` must be pinged before it is lent: after
/// [`PING_WHEN_IDLE`], or if it was idle when another connection was found dead.
pub(super) fn needs_ping(idle_for: Duration) -> bool {
    idle_for >= PING_WHEN_IDLE || connections_lost_at().predates(idle_for)
}

/// Whether `connection` answers a ping in time; one whose peer vanished without a word
/// would otherwise hold its caller until the TCP timeout.
pub(super) async fn is_alive(connection: &mut sqlx::AnyConnection) -> bool {
    matches!(tokio::time::timeout(PING_TIMEOUT, connection.ping()).await, Ok(Ok(())))
}

/// Claims `keyed`'s key in an operation's transaction, before the operation writes:
/// [`Error::KeyTaken`] if a live record holds it (the transaction is then dropped,
/// undoing the operation with it).
pub(super) async fn claim(tx: &mut Tx<'_>, keyed: Option<Keyed<'_>>) -> Result<()> {
    let Some(Keyed { record, expired_before }) = keyed else { return Ok(()) };
    match transition::insert_idempotency_records(tx, &[record], expired_before).await {
        Err(Error::Duplicate) => Err(Error::KeyTaken),
        other => other,
    }
}

const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Pools that ping a connection before lending it only after [`PING_WHEN_IDLE`]; sqlx
/// also tests each connection as it comes back.
fn pool_options() -> AnyPoolOptions {
    AnyPoolOptions::new().test_before_acquire(false).before_acquire(|connection, meta| {
        Box::pin(async move { Ok(!needs_ping(meta.idle_for) || is_alive(connection).await) })
    })
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// See the `write_turn` field of [`Store`].
type WriteTurn = Arc<tokio::sync::Mutex<()>>;

/// A write connection, held with the write turn; derefs to the connection.
struct Writing<'a> {
    _turn: Option<tokio::sync::MutexGuard<'a, ()>>,
    connection: sqlx::pool::PoolConnection<sqlx::Any>,
    begin: &'static str,
}

impl Writing<'_> {
    async fn begin(&mut self) -> Result<Tx<'_>> {
        Ok(self.connection.begin_with(self.begin).await?)
    }
}

impl std::ops::Deref for Writing<'_> {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &sqlx::AnyConnection {
        &self.connection
    }
}

impl std::ops::DerefMut for Writing<'_> {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.connection
    }
}
