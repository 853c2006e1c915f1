-- Progressive delivery: scheduled configuration changes and webhooks (subscriptions and the
-- delivery outbox). New tables only, so an older server runs beside a migrated database.

-- A configuration patch (or a kill) of one flag in one environment, due at `execute_at`.
-- Claimed by one server at a time (`claimed_by`, `lease_until`; PostgreSQL claims with
-- `FOR UPDATE SKIP LOCKED`), then executed through the store's ordinary write path.
CREATE TABLE scheduled_changes (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id     BIGINT      NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment_id BIGINT      NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    flag_id        BIGINT      NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    -- 'patch' or 'kill'.
    kind           TEXT        NOT NULL CHECK (kind IN ('patch', 'kill')),
    -- The configuration patch (null for a kill).
    patch          JSONB,
    -- The configuration version and document the change was written against: conflicts
    -- are the touched fields that changed since.
    base_version   BIGINT      NOT NULL,
    base_config    JSONB       NOT NULL,
    force          BOOLEAN     NOT NULL DEFAULT FALSE,
    execute_at     TIMESTAMPTZ NOT NULL,
    description    TEXT        NOT NULL DEFAULT '',
    author         TEXT        NOT NULL,
    author_token_id BIGINT,
    state          TEXT        NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'executed', 'failed', 'cancelled')),
    reason         TEXT,
    -- How many times a server claimed it (1 when executed exactly once).
    attempts       BIGINT      NOT NULL DEFAULT 0,
    claimed_by     TEXT,
    lease_until    TIMESTAMPTZ,
    -- The configuration version the execution produced (or found already in place).
    result_version BIGINT,
    finished_at    TIMESTAMPTZ,
    cancelled_by   TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX scheduled_changes_due ON scheduled_changes (state, execute_at);
CREATE INDEX scheduled_changes_by_flag ON scheduled_changes (flag_id, environment_id, id);

-- A project's webhook: where to send which events, signed with `secret`.
CREATE TABLE webhook_subscriptions (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id           BIGINT      NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    url                  TEXT        NOT NULL,
    -- HMAC-SHA256 key; needed in clear to sign, never returned after creation.
    secret               TEXT        NOT NULL,
    -- JSON array of event names or prefixes ("flag.*"); ["*"] is every event.
    events               JSONB       NOT NULL,
    -- 'json' or 'slack'.
    format               TEXT        NOT NULL CHECK (format IN ('json', 'slack')),
    description          TEXT        NOT NULL DEFAULT '',
    enabled              BOOLEAN     NOT NULL DEFAULT TRUE,
    disabled_reason      TEXT,
    consecutive_failures BIGINT      NOT NULL DEFAULT 0,
    version              BIGINT      NOT NULL DEFAULT 1,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_subscriptions_by_project ON webhook_subscriptions (project_id);

-- The outbox: one row per subscription and event, written in the transaction of the change
-- it reports, then delivered (and retried) by the delivery worker.
CREATE TABLE webhook_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id BIGINT      NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event           TEXT        NOT NULL,
    payload         JSONB       NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT      NOT NULL DEFAULT 0,
    -- Null until the worker first sees it: then due at once.
    next_attempt_at TIMESTAMPTZ,
    lease_until     TIMESTAMPTZ,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_by_subscription ON webhook_deliveries (subscription_id, id);

-- A release plan: moves a flag's fallthrough in one environment from one variation to another
-- in steps (percentage, minimum hold). At most one running or paused plan per flag and
-- environment (checked by the server under the plan lease).
CREATE TABLE release_plans (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id      BIGINT      NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment_id  BIGINT      NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    flag_id         BIGINT      NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    from_variation  BIGINT      NOT NULL,
    to_variation    BIGINT      NOT NULL,
    -- JSON array of {"percentage": p, "hold_minutes": m}.
    steps           JSONB       NOT NULL,
    -- The index of the step in force (-1 before the first is applied).
    current_step    BIGINT      NOT NULL DEFAULT -1,
    state           TEXT        NOT NULL
                    CHECK (state IN ('running', 'paused', 'completed', 'aborted')),
    -- Running: when the current step's hold ends. Paused: null (see remaining_ms).
    next_step_at    TIMESTAMPTZ,
    remaining_ms    BIGINT,
    -- The fallthrough before the plan (restored on abort) and the one it last wrote.
    pre_fallthrough JSONB       NOT NULL,
    last_fallthrough JSONB,
    reason          TEXT,
    description     TEXT        NOT NULL DEFAULT '',
    author          TEXT        NOT NULL,
    author_token_id BIGINT,
    -- Held by whoever is changing the plan (a server's worker or an API request).
    claimed_by      TEXT,
    lease_until     TIMESTAMPTZ,
    version         BIGINT      NOT NULL DEFAULT 1,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ
);
CREATE INDEX release_plans_due ON release_plans (state, next_step_at);
CREATE INDEX release_plans_by_flag ON release_plans (flag_id, environment_id, id);
