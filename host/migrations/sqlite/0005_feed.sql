-- The transition feed: every committed transition, numbered in commit order.
--
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
    seq BIGINT NOT NULL,
    definition TEXT NOT NULL,
    -- The instance's status right after this transition.
    status TEXT NOT NULL
);

-- Transitions committed before the feed existed, in the order they were made; only an
-- instance's last one can have ended it.
INSERT INTO feed (position, instance_id, seq, definition, status)
SELECT ROW_NUMBER() OVER (ORDER BY h.at, h.instance_id, h.seq), h.instance_id, h.seq, i.definition,
       CASE WHEN h.seq = i.revision THEN i.status ELSE 'running' END
FROM history h JOIN instances i ON i.id = h.instance_id;

INSERT INTO feed_clock (id, position) SELECT 1, COUNT(*) FROM feed;
