-- A posted event the definition failed on (a trap, a guest limit) is kept as
-- `accepted` and applied later, in the order received: the executor tries again,
-- backing off, until it applies or is refused.
ALTER TABLE events ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN next_attempt_at BIGINT;
ALTER TABLE events ADD COLUMN last_error TEXT;
CREATE INDEX events_accepted ON events (next_attempt_at) WHERE status = 'accepted';
