-- msg_id is unique per run of 4,096 ids, not over the whole table; older runs are
-- summarised by Bloom filters (gateway/history/msgids.py says how dedup stays exact).
-- Why: msg_ids are random (uuid5), so a unique index on msg_id alone made every batch
-- dirty a random leaf per message once it outgrew the cache: 1,293 pages a batch of
-- 1,000 at 1,000,000 stored, a quarter of the recorder's time (bench/history_ablation.py
-- variants a/h). Keyed (id >> 12, msg_id), a batch writes in the newest run's leaves.
--
-- SQLite cannot drop a column's UNIQUE constraint, so the table is built again (the
-- rows keep their ids: the text index, links and positions name them). Dropping the
-- old table drops its triggers; they are created again below as 002-004 left them.
-- Takes a while on a big history (bench: about a minute a million messages); it runs
-- once, in one transaction, when a busgate that has it first opens the database.
CREATE TABLE messages_new (
    id        INTEGER PRIMARY KEY,
    msg_id    TEXT NOT NULL,            -- stored once: messages_msg_id and msg_id_filters
    topic     TEXT NOT NULL,
    category  TEXT NOT NULL,
    timestamp REAL NOT NULL,
    publisher TEXT,
    seq_id    INTEGER,
    envelope  TEXT NOT NULL
);
INSERT INTO messages_new (id, msg_id, topic, category, timestamp, publisher, seq_id, envelope)
    SELECT id, msg_id, topic, category, timestamp, publisher, seq_id, envelope
    FROM messages ORDER BY id;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE UNIQUE INDEX messages_msg_id ON messages (id >> 12, msg_id);
CREATE INDEX messages_time ON messages (timestamp, id);
CREATE INDEX messages_topic ON messages (topic, timestamp, id);
CREATE INDEX messages_category ON messages (category, timestamp, id);
-- the Bloom filter of runs grp * 64 ... upto_run - 1 (all of them once complete)
CREATE TABLE msg_id_filters (
    grp      INTEGER PRIMARY KEY,
    upto_run INTEGER NOT NULL,
    bits     BLOB NOT NULL
);

CREATE TRIGGER messages_activity_add AFTER INSERT ON messages
WHEN NOT EXISTS (SELECT 1 FROM rollups_deferred) BEGIN
    INSERT INTO activity_hourly (hour, category, count)
    VALUES (CAST(NEW.timestamp / 3600 AS INTEGER), NEW.category, 1)
    ON CONFLICT (hour, category) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER messages_activity_remove AFTER DELETE ON messages BEGIN
    UPDATE activity_hourly SET count = count - 1
    WHERE hour = CAST(OLD.timestamp / 3600 AS INTEGER)
      AND category = OLD.category;
END;
CREATE TRIGGER stats_topic_days_insert AFTER INSERT ON messages
WHEN NOT EXISTS (SELECT 1 FROM rollups_deferred) BEGIN
    INSERT INTO stats_topic_days (day, topic, messages) VALUES (CAST(NEW.timestamp / 86400.0 AS INTEGER) - (NEW.timestamp < CAST(NEW.timestamp / 86400.0 AS INTEGER) * 86400), NEW.topic, 1)
        ON CONFLICT (day, topic) DO UPDATE SET messages = messages + 1;
END;
CREATE TRIGGER stats_topic_days_delete AFTER DELETE ON messages BEGIN
    UPDATE stats_topic_days SET messages = messages - 1
        WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND topic = OLD.topic;
    DELETE FROM stats_topic_days WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND topic = OLD.topic
        AND messages <= 0;
END;
CREATE TRIGGER stats_topic_days_update AFTER UPDATE OF timestamp, topic ON messages BEGIN
    UPDATE stats_topic_days SET messages = messages - 1
        WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND topic = OLD.topic;
    DELETE FROM stats_topic_days WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND topic = OLD.topic
        AND messages <= 0;
    INSERT INTO stats_topic_days (day, topic, messages) VALUES (CAST(NEW.timestamp / 86400.0 AS INTEGER) - (NEW.timestamp < CAST(NEW.timestamp / 86400.0 AS INTEGER) * 86400), NEW.topic, 1)
        ON CONFLICT (day, topic) DO UPDATE SET messages = messages + 1;
END;
