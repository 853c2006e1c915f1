-- Change distribution on SQLite: there is no NOTIFY; the server wakes its change feed in
-- process after every committed write transaction. Only the compaction index is needed.
CREATE INDEX change_log_by_age ON change_log (created_at);
