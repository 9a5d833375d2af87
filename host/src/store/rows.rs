//! Decoding rows into model types.

use super::backend::Row;
use super::{Error, InstanceCount, Result};
use crate::model::{
    DefinitionVersion, Effect, HistoryEntry, IdempotencyKey, IdempotencyRecord, Instance, Migration,
    ModuleHash, Revision, StoredResponse, Timestamp, Trigger,
};
use std::str::FromStr;

pub(super) const DEFINITION_VERSION_SELECT: &str =
    "SELECT name, version, sha256, manifest, deployed_at, retired_at FROM definition_versions";

pub(super) const INSTANCE_SELECT: &str = "SELECT id, definition, definition_version, module_sha256, state, status, \
     data, revision, message, error, parent_id, callback_url, created_at, updated_at FROM instances";

pub(super) const HISTORY_SELECT: &str = "SELECT instance_id, seq, from_state, to_state, trigger_kind, trigger_name, \
     trigger_id, payload, actor, definition_version, module_sha256, fuel_used, at FROM history";

pub(super) const EFFECT_COLUMNS: &str = "id, instance_id, seq, effect_key, kind, name, input, options, definition, \
     definition_version, status, attempts, due_at, last_error, result, child_id, created_at, updated_at, lease_token";

pub(super) fn effect(row: &dyn Row) -> Result<Effect> {
    Ok(Effect {
        id: row.text("id")?,
        instance_id: parse(row.text("instance_id")?)?,
        seq: row.int("seq")?,
        key: row.text("effect_key")?,
        kind: parse(row.text("kind")?)?,
        name: row.text_or_null("name")?,
        input: row.text_or_null("input")?,
        options: row.text("options")?,
        definition: row.text("definition")?,
        definition_version: version(row.int("definition_version")?)?,
        status: parse(row.text("status")?)?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
        due_at: Timestamp(row.int("due_at")?),
        last_error: row.text_or_null("last_error")?,
        result: row.text_or_null("result")?,
        child_id: row.text_or_null("child_id")?.map(parse).transpose()?,
        created_at: Timestamp(row.int("created_at")?),
        updated_at: Timestamp(row.int("updated_at")?),
        lease_token: row.int("lease_token")?,
    })
}

pub(super) const MIGRATION_SELECT: &str = "SELECT id, definition, from_version, to_version, states, dry_run, \
     reason, actor, status, total, migrated, failed, skipped, cursor, created_at, updated_at, finished_at FROM migrations";

pub(super) fn migration(row: &dyn Row) -> Result<Migration> {
    let states: Option<String> = row.text_or_null("states")?;
    Ok(Migration {
        id: parse(row.text("id")?)?,
        definition: row.text("definition")?,
        from_version: version(row.int("from_version")?)?,
        to_version: version(row.int("to_version")?)?,
        states: states
            .map(|states| serde_json::from_str(&states))
            .transpose()
            .map_err(|err| Error::Corrupt(format!("states: {err}")))?,
        dry_run: row.int("dry_run")? != 0,
        reason: row.text("reason")?,
        actor: row.text("actor")?,
        status: parse(row.text("status")?)?,
        total: row.int("total")?,
        migrated: row.int("migrated")?,
        failed: row.int("failed")?,
        skipped: row.int("skipped")?,
        cursor: row.text_or_null("cursor")?.map(parse).transpose()?,
        created_at: Timestamp(row.int("created_at")?),
        updated_at: Timestamp(row.int("updated_at")?),
        finished_at: row.int_or_null("finished_at")?.map(Timestamp),
    })
}

pub(super) fn definition_version(row: &dyn Row) -> Result<DefinitionVersion> {
    let manifest: Vec<u8> = row.blob("manifest")?;
    Ok(DefinitionVersion {
        name: row.text("name")?,
        version: version(row.int("version")?)?,
        sha256: ModuleHash(row.text("sha256")?),
        manifest: postcard::from_bytes(&manifest)
            .map_err(|err| Error::Corrupt(format!("manifest: {err}")))?,
        deployed_at: Timestamp(row.int("deployed_at")?),
        retired_at: row.int_or_null("retired_at")?.map(Timestamp),
    })
}

pub(super) fn instance(row: &dyn Row) -> Result<Instance> {
    Ok(Instance {
        id: parse(row.text("id")?)?,
        definition: row.text("definition")?,
        definition_version: version(row.int("definition_version")?)?,
        module_sha256: ModuleHash(row.text("module_sha256")?),
        state: row.text("state")?,
        status: parse(row.text("status")?)?,
        data: row.text("data")?,
        revision: Revision(row.int("revision")?),
        message: row.text_or_null("message")?,
        error: row.text_or_null("error")?,
        parent_id: row.text_or_null("parent_id")?.map(parse).transpose()?,
        callback_url: row.text_or_null("callback_url")?,
        created_at: Timestamp(row.int("created_at")?),
        updated_at: Timestamp(row.int("updated_at")?),
    })
}

pub(super) fn history_entry(row: &dyn Row) -> Result<HistoryEntry> {
    Ok(HistoryEntry {
        instance_id: parse(row.text("instance_id")?)?,
        seq: row.int("seq")?,
        from_state: row.text_or_null("from_state")?,
        to_state: row.text("to_state")?,
        trigger: Trigger {
            kind: parse(row.text("trigger_kind")?)?,
            name: row.text("trigger_name")?,
            id: row.text_or_null("trigger_id")?,
            payload: row.text("payload")?,
        },
        actor: row.text("actor")?,
        definition_version: version(row.int("definition_version")?)?,
        module_sha256: ModuleHash(row.text("module_sha256")?),
        fuel_used: u64::try_from(row.int("fuel_used")?).unwrap_or_default(),
        at: Timestamp(row.int("at")?),
    })
}

pub(super) fn idempotency_record(row: &dyn Row) -> Result<IdempotencyRecord> {
    let headers: String = row.text("headers")?;
    let status: i64 = row.int("status")?;
    Ok(IdempotencyRecord {
        key: IdempotencyKey { scope: row.text("scope")?, key: row.text("idempotency_key")? },
        fingerprint: row.text("fingerprint")?,
        response: StoredResponse {
            status: u16::try_from(status).map_err(|_| Error::Corrupt(format!("HTTP status {status}")))?,
            headers: serde_json::from_str(&headers)
                .map_err(|err| Error::Corrupt(format!("headers: {err}")))?,
            body: row.blob("body")?,
        },
        created_at: Timestamp(row.int("created_at")?),
    })
}

pub(super) fn instance_count(row: &dyn Row) -> Result<InstanceCount> {
    Ok(InstanceCount {
        version: version(row.int("definition_version")?)?,
        status: parse(row.text("status")?)?,
        count: row.int("n")?,
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
