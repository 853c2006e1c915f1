-- An idempotency record commits with the write it protects: the write's own transaction sets
-- `committed_at` (NULL until then). A record with `committed_at` set but no stored response
-- (the server stopped between the commit and storing the response) is answered as "applied,
-- response not kept" and never re-executed or reported "in progress".
ALTER TABLE idempotency_keys ADD COLUMN committed_at TEXT;
