-- History v2: messages per service per hour, kept by triggers (the Python insert path is
-- untouched), so the dashboard's day and week charts read a few hundred rows, never
-- the messages table. `hour` is floor(timestamp / 3600).
CREATE TABLE activity_hourly (
    hour     INTEGER NOT NULL,
    category TEXT NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (hour, category)
) WITHOUT ROWID;
CREATE TRIGGER messages_activity_add AFTER INSERT ON messages BEGIN
    INSERT INTO activity_hourly (hour, category, count)
    VALUES (CAST(NEW.timestamp / 3600 AS INTEGER), NEW.category, 1)
    ON CONFLICT (hour, category) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER messages_activity_remove AFTER DELETE ON messages BEGIN
    UPDATE activity_hourly SET count = count - 1
    WHERE hour = CAST(OLD.timestamp / 3600 AS INTEGER)
      AND category = OLD.category;
END;
-- the messages stored before this migration
INSERT INTO activity_hourly (hour, category, count)
SELECT CAST(timestamp / 3600 AS INTEGER), category, COUNT(*)
FROM messages GROUP BY 1, 2;
