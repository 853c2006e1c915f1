-- Raw analytics events (exposures, custom events, evaluation summaries) received on
-- `POST /events/v1/bulk`, one row per event. On the embedded engine a plain table; retention
-- (`VEXIL_EVENTS_RETENTION_DAYS`) deletes rows by receipt time. PostgreSQL partitions the same
-- table by day (see the PostgreSQL migration for the columns' meaning).
CREATE TABLE events (
    environment_id INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    key TEXT NOT NULL,
    context_key TEXT,
    context_kind TEXT,
    variation INTEGER,
    flag_version INTEGER,
    environment_version INTEGER,
    value REAL,
    detail TEXT
);

CREATE INDEX events_received ON events (received_at_ms);
