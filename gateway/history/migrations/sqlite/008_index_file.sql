-- The read indexes leave the history for a file of its own, <history>-index, filled
-- behind the recorder by a thread of its own (gateway/history/indexfile.py says why
-- and how): the contains index, the user and package links and their per-day counts.
-- The history keeps what they are made from: the folded texts (messages_fold, 007) and
-- each message's names (message_names, here). The file is made and filled by the first
-- busgate that opens the history for writing after this (busgate record, busgate web):
-- about a minute a million messages, logged.
--
-- history_identity ties an index file to its history: one found beside another
-- history (a copy, a restored backup) is filled again rather than trusted.
DROP TABLE messages_text;
CREATE TABLE history_identity (
    one   INTEGER PRIMARY KEY CHECK (one = 1),
    token TEXT NOT NULL
);
INSERT INTO history_identity (one, token) VALUES (1, lower(hex(randomblob(16))));
-- a message's users (kind 0) and packages (kind 1), appended in id order by the
-- recorder: its batch writes the newest pages only, where the links it had written
-- rewrote a page of a big index per link
CREATE TABLE message_names (
    message_id INTEGER NOT NULL,           -- messages.id
    kind       INTEGER NOT NULL,           -- 0: users.id, 1: packages.id
    name_id    INTEGER NOT NULL,
    timestamp  REAL NOT NULL,              -- the message's
    PRIMARY KEY (message_id, kind, name_id)
) WITHOUT ROWID;
INSERT INTO message_names (message_id, kind, name_id, timestamp)
    SELECT message_id, 0, user_id, timestamp FROM user_messages
    UNION ALL
    SELECT message_id, 1, package_id, timestamp FROM package_messages
    ORDER BY 1, 2, 3;
DROP TABLE user_messages;
DROP TABLE package_messages;
DROP TABLE stats_user_days;
DROP TABLE stats_package_days;
