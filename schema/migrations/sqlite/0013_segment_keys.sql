-- Issue 20: a segment's key lists are stored one key per row, so an edit of a few keys writes
-- a few rows instead of rewriting a JSON array of up to 1,000,000 keys in the write
-- transaction. `list` is 0 for `included`, 1 for `excluded`; `pos` keeps the canonical list
-- order (removals keep the others' order, additions append after the largest `pos`).
CREATE TABLE segment_keys (
    segment_id INTEGER NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    list       INTEGER NOT NULL CHECK (list IN (0, 1)),
    pos        INTEGER NOT NULL,
    key        TEXT    NOT NULL,
    PRIMARY KEY (segment_id, list, key)
) WITHOUT ROWID;
-- Covering: reading a list in order (snapshots) never goes back to the table.
CREATE UNIQUE INDEX segment_keys_order ON segment_keys (segment_id, list, pos, key);

-- The lists move out of the JSON columns, in order. A key listed twice (never written by the
-- store, which refuses duplicates) keeps its first place.
INSERT OR IGNORE INTO segment_keys (segment_id, list, pos, key)
SELECT s.id, 0, j.key + 1, j.value FROM segments s, json_each(s.included) AS j;
INSERT OR IGNORE INTO segment_keys (segment_id, list, pos, key)
SELECT s.id, 1, j.key + 1, j.value FROM segments s, json_each(s.excluded) AS j;

ALTER TABLE segments DROP COLUMN included;
ALTER TABLE segments DROP COLUMN excluded;
