-- Approvals: a per-environment policy that routes flag configuration changes through change
-- requests, and the change requests with their reviews. New tables only, so an older server
-- runs beside a migrated database (it does not enforce policies it does not know).

-- At most one policy per environment. With a policy, a configuration write to the
-- environment is refused unless it applies an approved change request.
CREATE TABLE approval_policies (
    environment_id     BIGINT      PRIMARY KEY REFERENCES environments (id) ON DELETE CASCADE,
    -- Distinct approvers a change request needs (1 to 10).
    required_approvals BIGINT      NOT NULL CHECK (required_approvals BETWEEN 1 AND 10),
    -- The least role an approval counts for: 'editor' or 'admin'.
    approver_role      TEXT        NOT NULL CHECK (approver_role IN ('editor', 'admin')),
    -- The kill switch turns the flag off here without approval (audited as a bypass).
    kill_switch_exempt BOOLEAN     NOT NULL DEFAULT TRUE,
    updated_by         TEXT        NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);

-- A proposed configuration patch of one flag in one environment.
CREATE TABLE change_requests (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id      BIGINT      NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    environment_id  BIGINT      NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    flag_id         BIGINT      NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    patch           JSONB       NOT NULL,
    -- The configuration version and document the patch was written against: applying fails
    -- if a touched field changed since.
    base_version    BIGINT      NOT NULL,
    base_config     JSONB       NOT NULL,
    description     TEXT        NOT NULL DEFAULT '',
    author          TEXT        NOT NULL,
    author_token_id BIGINT,
    state           TEXT        NOT NULL DEFAULT 'open'
                    CHECK (state IN ('open', 'approved', 'rejected', 'applied')),
    applied_version BIGINT,
    applied_by      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX change_requests_by_flag ON change_requests (flag_id, environment_id, id);

-- Approvals, rejections and comments of a change request.
CREATE TABLE change_request_reviews (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    change_request_id BIGINT      NOT NULL REFERENCES change_requests (id) ON DELETE CASCADE,
    kind              TEXT        NOT NULL CHECK (kind IN ('approve', 'reject', 'comment')),
    actor             TEXT        NOT NULL,
    actor_token_id    BIGINT,
    -- Who the reviewer is for counting distinct approvers: 't:<token id>' or 'n:<name>'.
    reviewer_key      TEXT        NOT NULL,
    -- The reviewer's role in the environment when reviewing.
    role              TEXT        NOT NULL,
    comment           TEXT        NOT NULL DEFAULT '',
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX change_request_reviews_by_request ON change_request_reviews (change_request_id, id);
-- One approval per reviewer: N approvals are N distinct people (tokens).
CREATE UNIQUE INDEX change_request_one_approval
    ON change_request_reviews (change_request_id, reviewer_key) WHERE kind = 'approve';
