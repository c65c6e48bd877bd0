-- The text index without positions (FTS5 detail=none), each candidate checked exactly
-- against the message's folded text (gateway/history/textindex.py says how).
-- Why: with positions the index was the largest single cost of the recorder's ingest
-- at 1,000,000 stored messages (~64 of ~200 us CPU a message); at 200,000 (a
-- microbench of the index alone) detail=full cost 117 us CPU and 204 MB, detail=none
-- 67 us and 58 MB. Positions only told a phrase's trigrams apart; the check against
-- messages_fold (instr, in SQLite) tells them apart instead.
--
-- At 1,000,000 stored (bench/history_at_scale.py): batched ingest x1.19-1.32; the index
-- 957 -> 235 MB, plus 388 MB of folded text.
--
-- The old index is contentless, so nothing can be read back from it: after these
-- statements, in the same transaction, migrate.py fills both tables from the stored
-- envelopes (textindex.rebuild). Takes a while on a big history: 140 s (116 s CPU) a
-- million messages on a 2-core machine at load 2-3, the old index's pages freed for
-- reuse; it runs once, when a busgate that has it first opens the database.
-- Since 008 the step fills messages_fold only: 008 drops this messages_text again.
DROP TABLE messages_text;
CREATE VIRTUAL TABLE messages_text USING fts5 (body, content = '', tokenize = 'trigram',
                                               detail = none);
INSERT INTO messages_text (messages_text, rank) VALUES ('automerge', 8);
-- the text of messages_text (records.text_of), folded as the trigram index folds it
CREATE TABLE messages_fold (
    id   INTEGER PRIMARY KEY,              -- messages.id
    text TEXT NOT NULL
);
