-- Each user and package link keeps its message's category (service), as it keeps its
-- time, so a name's chart (pgstore.name_activity: /user/NAME, /package/NAME) reads its
-- link key range alone and never the messages table.
-- Why: the chart joined every link in the range to its message for the category, one
-- random read of a ~1.3 kB heap row per link (~6 rows a page): the busiest user's month
-- at 1,000,000 messages is ~25,000 links, 50-110 ms with the table in the OS cache.
-- Its link rows are ~60 bytes, written in time order: the same month read from the links
-- is ~400 pages, 10-15 ms (bench/history_pg_name_activity.py, figures in the commit).
-- Measured and not taken:
--  * a covering index messages (id) INCLUDE (category): the join index-only, 30-35 ms
--    (a descent per link), and only on all-visible pages: rows written since the last
--    VACUUM are fetched from the heap as before, and the newest month, the one people
--    look at, is exactly what autovacuum has not reached yet (an insert-only table is
--    vacuumed after 20% growth: 200,000 messages at a million). It also adds a seventh
--    index to every message's insert.
--  * a rollup per (day, name, category): reads ~100 rows, but answers only day buckets,
--    and stays exact only with more triggers (link inserts joined to their messages,
--    deletes, and a message's category change moving the counts of each of its names).
-- The fill rewrites every link row once: the key and message indexes are dropped first
-- and rebuilt after it (one sorted build each, not 2 index inserts per row: measured
-- 2-3x quicker at 1,000,000 messages), the column is NOT NULL from then on (the writers,
-- pgstore._ADD and _ADD_BATCH, give it). The old row versions are left for autovacuum.
ALTER TABLE user_messages ADD COLUMN category TEXT;
ALTER TABLE user_messages DROP CONSTRAINT user_messages_pkey;
DROP INDEX user_messages_message;
UPDATE user_messages l SET category = m.category FROM messages m WHERE m.id = l.message_id;
ALTER TABLE user_messages ALTER COLUMN category SET NOT NULL,
    ADD PRIMARY KEY (user_id, timestamp, message_id);
CREATE INDEX user_messages_message ON user_messages (message_id);

ALTER TABLE package_messages ADD COLUMN category TEXT;
ALTER TABLE package_messages DROP CONSTRAINT package_messages_pkey;
DROP INDEX package_messages_message;
UPDATE package_messages l SET category = m.category FROM messages m WHERE m.id = l.message_id;
ALTER TABLE package_messages ALTER COLUMN category SET NOT NULL,
    ADD PRIMARY KEY (package_id, timestamp, message_id);
CREATE INDEX package_messages_message ON package_messages (message_id);

-- A message's category changed (nothing in busgate does; an operator may): its links
-- follow, so the chart stays exact. Row trigger on UPDATE only: inserts pay nothing.
CREATE FUNCTION history_link_category() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE user_messages SET category = NEW.category WHERE message_id = NEW.id;
    UPDATE package_messages SET category = NEW.category WHERE message_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_link_category AFTER UPDATE OF category ON messages
    FOR EACH ROW WHEN (OLD.category IS DISTINCT FROM NEW.category)
    EXECUTE FUNCTION history_link_category();
