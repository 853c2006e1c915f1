-- Raw analytics events (exposures, custom events, evaluation summaries) received on
-- `POST /events/v1/bulk`, one row per event.
--
-- Built for volume: declaratively partitioned by day of *receipt* (`received_at_ms`, ms since
-- the epoch, UTC), so that retention drops whole partitions instead of deleting rows. The
-- server creates the partitions it needs ahead of time (`events_pYYYYMMDD`, one per UTC day,
-- under an advisory lock so several servers can do it at once) and drops those older than
-- `VEXIL_EVENTS_RETENTION_DAYS`. No index and no foreign key: rows are only appended, and read
-- back in bulk by day; analysis reads the per-experiment aggregates maintained at ingestion
-- instead. The rows of a deleted environment go with their partitions.
--
-- `kind` is `exposure`, `custom` or `summary`. `key` is the flag key (exposure), the event key
-- (custom) or empty (summary). `time_ms` is the event's time (a summary's `end`). `detail`
-- holds what has no column: a summary's interval start, counters and sender.
CREATE TABLE events (
    environment_id BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    key TEXT NOT NULL,
    context_key TEXT,
    context_kind TEXT,
    variation INTEGER,
    flag_version BIGINT,
    environment_version BIGINT,
    value DOUBLE PRECISION,
    detail JSONB
) PARTITION BY RANGE (received_at_ms);
