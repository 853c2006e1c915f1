-- Issue 20: the change log records incremental list edits (`delta` rows: a segment's
-- included/excluded keys or a flag's individual targets added and removed), so catch-up and
-- resume replay a one-key edit as a one-key delta instead of the whole item.
ALTER TABLE change_log DROP CONSTRAINT change_log_op_check;
ALTER TABLE change_log ADD CONSTRAINT change_log_op_check
    CHECK (op IN ('put', 'delete', 'delta'));
