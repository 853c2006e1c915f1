-- Release-plan guardrails: metric and PromQL checks run while a plan ramps; a breach rolls
-- the plan back by itself (state 'rolled_back', with the reason and the evidence).
-- SQLite cannot change a CHECK constraint: the table is rebuilt with the new state and columns.

CREATE TABLE release_plans_new (
    id              INTEGER PRIMARY KEY,
    project_id      BIGINT      NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment_id  BIGINT      NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    flag_id         BIGINT      NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    from_variation  BIGINT      NOT NULL,
    to_variation    BIGINT      NOT NULL,
    -- JSON array of {"percentage": p, "hold_minutes": m}.
    steps           TEXT        NOT NULL,
    -- The index of the step in force (-1 before the first is applied).
    current_step    BIGINT      NOT NULL DEFAULT -1,
    state           TEXT        NOT NULL
                    CHECK (state IN ('running', 'paused', 'completed', 'aborted', 'rolled_back',
                                     'waiting_for_approval')),
    -- Running: when the current step's hold ends. Paused: null (see remaining_ms).
    next_step_at    TEXT       ,
    remaining_ms    BIGINT,
    -- The fallthrough before the plan (restored on abort) and the one it last wrote.
    pre_fallthrough TEXT        NOT NULL,
    last_fallthrough TEXT,
    reason          TEXT,
    description     TEXT        NOT NULL DEFAULT '',
    author          TEXT        NOT NULL,
    author_token_id BIGINT,
    -- Held by whoever is changing the plan (a server's worker or an API request).
    claimed_by      TEXT,
    lease_until     TEXT       ,
    version         BIGINT      NOT NULL DEFAULT 1,
    created_at      TEXT        NOT NULL,
    updated_at      TEXT        NOT NULL,
    finished_at     TEXT,
    -- JSON array of guardrails ({"kind": "metric", …} or {"kind": "prometheus", …}).
    guardrails      TEXT        NOT NULL DEFAULT '[]',
        -- When the step in force began: guardrails compare the units exposed since then.
    step_started_at TEXT,
    -- When the guardrails are next due (running plans with guardrails only).
    next_check_at   TEXT,
    -- The readings of the last check, or those of the breach that rolled the plan back.
    evidence        TEXT
);
INSERT INTO release_plans_new (id, project_id, environment_id, flag_id, from_variation, to_variation, steps, current_step, state, next_step_at, remaining_ms, pre_fallthrough, last_fallthrough, reason, description, author, author_token_id, claimed_by, lease_until, version, created_at, updated_at, finished_at)
    SELECT id, project_id, environment_id, flag_id, from_variation, to_variation, steps, current_step, state, next_step_at, remaining_ms, pre_fallthrough, last_fallthrough, reason, description, author, author_token_id, claimed_by, lease_until, version, created_at, updated_at, finished_at FROM release_plans;
DROP TABLE release_plans;
ALTER TABLE release_plans_new RENAME TO release_plans;
CREATE INDEX release_plans_due ON release_plans (state, next_step_at);
CREATE INDEX release_plans_by_flag ON release_plans (flag_id, environment_id, id);
CREATE INDEX release_plans_checks ON release_plans (state, next_check_at);
