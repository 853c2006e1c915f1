-- Issue 20: the change log records incremental list edits (`delta` rows: a segment's
-- included/excluded keys or a flag's individual targets added and removed). SQLite cannot
-- alter a CHECK constraint, so the table is rebuilt with the same columns and indexes.
CREATE TABLE change_log_new (
    id             INTEGER PRIMARY KEY,
    environment_id BIGINT      NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    version        BIGINT      NOT NULL,
    op             TEXT        NOT NULL CHECK (op IN ('put', 'delete', 'delta')),
    entity         TEXT        NOT NULL CHECK (entity IN ('flag', 'segment')),
    key            TEXT        NOT NULL,
    payload        TEXT,
    created_at     TEXT NOT NULL
);
INSERT INTO change_log_new (id, environment_id, version, op, entity, key, payload, created_at)
    SELECT id, environment_id, version, op, entity, key, payload, created_at FROM change_log;
DROP TABLE change_log;
ALTER TABLE change_log_new RENAME TO change_log;
CREATE INDEX change_log_by_version ON change_log (environment_id, version);
CREATE INDEX change_log_by_age ON change_log (created_at);
