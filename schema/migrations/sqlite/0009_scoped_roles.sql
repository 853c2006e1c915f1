-- Scoped roles (issue 17): an API token may be limited to projects and to environments within
-- them. `scopes` is a JSON array of grants, `[{"project": "web", "environment": "staging",
-- "role": "editor"}, …]`; NULL (every token before this migration) means unscoped.
--
-- Additive and safe beside an older server: a scoped token's `secret_hash` is a digest in a
-- domain of its own (see `auth::hash_scoped_secret`), so a server that does not know scopes
-- never finds it and refuses it instead of granting its role everywhere.

ALTER TABLE api_tokens ADD COLUMN scopes TEXT;
