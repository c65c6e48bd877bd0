-- History v2 (PostgreSQL), as SQLite's 002: messages per service per hour, kept by a
-- trigger (the Python insert path is untouched), so the dashboard's day and week
-- charts read a few hundred rows, never the messages table. hour = floor(timestamp / 3600).
CREATE TABLE activity_hourly (
    hour     BIGINT NOT NULL,
    category TEXT NOT NULL,
    count    BIGINT NOT NULL,
    PRIMARY KEY (hour, category)
);
CREATE FUNCTION history_activity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE activity_hourly SET count = count - 1
        WHERE hour = floor(OLD.timestamp / 3600)::bigint AND category = OLD.category;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO activity_hourly (hour, category, count)
        VALUES (floor(NEW.timestamp / 3600)::bigint, NEW.category, 1)
        ON CONFLICT (hour, category) DO UPDATE SET count = activity_hourly.count + 1;
    END IF;
    RETURN NULL;
END
$$;
-- an update of the time or the service moves the message (SQLite's 002 has no such trigger)
CREATE TRIGGER messages_activity AFTER INSERT OR DELETE OR UPDATE OF timestamp, category
    ON messages FOR EACH ROW EXECUTE FUNCTION history_activity();
-- the messages stored before this migration
INSERT INTO activity_hourly (hour, category, count)
SELECT floor(timestamp / 3600)::bigint, category, COUNT(*) FROM messages GROUP BY 1, 2;
