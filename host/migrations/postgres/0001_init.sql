-- Times are epoch milliseconds, ids and JSON are text: one portable schema for both backends.

CREATE TABLE definitions (
    name TEXT PRIMARY KEY,
    -- The version new instances get; NULL means the highest deployed, non-retired one.
    pinned_version BIGINT
);

CREATE TABLE definition_versions (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    -- The manifest exactly as the module returned it (postcard).
    manifest BYTEA NOT NULL,
    module BYTEA NOT NULL,
    deployed_at BIGINT NOT NULL,
    retired_at BIGINT,
    PRIMARY KEY (name, version)
);

CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    definition_version BIGINT NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    revision BIGINT NOT NULL,
    message TEXT,
    error TEXT,
    parent_id TEXT,
    callback_url TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX instances_by_definition ON instances (definition, definition_version, status);

CREATE TABLE history (
    instance_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    trigger_name TEXT NOT NULL,
    trigger_id TEXT,
    payload TEXT NOT NULL,
    actor TEXT NOT NULL,
    definition_version BIGINT NOT NULL,
    module_sha256 TEXT NOT NULL,
    fuel_used BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);

CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status BIGINT NOT NULL,
    -- JSON array of [name, value] pairs.
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
