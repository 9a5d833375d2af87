-- The transition feed: every committed transition, numbered in commit order.
--
-- Each history entry records the instance's status right after it, for the feed.
ALTER TABLE history ADD COLUMN status TEXT;
UPDATE history SET status = CASE
    WHEN seq = (SELECT revision FROM instances WHERE instances.id = history.instance_id)
    THEN (SELECT status FROM instances WHERE instances.id = history.instance_id)
    ELSE 'running' END;

-- A commit takes its positions from feed_clock as the last thing it does before COMMIT.
-- The clock's row lock is held until the transaction ends, and a transaction becomes
-- visible before it lets its locks go, so a commit can only take positions once every
-- commit numbered before it is visible: a reader never sees a position whose
-- predecessors are still to appear. A rolled-back commit gives its numbers back.
CREATE TABLE feed_clock (
    id BIGINT PRIMARY KEY,
    position BIGINT NOT NULL
);

CREATE TABLE feed (
    position BIGINT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    seq BIGINT NOT NULL
);

-- Transitions committed before the feed existed, in the order they were made.
INSERT INTO feed (position, instance_id, seq)
SELECT ROW_NUMBER() OVER (ORDER BY at, instance_id, seq), instance_id, seq FROM history;

INSERT INTO feed_clock (id, position) SELECT 1, COUNT(*) FROM feed;
