-- The rollups (002 activity, 003 stats) counted once per INSERT statement, not per row.
-- Why: a batch of 1,000 messages fired ~5,000 row triggers (two per message, one per
-- user and package link), each a PL/pgSQL call and an INSERT ... ON CONFLICT DO UPDATE
-- of a rollup row that the same batch updates again and again (a new row version per
-- hit). A statement trigger reads the rows the statement inserted (its transition
-- table: a row ON CONFLICT DO NOTHING skipped is not in it) and adds each key's count
-- once, in key order (concurrent writers lock the rollup rows in the same order).
-- Deletes and updates keep their row triggers (same functions: they are rare, and a
-- transition table is allowed only on a trigger of one event). The counts are the
-- same: nothing else changes, and no stored row is touched (no refill needed).
DROP TRIGGER messages_activity ON messages;
DROP TRIGGER stats_topic_days ON messages;
DROP TRIGGER stats_user_days ON user_messages;
DROP TRIGGER stats_package_days ON package_messages;
CREATE TRIGGER messages_activity AFTER DELETE OR UPDATE OF timestamp, category
    ON messages FOR EACH ROW EXECUTE FUNCTION history_activity();
CREATE TRIGGER stats_topic_days AFTER DELETE OR UPDATE OF timestamp, topic ON messages
    FOR EACH ROW EXECUTE FUNCTION history_stats_topic();
CREATE TRIGGER stats_user_days AFTER DELETE OR UPDATE OF timestamp, user_id ON user_messages
    FOR EACH ROW EXECUTE FUNCTION history_stats_user();
CREATE TRIGGER stats_package_days AFTER DELETE OR UPDATE OF timestamp, package_id
    ON package_messages FOR EACH ROW EXECUTE FUNCTION history_stats_package();

CREATE FUNCTION history_messages_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO activity_hourly (hour, category, count)
    SELECT floor(timestamp / 3600)::bigint, category, COUNT(*) FROM added
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (hour, category) DO UPDATE SET count = activity_hourly.count + EXCLUDED.count;
    INSERT INTO stats_topic_days (day, topic, messages)
    SELECT floor(timestamp / 86400)::bigint, topic, COUNT(*) FROM added
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, topic) DO UPDATE SET messages = stats_topic_days.messages + EXCLUDED.messages;
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_added AFTER INSERT ON messages REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION history_messages_added();

CREATE FUNCTION history_user_links_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_user_days (day, user_id, messages)
    SELECT floor(timestamp / 86400)::bigint, user_id, COUNT(*) FROM added
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, user_id) DO UPDATE SET messages = stats_user_days.messages + EXCLUDED.messages;
    RETURN NULL;
END
$$;
CREATE TRIGGER user_messages_added AFTER INSERT ON user_messages REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION history_user_links_added();

CREATE FUNCTION history_package_links_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO stats_package_days (day, package_id, messages)
    SELECT floor(timestamp / 86400)::bigint, package_id, COUNT(*) FROM added
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, package_id) DO UPDATE
        SET messages = stats_package_days.messages + EXCLUDED.messages;
    RETURN NULL;
END
$$;
CREATE TRIGGER package_messages_added AFTER INSERT ON package_messages
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION history_package_links_added();
