-- The text index leaves the history for a file of its own, <history>-text, filled
-- behind the recorder from messages_fold by a thread of its own
-- (gateway/history/textfile.py says why and how). The file is made and filled by the
-- first busgate that writes the history after this (busgate record): a million
-- messages in ~40 s, during which a contains search finds only what is indexed so far.
--
-- history_identity ties an index file to its history: an index found beside another
-- history (a copy, a restored backup) is filled again rather than trusted.
DROP TABLE messages_text;
CREATE TABLE history_identity (
    one   INTEGER PRIMARY KEY CHECK (one = 1),
    token TEXT NOT NULL
);
INSERT INTO history_identity (one, token) VALUES (1, lower(hex(randomblob(16))));
