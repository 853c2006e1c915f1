-- Vexil control plane, PostgreSQL. Identifiers are BIGINT identities; model documents are JSONB.
-- Every change to an environment's flags or segments bumps environments.version and appends
-- to change_log in the same transaction (the stream replays from change_log).

CREATE TABLE projects (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key         TEXT        NOT NULL UNIQUE,
    name        TEXT        NOT NULL,
    description TEXT        NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE environments (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id  BIGINT      NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    key         TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    description TEXT        NOT NULL DEFAULT '',
    -- Data version: bumped by every committed change to this environment's flags or segments.
    version     BIGINT      NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (project_id, key)
);

CREATE TABLE flags (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id  BIGINT      NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    key         TEXT        NOT NULL,
    -- Copied out of the definition for search and sorting.
    name        TEXT        NOT NULL,
    -- The whole FlagDefinition document.
    definition  JSONB       NOT NULL,
    archived    BOOLEAN     NOT NULL DEFAULT FALSE,
    -- Definition version (the ETag of the definition).
    version     BIGINT      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (project_id, key)
);

CREATE TABLE flag_tags (
    flag_id BIGINT NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    tag     TEXT   NOT NULL,
    PRIMARY KEY (flag_id, tag)
);
CREATE INDEX flag_tags_by_tag ON flag_tags (tag, flag_id);

CREATE TABLE flag_configs (
    flag_id        BIGINT      NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    environment_id BIGINT      NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    -- The whole FlagConfig document (its "version" field equals the column).
    config         JSONB       NOT NULL,
    version        BIGINT      NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (flag_id, environment_id)
);
CREATE INDEX flag_configs_by_environment ON flag_configs (environment_id);

-- Every version a flag's configuration has had in an environment (rollback reads it).
CREATE TABLE flag_config_versions (
    flag_id             BIGINT      NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    environment_id      BIGINT      NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    version             BIGINT      NOT NULL,
    config              JSONB       NOT NULL,
    environment_version BIGINT      NOT NULL,
    actor               TEXT        NOT NULL,
    action              TEXT        NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (flag_id, environment_id, version)
);

CREATE TABLE segments (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment_id BIGINT      NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    key            TEXT        NOT NULL,
    name           TEXT        NOT NULL,
    -- The Segment document without its key lists.
    body           JSONB       NOT NULL,
    -- Key lists as JSON arrays: one value each, written and read in one statement.
    included       JSONB       NOT NULL,
    excluded       JSONB       NOT NULL,
    included_count BIGINT      NOT NULL,
    excluded_count BIGINT      NOT NULL,
    version        BIGINT      NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (environment_id, key)
);

CREATE TABLE change_log (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment_id BIGINT      NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    version        BIGINT      NOT NULL,
    op             TEXT        NOT NULL CHECK (op IN ('put', 'delete')),
    entity         TEXT        NOT NULL CHECK (entity IN ('flag', 'segment')),
    key            TEXT        NOT NULL,
    payload        JSONB,
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX change_log_by_version ON change_log (environment_id, version);

-- Append-only: keys are copied as text (no foreign keys) so entries outlive what they describe.
CREATE TABLE audit_log (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at     TIMESTAMPTZ NOT NULL,
    actor           TEXT        NOT NULL,
    actor_token_id  BIGINT,
    action          TEXT        NOT NULL,
    resource        TEXT        NOT NULL,
    project_key     TEXT,
    environment_key TEXT,
    resource_key    TEXT,
    request_id      TEXT,
    before          JSONB,
    after           JSONB
);
CREATE INDEX audit_log_by_resource ON audit_log (project_key, resource, resource_key, id);
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_time ON audit_log (occurred_at, id);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

CREATE TABLE api_tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT        NOT NULL UNIQUE,
    role        TEXT        NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    secret_hash BYTEA       NOT NULL UNIQUE,
    hint        TEXT        NOT NULL,
    created_by  TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);

-- SDK keys (one environment) and relay keys (a set of environments).
CREATE TABLE access_keys (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                TEXT        NOT NULL CHECK (kind IN ('sdk', 'relay')),
    name                TEXT        NOT NULL,
    secret_hash         BYTEA       NOT NULL UNIQUE,
    hint                TEXT        NOT NULL,
    -- After a rotation with a grace period, the previous secret stays valid until then.
    previous_hash       BYTEA UNIQUE,
    previous_expires_at TIMESTAMPTZ,
    created_by          TEXT        NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    rotated_at          TIMESTAMPTZ,
    revoked_at          TIMESTAMPTZ
);

CREATE TABLE access_key_environments (
    key_id         BIGINT NOT NULL REFERENCES access_keys (id) ON DELETE CASCADE,
    environment_id BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    PRIMARY KEY (key_id, environment_id)
);
CREATE INDEX access_key_environments_by_environment ON access_key_environments (environment_id);

CREATE TABLE idempotency_keys (
    token_id       BIGINT      NOT NULL,
    key            TEXT        NOT NULL,
    request_hash   BYTEA       NOT NULL,
    -- NULL while the first request is still being processed.
    status         INTEGER,
    content_type   TEXT,
    etag           TEXT,
    location       TEXT,
    body           BYTEA,
    created_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (token_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
