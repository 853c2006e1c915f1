-- Issue 20: a segment's key lists are stored one key per row, so an edit of a few keys writes
-- a few rows instead of rewriting a JSON array of up to 1,000,000 keys in the write
-- transaction. `list` is 0 for `included`, 1 for `excluded`; `pos` keeps the canonical list
-- order (removals keep the others' order, additions append after the largest `pos`).
CREATE TABLE segment_keys (
    segment_id BIGINT NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    list       BIGINT NOT NULL CHECK (list IN (0, 1)),
    pos        BIGINT NOT NULL,
    key        TEXT   NOT NULL,
    PRIMARY KEY (segment_id, list, key)
);
-- Reading a list in order (snapshots) is an index-only scan of this index.
CREATE UNIQUE INDEX segment_keys_order ON segment_keys (segment_id, list, pos) INCLUDE (key);

-- The lists move out of the JSON columns, in order. A key listed twice (never written by the
-- store, which refuses duplicates) keeps its first place.
INSERT INTO segment_keys (segment_id, list, pos, key)
SELECT s.id, 0, e.ord, e.k
FROM segments s CROSS JOIN LATERAL jsonb_array_elements_text(s.included) WITH ORDINALITY AS e (k, ord)
ON CONFLICT DO NOTHING;
INSERT INTO segment_keys (segment_id, list, pos, key)
SELECT s.id, 1, e.ord, e.k
FROM segments s CROSS JOIN LATERAL jsonb_array_elements_text(s.excluded) WITH ORDINALITY AS e (k, ord)
ON CONFLICT DO NOTHING;

ALTER TABLE segments DROP COLUMN included, DROP COLUMN excluded;
