-- Each user and package link keeps its message's category (service), as it keeps its
-- time, so a name's chart (pgstore.name_activity: /user/NAME, /package/NAME) reads its
-- link key range alone and never the messages table.
-- Why: the chart joined every link in the range to its message for the category, one
-- random read of a ~1.3 kB heap row per link (~6 rows a page): the busiest user's month
-- at 1,000,000 messages is ~25,000 links, 40-55 ms p50 and 70-120 ms p99 with the table
-- in the OS cache. Its link rows are ~60 bytes, written in time order: the same month
-- read from the links is ~250 index and ~240 heap pages, 9-11 ms p50, 14-15 ms p99
-- (bench/history_pg_name_activity.py, side by side; figures in the commits).
-- Measured and not taken:
--  * a covering index messages (id) INCLUDE (category): the join index-only, ~33 ms (a
--    descent per link), and only on pages VACUUM has marked all-visible: rows written
--    since then are fetched from the heap as before, and the newest month, the one
--    people look at, is what autovacuum has not reached yet (an insert-only table is
--    vacuumed after 20% growth: 200,000 messages at a million). Its month's rows made
--    not all-visible (by an UPDATE: two heap fetches per link), 250-550 ms. And it is a
--    seventh index on every message's insert.
--  * a rollup per (day, name, category): reads ~100 rows, but answers only day buckets,
--    and stays exact only with more triggers (link inserts joined to their messages,
--    deletes, and a message's category change moving the counts of each of its names).
-- What it costs: the writers (pgstore._ADD, _ADD_BATCH) give the column from the message
-- they insert; ingest at 1M measured within noise (batches 0.98-1.01x, server CPU
-- 0.98-1.01x, WAL per message up to 1.08x). The fill rewrites every link row once,
-- 13-19 s at 1,000,000 messages: the key and message indexes are dropped first and
-- rebuilt after it (a sorted build each instead of two index inserts per row: 1,000,000
-- package links 6.5 s against 12-15 s), and the column is NOT NULL from then on. The old
-- row versions are left to autovacuum (the chart reads the rebuilt indexes: none of them).
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
