-- The outbox: effects written in the transaction of the transition that asked for
-- them, run by an executor after the commit, leased so that one host works on each.
CREATE TABLE effects (
    -- Derived from (instance, seq, key): a task's task_id.
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    effect_key TEXT NOT NULL,
    -- task | timer | child
    kind TEXT NOT NULL,
    name TEXT,
    input TEXT,
    options TEXT NOT NULL,
    definition TEXT NOT NULL,
    definition_version BIGINT NOT NULL,
    -- pending | waiting | ready (open) | done | cancelled
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    last_error TEXT,
    result TEXT,
    -- A child effect's instance, once started.
    child_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A key names one open effect of its instance at a time.
CREATE UNIQUE INDEX effects_open_key ON effects (instance_id, effect_key)
    WHERE status IN ('pending', 'waiting', 'ready');
CREATE INDEX effects_due ON effects (due_at) WHERE status IN ('pending', 'waiting', 'ready');
CREATE INDEX effects_by_instance ON effects (instance_id, seq);
CREATE INDEX effects_by_child ON effects (child_id) WHERE child_id IS NOT NULL;
CREATE INDEX instances_by_parent ON instances (parent_id) WHERE parent_id IS NOT NULL;
