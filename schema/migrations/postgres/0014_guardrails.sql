-- Release-plan guardrails: metric and PromQL checks run while a plan ramps; a breach rolls
-- the plan back by itself (state 'rolled_back', with the reason and the evidence).

ALTER TABLE release_plans DROP CONSTRAINT release_plans_state_check;
ALTER TABLE release_plans ADD CONSTRAINT release_plans_state_check
    CHECK (state IN ('running', 'paused', 'completed', 'aborted', 'rolled_back',
                                     'waiting_for_approval'));
-- JSON array of guardrails ({"kind": "metric", …} or {"kind": "prometheus", …}).
ALTER TABLE release_plans ADD COLUMN guardrails JSONB NOT NULL DEFAULT '[]';
-- When the step in force began: guardrails compare the units exposed since then.
ALTER TABLE release_plans ADD COLUMN step_started_at TIMESTAMPTZ;
-- When the guardrails are next due (running plans with guardrails only).
ALTER TABLE release_plans ADD COLUMN next_check_at TIMESTAMPTZ;
-- The readings of the last check, or those of the breach that rolled the plan back.
ALTER TABLE release_plans ADD COLUMN evidence JSONB;
CREATE INDEX release_plans_checks ON release_plans (state, next_check_at);
