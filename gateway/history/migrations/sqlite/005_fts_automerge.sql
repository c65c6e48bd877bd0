-- The text index merges its segments eight at a time (FTS5 automerge 8, not 4): each
-- batch writes a segment, and merging segments into larger ones is most of the index's
-- write cost, growing with the history. At 200,000 messages: the index alone 76 -> 55
-- us a message (bench/fts_merge.py), the recorder's batches 4,220 -> 5,054/s overall
-- (bench/history.py); at 1,000,000 the index alone 98 -> 80 us, its reads within 3%
-- (bench/fts_merge.py). The price is more segments for a `contains` read to look
-- through: at 200,000, /raw contains p50 +1-2 ms (8 -> 9 ms frequent, 5 -> 6 ms rare),
-- far inside its 250 ms target. A setting kept in the index's own config table: no
-- rebuild, instant on an existing database.
INSERT INTO messages_text (messages_text, rank) VALUES ('automerge', 8);
