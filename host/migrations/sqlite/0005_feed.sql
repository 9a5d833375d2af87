-- The transition feed: every committed transition, in commit order.
--
-- SQLite has one writer at a time and history rows are never deleted, so the order of
-- history's rowids is the order transitions were committed in: the rowid is the feed's
-- position, and nothing more is written per transition.
--
-- Each history entry records the instance's status right after it, for the feed.
ALTER TABLE history ADD COLUMN status TEXT;
UPDATE history SET status = CASE
    WHEN seq = (SELECT revision FROM instances WHERE instances.id = history.instance_id)
    THEN (SELECT status FROM instances WHERE instances.id = history.instance_id)
    ELSE 'running' END;
