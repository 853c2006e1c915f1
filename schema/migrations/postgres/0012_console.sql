-- Admin console sessions (issue 14): signing in with an API token opens a server-side
-- session. The browser holds only a random session id in an HttpOnly cookie; the table keeps
-- its SHA-256 digest, the token it acts for (revoking the token ends its sessions), the
-- CSRF token every state-changing form must echo, and the expiry.
CREATE TABLE console_sessions (
    id_hash    BYTEA       PRIMARY KEY,
    token_id   BIGINT      NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf       TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
