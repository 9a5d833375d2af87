//! Decoding rows into model types.

use super::{Error, InstanceCount, Result};
use crate::model::{
    DefinitionVersion, Effect, HistoryEntry, IdempotencyKey, IdempotencyRecord, Instance, Migration,
    ModuleHash, Revision, StoredResponse, Timestamp, Trigger,
};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::str::FromStr;

pub(super) const DEFINITION_VERSION_SELECT: &str =
    "SELECT name, version, sha256, manifest, deployed_at, retired_at FROM definition_versions";

pub(super) const INSTANCE_SELECT: &str = "SELECT id, definition, definition_version, module_sha256, state, status, \
     data, revision, message, error, parent_id, callback_url, created_at, updated_at FROM instances";

pub(super) const HISTORY_SELECT: &str = "SELECT instance_id, seq, from_state, to_state, trigger_kind, trigger_name, \
     trigger_id, payload, actor, definition_version, module_sha256, fuel_used, at FROM history";

pub(super) const EFFECT_COLUMNS: &str = "id, instance_id, seq, effect_key, kind, name, input, options, definition, \
     definition_version, status, attempts, due_at, last_error, result, child_id, created_at, updated_at, lease_token";

pub(super) fn effect(row: &AnyRow) -> Result<Effect> {
    Ok(Effect {
        id: row.try_get("id")?,
        instance_id: parse(row.try_get("instance_id")?)?,
        seq: row.try_get("seq")?,
        key: row.try_get("effect_key")?,
        kind: parse(row.try_get("kind")?)?,
        name: row.try_get("name")?,
        input: row.try_get("input")?,
        options: row.try_get("options")?,
        definition: row.try_get("definition")?,
        definition_version: version(row.try_get("definition_version")?)?,
        status: parse(row.try_get("status")?)?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        due_at: Timestamp(row.try_get("due_at")?),
        last_error: row.try_get("last_error")?,
        result: row.try_get("result")?,
        child_id: row.try_get::<Option<String>, _>("child_id")?.map(parse).transpose()?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        lease_token: row.try_get("lease_token")?,
    })
}

pub(super) const MIGRATION_SELECT: &str = "SELECT id, definition, from_version, to_version, states, dry_run, \
     reason, actor, status, total, migrated, failed, skipped, cursor, created_at, updated_at, finished_at FROM migrations";

pub(super) fn migration(row: &AnyRow) -> Result<Migration> {
    let states: Option<String> = row.try_get("states")?;
    Ok(Migration {
        id: parse(row.try_get("id")?)?,
        definition: row.try_get("definition")?,
        from_version: version(row.try_get("from_version")?)?,
        to_version: version(row.try_get("to_version")?)?,
        states: states
            .map(|states| serde_json::from_str(&states))
            .transpose()
            .map_err(|err| Error::Corrupt(format!("states: {err}")))?,
        dry_run: row.try_get::<i64, _>("dry_run")? != 0,
        reason: row.try_get("reason")?,
        actor: row.try_get("actor")?,
        status: parse(row.try_get("status")?)?,
        total: row.try_get("total")?,
        migrated: row.try_get("migrated")?,
        failed: row.try_get("failed")?,
        skipped: row.try_get("skipped")?,
        cursor: row.try_get::<Option<String>, _>("cursor")?.map(parse).transpose()?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        finished_at: row.try_get::<Option<i64>, _>("finished_at")?.map(Timestamp),
    })
}

pub(super) fn definition_version(row: &AnyRow) -> Result<DefinitionVersion> {
    let manifest: Vec<u8> = row.try_get("manifest")?;
    Ok(DefinitionVersion {
        name: row.try_get("name")?,
        version: version(row.try_get("version")?)?,
        sha256: ModuleHash(row.try_get("sha256")?),
        manifest: postcard::from_bytes(&manifest)
            .map_err(|err| Error::Corrupt(format!("manifest: {err}")))?,
        deployed_at: Timestamp(row.try_get("deployed_at")?),
        retired_at: row.try_get::<Option<i64>, _>("retired_at")?.map(Timestamp),
    })
}

pub(super) fn instance(row: &AnyRow) -> Result<Instance> {
    Ok(Instance {
        id: parse(row.try_get("id")?)?,
        definition: row.try_get("definition")?,
        definition_version: version(row.try_get("definition_version")?)?,
        module_sha256: ModuleHash(row.try_get("module_sha256")?),
        state: row.try_get("state")?,
        status: parse(row.try_get("status")?)?,
        data: row.try_get("data")?,
        revision: Revision(row.try_get("revision")?),
        message: row.try_get("message")?,
        error: row.try_get("error")?,
        parent_id: row.try_get::<Option<String>, _>("parent_id")?.map(parse).transpose()?,
        callback_url: row.try_get("callback_url")?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
    })
}

pub(super) fn history_entry(row: &AnyRow) -> Result<HistoryEntry> {
    Ok(HistoryEntry {
        instance_id: parse(row.try_get("instance_id")?)?,
        seq: row.try_get("seq")?,
        from_state: row.try_get("from_state")?,
        to_state: row.try_get("to_state")?,
        trigger: Trigger {
            kind: parse(row.try_get("trigger_kind")?)?,
            name: row.try_get("trigger_name")?,
            id: row.try_get("trigger_id")?,
            payload: row.try_get("payload")?,
        },
        actor: row.try_get("actor")?,
        definition_version: version(row.try_get("definition_version")?)?,
        module_sha256: ModuleHash(row.try_get("module_sha256")?),
        fuel_used: u64::try_from(row.try_get::<i64, _>("fuel_used")?).unwrap_or_default(),
        at: Timestamp(row.try_get("at")?),
    })
}

pub(super) fn idempotency_record(row: &AnyRow) -> Result<IdempotencyRecord> {
    let headers: String = row.try_get("headers")?;
    let status: i64 = row.try_get("status")?;
    Ok(IdempotencyRecord {
        key: IdempotencyKey { scope: row.try_get("scope")?, key: row.try_get("idempotency_key")? },
        fingerprint: row.try_get("fingerprint")?,
        response: StoredResponse {
            status: u16::try_from(status).map_err(|_| Error::Corrupt(format!("HTTP status {status}")))?,
            headers: serde_json::from_str(&headers)
                .map_err(|err| Error::Corrupt(format!("headers: {err}")))?,
            body: row.try_get("body")?,
        },
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

pub(super) fn instance_count(row: &AnyRow) -> Result<InstanceCount> {
    Ok(InstanceCount {
        version: version(row.try_get("definition_version")?)?,
        status: parse(row.try_get("status")?)?,
        count: row.try_get("n")?,
    })
}

pub(super) fn version(stored: i64) -> Result<u32> {
    u32::try_from(stored).map_err(|_| Error::Corrupt(format!("version {stored}")))
}

pub(super) fn parse<T: FromStr>(stored: String) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    stored.parse().map_err(|err| Error::Corrupt(format!("{stored:?}: {err}")))
}
