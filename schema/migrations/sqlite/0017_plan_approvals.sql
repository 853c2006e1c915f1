-- Release plans under an approval policy: a step that needs a write becomes a change request,
-- and the plan waits ('waiting_for_approval') for it. This is the request of the pending step.
ALTER TABLE release_plans ADD COLUMN change_request_id BIGINT
    REFERENCES change_requests (id) ON DELETE SET NULL;
CREATE INDEX release_plans_waiting ON release_plans (state, change_request_id);
