-- Bulk migrations: a long-running operation moving instances between versions.
CREATE TABLE migrations (
    id TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    from_version BIGINT NOT NULL,
    to_version BIGINT NOT NULL,
    -- JSON array of state names, or NULL for every state.
    states TEXT,
    dry_run BIGINT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    -- running | completed
    status TEXT NOT NULL,
    total BIGINT NOT NULL,
    migrated BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    skipped BIGINT NOT NULL,
    -- The last instance id handled; instances are taken in id order.
    cursor TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);

CREATE TABLE migration_failures (
    migration_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (migration_id, instance_id)
);
