//! Durable state: definitions, instances, history and idempotency records.
//!
//! One set of portable SQL statements runs on SQLite (embedded default) and PostgreSQL
//! ([`backend`]): `$N` placeholders, ids and JSON as text, times as epoch milliseconds.
//! The backends differ only where their semantics do, and say so.
//!
//! Invariant: a transition's instance row, history entry and idempotency record are
//! written in one transaction ([`Store::commit`]), or not at all.

/// `transaction!(store, |tx| async move { ... })`: runs the statements of the async
/// block (written once, against [`backend::WriteTx`]) in one write transaction, which
/// commits if the block returns [`End::Commit`]. On SQLite the block runs on the writer
/// thread, so it owns what it uses. A macro, not a function taking a closure, because
/// the block is compiled once for each backend's transaction type.
macro_rules! transaction {
    ($store:expr, |$tx:ident| $work:expr) => {{
        match &*$store.db {
            $crate::store::Db::Sqlite(db) => {
                db.transaction(move |$tx| $crate::store::backend::ready($work)).await
            }
            $crate::store::Db::Postgres(db) => {
                let mut tx = db.begin().await?;
                let out = {
                    let $tx = &mut tx;
                    $work.await
                };
                $crate::store::postgres::Postgres::finish(tx, out).await
            }
        }
    }};
}

/// `dispatch!(store, |db| db.method(...))`: runs a [`Backend`] call on the store's backend.
macro_rules! dispatch {
    ($store:expr, |$db:ident| $call:expr) => {{
        match &*$store.db {
            $crate::store::Db::Sqlite($db) => $call,
            $crate::store::Db::Postgres($db) => $call,
        }
    }};
}

mod artifacts;
mod backend;
mod effects;
mod events;
mod feed;
mod group_commit;
mod leases;
mod lifecycle;
mod notify;
mod postgres;
mod rows;
mod sqlite;
mod transition;

pub use effects::Progress;
pub use lifecycle::{Deletion, Pinning, Retirement};
pub use notify::Heard;

use crate::model::{
    DefinitionVersion, Effect, HistoryEntry, IdempotencyKey, IdempotencyRecord, Instance, InstanceFilter,
    InstanceId, ModuleHash, PostedEvent, Revision, Status, Timestamp,
};
use backend::{Arg, Backend, Decode, End, WriteTx};
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
    db: Arc<Db>,
    /// How far the database's clock is ahead of this host's, in ms, when last read.
    clock_offset: Arc<std::sync::atomic::AtomicI64>,
}

/// The store's backend.
#[derive(Debug)]
enum Db {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
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
        let store = match sqlite_path(url) {
            Some(path) => Store {
                db: Arc::new(Db::Sqlite(sqlite::Sqlite::open(std::path::Path::new(&path))?)),
                clock_offset: Arc::default(),
            },
            None => Store {
                db: Arc::new(Db::Postgres(postgres::Postgres::connect(url).await?)),
                clock_offset: Arc::default(),
            },
        };
        store.read_clock().await?;
        Ok(store)
    }

    /// Whether reads and commits can be made now, for readiness checks: the committer
    /// runs, a read answers, and a write transaction can be opened and can write (on
    /// SQLite the write lock can be taken; on PostgreSQL the database is not read-only),
    /// all within [`READY_TIMEOUT`].
    pub async fn ready(&self) -> Result<()> {
        if !dispatch!(self, |db| db.committer.is_running()) {
            return Err(Error::CommitterStopped);
        }
        let probe = async { dispatch!(self, |db| db.ready().await) };
        tokio::time::timeout(READY_TIMEOUT, probe).await.map_err(|_| Error::Unresponsive)?
    }

    /// Commits what is queued, then closes every connection.
    pub async fn close(&self) {
        dispatch!(self, |db| db.close().await)
    }

    /// Whether the database runs one write transaction at a time (SQLite).
    fn serial(&self) -> bool {
        matches!(*self.db, Db::Sqlite(_))
    }

    /// The database's clock in SQL ([`leases`]): what lease expiries are judged by.
    fn clock(&self) -> &'static str {
        if self.serial() { leases::SQLITE_CLOCK } else { leases::POSTGRES_CLOCK }
    }

    async fn fetch_all<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        dispatch!(self, |db| db.fetch_all(sql, args, decode).await)
    }

    async fn fetch_optional<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Option<T>> {
        Ok(self.fetch_all(sql, args, decode).await?.into_iter().next())
    }

    /// A query whose one row's column `value` is the answer.
    async fn fetch_int(&self, sql: &str, args: &[Arg<'_>]) -> Result<Option<i64>> {
        let found = self.fetch_optional(sql, args, |row| row.int_or_null("value")).await?;
        Ok(found.flatten())
    }

    /// Like [`Store::fetch_all`], for a read that may run long (a scan, a large value):
    /// on SQLite it runs on the caller's thread too, and must not hold up that
    /// thread's other tasks.
    async fn scan<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        dispatch!(self, |db| db.scan(sql, args, decode).await)
    }

    async fn scan_one<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Option<T>> {
        Ok(self.scan(sql, args, decode).await?.into_iter().next())
    }

    async fn scan_int(&self, sql: &str, args: &[Arg<'_>]) -> Result<Option<i64>> {
        Ok(self.scan_one(sql, args, |row| row.int_or_null("value")).await?.flatten())
    }

    async fn write_all<T: Send + 'static>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        dispatch!(self, |db| db.write_all(sql, args, decode).await)
    }

    async fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        dispatch!(self, |db| db.execute(sql, args).await)
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
        let claim = Claim::of(keyed);
        let (name, number, sha256) =
            (version.name.clone(), i64::from(version.version), version.sha256.0.clone());
        let (module, deployed_at) = (module.to_vec(), version.deployed_at.0);
        transaction!(self, |tx| async move {
            claim_key(tx, claim.as_ref()).await?;
            tx.execute(
                "INSERT INTO definitions (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                &[name.as_str().into()],
            )
            .await?;
            let args = [
                name.as_str().into(),
                number.into(),
                sha256.as_str().into(),
                manifest.into(),
                module.into(),
                deployed_at.into(),
            ];
            let inserted = tx
                .execute(
                    "INSERT INTO definition_versions (name, version, sha256, manifest, module, deployed_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, version) DO NOTHING",
                    &args,
                )
                .await?;
            if inserted == 0 {
                return Err(Error::Duplicate);
            }
            Ok(End::Commit(()))
        })
    }

    pub async fn definition_version(&self, name: &str, version: u32) -> Result<Option<DefinitionVersion>> {
        let sql = format!("{} WHERE name = $1 AND version = $2", rows::DEFINITION_VERSION_SELECT);
        self.fetch_optional(&sql, &[name.into(), i64::from(version).into()], rows::definition_version).await
    }

    pub async fn definition_version_with_hash(
        &self,
        sha256: &ModuleHash,
    ) -> Result<Option<DefinitionVersion>> {
        let sql = format!("{} WHERE sha256 = $1", rows::DEFINITION_VERSION_SELECT);
        self.fetch_optional(&sql, &[sha256.0.as_str().into()], rows::definition_version).await
    }

    /// Every version of `name` (or of every definition), by name and version.
    pub async fn definition_versions(&self, name: Option<&str>) -> Result<Vec<DefinitionVersion>> {
        match name {
            Some(name) => {
                let sql = format!("{} WHERE name = $1 ORDER BY version", rows::DEFINITION_VERSION_SELECT);
                self.scan(&sql, &[name.into()], rows::definition_version).await
            }
            None => {
                let sql = format!("{} ORDER BY name, version", rows::DEFINITION_VERSION_SELECT);
                self.scan(&sql, &[], rows::definition_version).await
            }
        }
    }

    /// The bytes of the module with this sha256, if a version deployed it.
    pub async fn module_with_hash(&self, sha256: &ModuleHash) -> Result<Option<Vec<u8>>> {
        let sql = "SELECT module FROM definition_versions WHERE sha256 = $1";
        self.scan_one(sql, &[sha256.0.as_str().into()], |row| row.blob("module")).await
    }

    /// The version a new instance of `name` starts on, and whether it is retired:
    /// `requested` if given, else the pinned version, else the highest one not retired.
    /// One indexed lookup: every start makes it, so its cost must not grow with the
    /// instances (a definition's summary counts them all).
    pub async fn start_version(&self, name: &str, requested: Option<u32>) -> Result<Option<StartVersion>> {
        let decode: Decode<StartVersion> = |row| {
            Ok(StartVersion {
                version: rows::version(row.int("version")?)?,
                retired: row.int_or_null("retired_at")?.is_some(),
                sha256: ModuleHash(row.text("sha256")?),
            })
        };
        match requested {
            Some(version) => {
                let sql = "SELECT version, retired_at, sha256 FROM definition_versions WHERE name = $1 AND version = $2";
                self.fetch_optional(sql, &[name.into(), i64::from(version).into()], decode).await
            }
            None => {
                let sql = "SELECT chosen.version, chosen.retired_at, chosen.sha256 FROM definitions
                     JOIN definition_versions chosen ON chosen.name = definitions.name
                     WHERE definitions.name = $1 AND chosen.version = COALESCE(definitions.pinned_version,
                         (SELECT MAX(version) FROM definition_versions WHERE name = $1 AND retired_at IS NULL))";
                self.fetch_optional(sql, &[name.into()], decode).await
            }
        }
    }

    /// The version an admin pinned for new instances, if any.
    pub async fn pinned_version(&self, name: &str) -> Result<Option<u32>> {
        let pinned = self
            .fetch_int("SELECT pinned_version AS value FROM definitions WHERE name = $1", &[name.into()])
            .await?;
        pinned.map(rows::version).transpose()
    }

    pub async fn instance_counts(&self, name: &str) -> Result<Vec<InstanceCount>> {
        let sql = "SELECT definition_version, status, COUNT(*) AS n FROM instances
                   WHERE definition = $1 GROUP BY definition_version, status";
        self.scan(sql, &[name.into()], rows::instance_count).await
    }

    // --- instances ---------------------------------------------------------------------

    pub async fn instance(&self, id: InstanceId) -> Result<Option<Instance>> {
        let sql = format!("{} WHERE id = $1", rows::INSTANCE_SELECT);
        self.fetch_optional(&sql, &[id.to_string().into()], rows::instance).await
    }

    pub async fn instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        let mut conditions = Vec::new();
        let mut args: Vec<Arg> = Vec::new();
        let mut condition = |column: &str, arg: Arg<'static>| {
            args.push(arg);
            conditions.push(format!("{column} ${}", args.len()));
        };
        if let Some(definition) = &filter.definition {
            condition("definition =", definition.clone().into());
        }
        if let Some(version) = filter.version {
            condition("definition_version =", i64::from(version).into());
        }
        if let Some(state) = &filter.state {
            condition("state =", state.clone().into());
        }
        if let Some(status) = filter.status {
            condition("status =", status.as_str().into());
        }
        if let Some(parent) = filter.parent {
            condition("parent_id =", parent.to_string().into());
        }
        if let Some(before) = filter.before {
            condition("id <", before.to_string().into());
        }
        let mut sql = String::from(rows::INSTANCE_SELECT);
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit));
        self.scan(&sql, &args, rows::instance).await
    }

    pub async fn history(&self, id: InstanceId) -> Result<Vec<HistoryEntry>> {
        let sql = format!("{} WHERE instance_id = $1 ORDER BY seq", rows::HISTORY_SELECT);
        self.scan(&sql, &[id.to_string().into()], rows::history_entry).await
    }

    /// Writes a transition: the instance (created, or updated if still at
    /// `base_revision`), its history entry and the idempotency record, in one
    /// transaction shared with the other commits of its batch (see [`group_commit`]).
    /// [`Error::RevisionConflict`] if the instance moved on; [`Error::Duplicate`] if the
    /// idempotency key was stored meanwhile.
    pub async fn commit(&self, commit: Commit) -> Result<()> {
        dispatch!(self, |db| db.committer.commit(commit).await)
    }

    /// Changes each time this process has written a commit batch: a hint for feed
    /// readers that there may be more to read.
    pub fn batches_written(&self) -> tokio::sync::watch::Receiver<u64> {
        dispatch!(self, |db| db.committer.batches_written())
    }

    /// Commits and batches so far: how well group commit batches under the load seen.
    pub fn commit_stats(&self) -> group_commit::Stats {
        dispatch!(self, |db| db.committer.stats())
    }

    // --- idempotency -------------------------------------------------------------------

    /// `SELECT ... FOR UPDATE` where rows are locked (PostgreSQL); on SQLite a write
    /// transaction holds the one write lock from its start.
    fn for_update(&self) -> &'static str {
        if self.serial() { "" } else { " FOR UPDATE" }
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
            "{IDEMPOTENCY_SELECT} WHERE created_at >= ${} AND ({}) ORDER BY created_at",
            prefixes.len() + exact.map_or(1, |_| 3),
            conditions.join(" OR ")
        );
        // `%` and `_` in a prefix are taken literally by nobody: ids have neither.
        let mut args: Vec<Arg> = prefixes.iter().map(|prefix| format!("{prefix}%").into()).collect();
        if let Some(key) = exact {
            args.extend([(&key.scope).into(), (&key.key).into()]);
        }
        args.push(not_before.0.into());
        self.scan(&sql, &args, rows::idempotency_record).await
    }

    /// The record kept under `key`. One older than `not_before` has expired: it is
    /// deleted here, so that the key can be used afresh before the sweeper comes by.
    pub async fn idempotency_record(
        &self,
        key: &IdempotencyKey,
        not_before: Timestamp,
    ) -> Result<Option<IdempotencyRecord>> {
        let sql = format!("{IDEMPOTENCY_SELECT} WHERE scope = $1 AND idempotency_key = $2");
        let args = [(&key.scope).into(), (&key.key).into()];
        let Some(record) = self.fetch_optional(&sql, &args, rows::idempotency_record).await? else {
            return Ok(None);
        };
        if record.created_at >= not_before {
            return Ok(Some(record));
        }
        let sql =
            "DELETE FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2 AND created_at < $3";
        self.execute(sql, &[(&key.scope).into(), (&key.key).into(), not_before.0.into()]).await?;
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
        let record = record.clone();
        transaction!(self, |tx| async move {
            transition::insert_idempotency_records(tx, &[&record], expired_before).await?;
            Ok(End::Commit(()))
        })
    }

    /// Forgets records created before `before`, [`SWEEP_CHUNK`] at a time so that no
    /// write waits long behind a large backlog; returns how many.
    pub async fn delete_idempotency_records(&self, before: Timestamp) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let sql = "DELETE FROM idempotency_keys WHERE (scope, idempotency_key) IN
                 (SELECT scope, idempotency_key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)";
            let done = self.execute(sql, &[before.0.into(), SWEEP_CHUNK.into()]).await?;
            deleted += done;
            // Records created meanwhile are newer than `before`: the backlog only shrinks.
            if done < SWEEP_CHUNK as u64 {
                return Ok(deleted);
            }
        }
    }
}

const IDEMPOTENCY_SELECT: &str =
    "SELECT scope, idempotency_key, fingerprint, status, headers, body, created_at FROM idempotency_keys";

/// How long a readiness probe may take: long enough for a write's turn under load,
/// short enough for an orchestrator's probe (they time out after 1 to 10 s).
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Expired idempotency records deleted per transaction.
const SWEEP_CHUNK: i64 = 1_000;

/// The file a `sqlite:` URL names (`sqlite://PATH`, `sqlite:PATH`, options after `?`
/// ignored), or `None` for another database.
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    Some(rest.split('?').next().unwrap_or(rest).to_owned())
}

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
pub(super) async fn is_alive(connection: &mut sqlx::PgConnection) -> bool {
    use sqlx::Connection;
    matches!(tokio::time::timeout(PING_TIMEOUT, connection.ping()).await, Ok(Ok(())))
}

const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// An idempotency record to keep in an operation's own transaction ([`Keyed`], owned:
/// on SQLite the transaction runs on the writer thread).
struct Claim {
    record: IdempotencyRecord,
    expired_before: Timestamp,
}

impl Claim {
    fn of(keyed: Option<Keyed<'_>>) -> Option<Claim> {
        keyed.map(|keyed| Claim { record: keyed.record.clone(), expired_before: keyed.expired_before })
    }
}

/// Claims the key in an operation's transaction, before the operation writes:
/// [`Error::KeyTaken`] if a live record holds it (the transaction is then dropped,
/// undoing the operation with it).
async fn claim_key(tx: &mut impl WriteTx, claim: Option<&Claim>) -> Result<()> {
    let Some(Claim { record, expired_before }) = claim else { return Ok(()) };
    match transition::insert_idempotency_records(tx, &[record], *expired_before).await {
        Err(Error::Duplicate) => Err(Error::KeyTaken),
        other => other,
    }
}
