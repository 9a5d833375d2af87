-- Events clients post to instances (vendors' webhooks): kept once per event id, with
-- what became of each.
CREATE TABLE events (
    instance_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    -- applied | refused
    status TEXT NOT NULL,
    code TEXT,
    reason TEXT,
    -- The history entry of the transition that applied it.
    seq BIGINT,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (instance_id, event_id)
);
