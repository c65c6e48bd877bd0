-- History v1 on PostgreSQL: the same tables as SQLite's 001, and a pg_trgm GIN index of
-- the body text for `contains` (ILIKE '%term%': any substring of 3+ characters, non-ASCII
-- included, case folded by the database's LC_CTYPE). No TimescaleDB. Times are epoch
-- seconds (the envelope's). pg_trgm ships with PostgreSQL (Debian: postgresql-contrib,
-- part of postgresql-NN) and is a trusted extension: the database's owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE messages (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- insertion order
    msg_id    TEXT NOT NULL UNIQUE,     -- a message is stored once, whatever comes again
    topic     TEXT NOT NULL,
    category  TEXT NOT NULL,            -- the service token (datanommer's category)
    timestamp DOUBLE PRECISION NOT NULL,
    publisher TEXT,
    seq_id    BIGINT,
    envelope  TEXT NOT NULL,            -- the envelope as received (canonical JSON)
    body      TEXT NOT NULL             -- the body as JSON, non-ASCII kept: what `contains` reads
);
CREATE INDEX messages_time ON messages (timestamp, id);
CREATE INDEX messages_topic ON messages (topic, timestamp, id);
CREATE INDEX messages_category ON messages (category, timestamp, id);
CREATE INDEX messages_body_trgm ON messages USING gin (body gin_trgm_ops);
CREATE TABLE users (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE packages (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name TEXT NOT NULL UNIQUE);
-- the message's time is repeated here so "user X, newest first" is one index range
CREATE TABLE user_messages (
    user_id    BIGINT NOT NULL REFERENCES users (id),
    timestamp  DOUBLE PRECISION NOT NULL,
    message_id BIGINT NOT NULL REFERENCES messages (id),
    PRIMARY KEY (user_id, timestamp, message_id)
);
CREATE INDEX user_messages_message ON user_messages (message_id);
CREATE TABLE package_messages (
    package_id BIGINT NOT NULL REFERENCES packages (id),
    timestamp  DOUBLE PRECISION NOT NULL,
    message_id BIGINT NOT NULL REFERENCES messages (id),
    PRIMARY KEY (package_id, timestamp, message_id)
);
CREATE INDEX package_messages_message ON package_messages (message_id);
