-- The recorder's batches keep the rollups (002_activity, 003_stats) themselves: one
-- upsert per hour/day and name of a batch (gateway.history.store.SqliteHistory.flush),
-- not one per row from the triggers, the largest cost of a batch after the text index.
-- While a batch is written its transaction holds the one row of rollups_deferred, and
-- the insert triggers stand aside; the row is deleted before the batch's transaction
-- commits, so no other writer (or reader) ever sees it: every other insert, by busgate
-- or by hand, is counted by the triggers as before. The delete and update triggers are
-- unchanged.
CREATE TABLE IF NOT EXISTS rollups_deferred (one INTEGER PRIMARY KEY CHECK (one = 1));

DROP TRIGGER IF EXISTS messages_activity_add;
CREATE TRIGGER messages_activity_add AFTER INSERT ON messages
WHEN NOT EXISTS (SELECT 1 FROM rollups_deferred) BEGIN
    INSERT INTO activity_hourly (hour, category, count)
    VALUES (CAST(NEW.timestamp / 3600 AS INTEGER), NEW.category, 1)
    ON CONFLICT (hour, category) DO UPDATE SET count = count + 1;
END;

DROP TRIGGER IF EXISTS stats_topic_days_insert;
CREATE TRIGGER stats_topic_days_insert AFTER INSERT ON messages
WHEN NOT EXISTS (SELECT 1 FROM rollups_deferred) BEGIN
    INSERT INTO stats_topic_days (day, topic, messages) VALUES (CAST(NEW.timestamp / 86400.0 AS INTEGER) - (NEW.timestamp < CAST(NEW.timestamp / 86400.0 AS INTEGER) * 86400), NEW.topic, 1)
        ON CONFLICT (day, topic) DO UPDATE SET messages = messages + 1;
END;

DROP TRIGGER IF EXISTS stats_user_days_insert;
CREATE TRIGGER stats_user_days_insert AFTER INSERT ON user_messages
WHEN NOT EXISTS (SELECT 1 FROM rollups_deferred) BEGIN
    INSERT INTO stats_user_days (day, user_id, messages) VALUES (CAST(NEW.timestamp / 86400.0 AS INTEGER) - (NEW.timestamp < CAST(NEW.timestamp / 86400.0 AS INTEGER) * 86400), NEW.user_id, 1)
        ON CONFLICT (day, user_id) DO UPDATE SET messages = messages + 1;
END;

DROP TRIGGER IF EXISTS stats_package_days_insert;
CREATE TRIGGER stats_package_days_insert AFTER INSERT ON package_messages
WHEN NOT EXISTS (SELECT 1 FROM rollups_deferred) BEGIN
    INSERT INTO stats_package_days (day, package_id, messages) VALUES (CAST(NEW.timestamp / 86400.0 AS INTEGER) - (NEW.timestamp < CAST(NEW.timestamp / 86400.0 AS INTEGER) * 86400), NEW.package_id, 1)
        ON CONFLICT (day, package_id) DO UPDATE SET messages = messages + 1;
END;
