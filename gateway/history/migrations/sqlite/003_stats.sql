-- Stats rollups (busgate stats, /stats): messages per UTC day per topic, per user and per
-- package, kept by triggers so the insert path in Python stays as it is, and filled here
-- for the rows stored before this migration. A week is then 7 day rows per name, however
-- many messages it had. day = floor(timestamp / 86400): the UTC day since the epoch,
-- written out below as CAST(t / 86400.0 AS INTEGER) - (t < CAST(t / 86400.0 AS INTEGER) * 86400)
-- (floor without SQLite's optional math functions; an integer cast alone rounds a negative
-- t up). gateway.history.store.utc_day is the same function in Python.
CREATE TABLE stats_topic_days (
    day      INTEGER NOT NULL,
    topic    TEXT NOT NULL,
    messages INTEGER NOT NULL,
    PRIMARY KEY (day, topic)
) WITHOUT ROWID;
CREATE TABLE stats_user_days (
    day      INTEGER NOT NULL,
    user_id  INTEGER NOT NULL REFERENCES users (id),
    messages INTEGER NOT NULL,
    PRIMARY KEY (day, user_id)
) WITHOUT ROWID;
CREATE TABLE stats_package_days (
    day        INTEGER NOT NULL,
    package_id INTEGER NOT NULL REFERENCES packages (id),
    messages   INTEGER NOT NULL,
    PRIMARY KEY (day, package_id)
) WITHOUT ROWID;

-- messages: one more on insert, one less on delete, moved on update
CREATE TRIGGER stats_topic_days_insert AFTER INSERT ON messages BEGIN
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
INSERT INTO stats_topic_days (day, topic, messages)
    SELECT CAST(timestamp / 86400.0 AS INTEGER) - (timestamp < CAST(timestamp / 86400.0 AS INTEGER) * 86400), topic, COUNT(*) FROM messages GROUP BY 1, 2;

-- user_messages: one more on insert, one less on delete, moved on update
CREATE TRIGGER stats_user_days_insert AFTER INSERT ON user_messages BEGIN
    INSERT INTO stats_user_days (day, user_id, messages) VALUES (CAST(NEW.timestamp / 86400.0 AS INTEGER) - (NEW.timestamp < CAST(NEW.timestamp / 86400.0 AS INTEGER) * 86400), NEW.user_id, 1)
        ON CONFLICT (day, user_id) DO UPDATE SET messages = messages + 1;
END;
CREATE TRIGGER stats_user_days_delete AFTER DELETE ON user_messages BEGIN
    UPDATE stats_user_days SET messages = messages - 1
        WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND user_id = OLD.user_id;
    DELETE FROM stats_user_days WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND user_id = OLD.user_id
        AND messages <= 0;
END;
CREATE TRIGGER stats_user_days_update AFTER UPDATE OF timestamp, user_id ON user_messages BEGIN
    UPDATE stats_user_days SET messages = messages - 1
        WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND user_id = OLD.user_id;
    DELETE FROM stats_user_days WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND user_id = OLD.user_id
        AND messages <= 0;
    INSERT INTO stats_user_days (day, user_id, messages) VALUES (CAST(NEW.timestamp / 86400.0 AS INTEGER) - (NEW.timestamp < CAST(NEW.timestamp / 86400.0 AS INTEGER) * 86400), NEW.user_id, 1)
        ON CONFLICT (day, user_id) DO UPDATE SET messages = messages + 1;
END;
INSERT INTO stats_user_days (day, user_id, messages)
    SELECT CAST(timestamp / 86400.0 AS INTEGER) - (timestamp < CAST(timestamp / 86400.0 AS INTEGER) * 86400), user_id, COUNT(*) FROM user_messages GROUP BY 1, 2;

-- package_messages: one more on insert, one less on delete, moved on update
CREATE TRIGGER stats_package_days_insert AFTER INSERT ON package_messages BEGIN
    INSERT INTO stats_package_days (day, package_id, messages) VALUES (CAST(NEW.timestamp / 86400.0 AS INTEGER) - (NEW.timestamp < CAST(NEW.timestamp / 86400.0 AS INTEGER) * 86400), NEW.package_id, 1)
        ON CONFLICT (day, package_id) DO UPDATE SET messages = messages + 1;
END;
CREATE TRIGGER stats_package_days_delete AFTER DELETE ON package_messages BEGIN
    UPDATE stats_package_days SET messages = messages - 1
        WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND package_id = OLD.package_id;
    DELETE FROM stats_package_days WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND package_id = OLD.package_id
        AND messages <= 0;
END;
CREATE TRIGGER stats_package_days_update AFTER UPDATE OF timestamp, package_id ON package_messages BEGIN
    UPDATE stats_package_days SET messages = messages - 1
        WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND package_id = OLD.package_id;
    DELETE FROM stats_package_days WHERE day = CAST(OLD.timestamp / 86400.0 AS INTEGER) - (OLD.timestamp < CAST(OLD.timestamp / 86400.0 AS INTEGER) * 86400) AND package_id = OLD.package_id
        AND messages <= 0;
    INSERT INTO stats_package_days (day, package_id, messages) VALUES (CAST(NEW.timestamp / 86400.0 AS INTEGER) - (NEW.timestamp < CAST(NEW.timestamp / 86400.0 AS INTEGER) * 86400), NEW.package_id, 1)
        ON CONFLICT (day, package_id) DO UPDATE SET messages = messages + 1;
END;
INSERT INTO stats_package_days (day, package_id, messages)
    SELECT CAST(timestamp / 86400.0 AS INTEGER) - (timestamp < CAST(timestamp / 86400.0 AS INTEGER) * 86400), package_id, COUNT(*) FROM package_messages GROUP BY 1, 2;
