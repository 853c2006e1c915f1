-- Client-side access (issue 15): public client keys ('client', prefix vxc_) that read only
-- evaluated values of client-side flags, and the browser origins allowed per environment.
-- `origins_changes` counts changes to `allowed_origins`, so the servers' key fingerprint
-- sees every one; a change sends the 'keys' notification like a key change.

ALTER TABLE access_keys DROP CONSTRAINT IF EXISTS access_keys_kind_check;
ALTER TABLE access_keys ADD CONSTRAINT access_keys_kind_check
    CHECK (kind IN ('sdk', 'relay', 'client'));

ALTER TABLE environments ADD COLUMN allowed_origins JSONB NOT NULL DEFAULT '[]';
ALTER TABLE environments ADD COLUMN origins_changes BIGINT NOT NULL DEFAULT 0;

CREATE TRIGGER environments_notify_origins AFTER UPDATE OF allowed_origins ON environments
    FOR EACH STATEMENT EXECUTE FUNCTION vexil_notify_keys();
