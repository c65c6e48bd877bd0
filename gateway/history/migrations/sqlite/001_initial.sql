-- History v1: messages once by msg_id, users and packages by association, FTS5 trigram
-- index of the body text for `contains`. Times are epoch seconds (the envelope's).
CREATE TABLE messages (
    id        INTEGER PRIMARY KEY,      -- insertion order; paging ties broken by it
    msg_id    TEXT NOT NULL UNIQUE,     -- a message is stored once, whatever comes again
    topic     TEXT NOT NULL,
    category  TEXT NOT NULL,            -- the service token (datanommer's category)
    timestamp REAL NOT NULL,
    publisher TEXT,
    seq_id    INTEGER,
    envelope  TEXT NOT NULL             -- the envelope as received (canonical JSON)
);
CREATE INDEX messages_time ON messages (timestamp, id);
CREATE INDEX messages_topic ON messages (topic, timestamp, id);
CREATE INDEX messages_category ON messages (category, timestamp, id);
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE packages (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
-- the message's time is repeated here so "user X, newest first" is one index range
CREATE TABLE user_messages (
    user_id    INTEGER NOT NULL REFERENCES users (id),
    timestamp  REAL NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages (id),
    PRIMARY KEY (user_id, timestamp, message_id)
) WITHOUT ROWID;
CREATE INDEX user_messages_message ON user_messages (message_id);
CREATE TABLE package_messages (
    package_id INTEGER NOT NULL REFERENCES packages (id),
    timestamp  REAL NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages (id),
    PRIMARY KEY (package_id, timestamp, message_id)
) WITHOUT ROWID;
CREATE INDEX package_messages_message ON package_messages (message_id);
-- contentless: the text is the body as JSON with non-ASCII kept (UTF-8), so `contains`
-- finds "Jörg"; trigram makes any substring of 3+ characters an index look-up.
CREATE VIRTUAL TABLE messages_text USING fts5 (body, content = '', tokenize = 'trigram');
