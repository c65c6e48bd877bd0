-- Stats rollups (PostgreSQL), as SQLite's 003: messages per UTC day per topic, per user
-- and per package, kept by triggers so the insert path in Python stays as it is, and
-- filled here for the rows stored before this migration. day = floor(timestamp / 86400)
-- (gateway.history.store.utc_day). A row that falls to 0 is deleted.
CREATE TABLE stats_topic_days (
    day      BIGINT NOT NULL,
    topic    TEXT NOT NULL,
    messages BIGINT NOT NULL,
    PRIMARY KEY (day, topic)
);
CREATE TABLE stats_user_days (
    day      BIGINT NOT NULL,
    user_id  BIGINT NOT NULL REFERENCES users (id),
    messages BIGINT NOT NULL,
    PRIMARY KEY (day, user_id)
);
CREATE TABLE stats_package_days (
    day        BIGINT NOT NULL,
    package_id BIGINT NOT NULL REFERENCES packages (id),
    messages   BIGINT NOT NULL,
    PRIMARY KEY (day, package_id)
);

-- messages: one more on insert, one less on delete, moved on update
CREATE FUNCTION history_stats_topic() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE stats_topic_days SET messages = messages - 1
        WHERE day = floor(OLD.timestamp / 86400)::bigint AND topic = OLD.topic;
        DELETE FROM stats_topic_days
        WHERE day = floor(OLD.timestamp / 86400)::bigint AND topic = OLD.topic AND messages <= 0;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO stats_topic_days (day, topic, messages)
        VALUES (floor(NEW.timestamp / 86400)::bigint, NEW.topic, 1)
        ON CONFLICT (day, topic) DO UPDATE SET messages = stats_topic_days.messages + 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER stats_topic_days AFTER INSERT OR DELETE OR UPDATE OF timestamp, topic ON messages
    FOR EACH ROW EXECUTE FUNCTION history_stats_topic();
INSERT INTO stats_topic_days (day, topic, messages)
SELECT floor(timestamp / 86400)::bigint, topic, COUNT(*) FROM messages GROUP BY 1, 2;

-- user_messages: one more on insert, one less on delete, moved on update
CREATE FUNCTION history_stats_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE stats_user_days SET messages = messages - 1
        WHERE day = floor(OLD.timestamp / 86400)::bigint AND user_id = OLD.user_id;
        DELETE FROM stats_user_days
        WHERE day = floor(OLD.timestamp / 86400)::bigint AND user_id = OLD.user_id AND messages <= 0;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO stats_user_days (day, user_id, messages)
        VALUES (floor(NEW.timestamp / 86400)::bigint, NEW.user_id, 1)
        ON CONFLICT (day, user_id) DO UPDATE SET messages = stats_user_days.messages + 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER stats_user_days AFTER INSERT OR DELETE OR UPDATE OF timestamp, user_id ON user_messages
    FOR EACH ROW EXECUTE FUNCTION history_stats_user();
INSERT INTO stats_user_days (day, user_id, messages)
SELECT floor(timestamp / 86400)::bigint, user_id, COUNT(*) FROM user_messages GROUP BY 1, 2;

-- package_messages: one more on insert, one less on delete, moved on update
CREATE FUNCTION history_stats_package() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE stats_package_days SET messages = messages - 1
        WHERE day = floor(OLD.timestamp / 86400)::bigint AND package_id = OLD.package_id;
        DELETE FROM stats_package_days
        WHERE day = floor(OLD.timestamp / 86400)::bigint AND package_id = OLD.package_id AND messages <= 0;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO stats_package_days (day, package_id, messages)
        VALUES (floor(NEW.timestamp / 86400)::bigint, NEW.package_id, 1)
        ON CONFLICT (day, package_id) DO UPDATE SET messages = stats_package_days.messages + 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER stats_package_days AFTER INSERT OR DELETE OR UPDATE OF timestamp, package_id ON package_messages
    FOR EACH ROW EXECUTE FUNCTION history_stats_package();
INSERT INTO stats_package_days (day, package_id, messages)
SELECT floor(timestamp / 86400)::bigint, package_id, COUNT(*) FROM package_messages GROUP BY 1, 2;
