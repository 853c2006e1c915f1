-- Issue 16 (observability): the W3C trace context (`traceparent`) of the write that made each
-- change, so that servers and relays applying it from the change log continue that trace and
-- SDK streams carry it. Nullable and without a default: an older server beside this one
-- inserts rows without it, and rows written with tracing off have none.
ALTER TABLE change_log ADD COLUMN traceparent TEXT;
