-- The text index merges its segments eight at a time (FTS5 automerge 8, not 4): each
-- batch writes a segment, and merging it into larger ones is most of the index's write
-- cost. Merging fewer, larger runs cut the index's write time by about a fifth at
-- 200,000 messages (bench/fts_merge.py) for a few more segments a `contains` read
-- looks through (well under a millisecond more). A setting kept in the index's own
-- config table: no rebuild, instant on an existing database.
INSERT INTO messages_text (messages_text, rank) VALUES ('automerge', 8);
