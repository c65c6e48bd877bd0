-- The live feed in commit order (PostgreSQL). An id comes from a sequence when the row is
-- inserted, but two writers (two recorders, or a recorder and a backfill) commit in any
-- order: reading "id > the last id sent" could skip a row that commits after a higher id
-- was already sent. Each row now keeps its writing transaction's id (xid8: 64 bits, never
-- wraps), and the feed (gateway.history.pgstore since) reads in (xid, id) order only the
-- rows below a horizon no running writer of messages is under (pgstore._HORIZON): that
-- part of the table is final and nothing can appear behind the feed's position.
-- Rows stored before this migration all get its transaction's id (a stable default is
-- stored once, not written into every row): they keep their id order among themselves.
-- Numbered 006, not 004: numbers are unique across branches, gaps are allowed.
ALTER TABLE messages ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX messages_feed ON messages (xid, id);
