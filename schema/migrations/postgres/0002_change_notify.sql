-- Change distribution: every transaction that moves an environment's data version, creates or
-- deletes an environment, or changes an SDK/relay key sends a small NOTIFY on the channel
-- `vexil_changes`. Triggers run inside the writing transaction, and PostgreSQL delivers
-- notifications only when (and if) it commits, in commit order; a transaction that sends the
-- same payload twice delivers it once. Payloads never carry flag bodies (they cap at 8,000
-- bytes): listeners read `change_log` rows after the version they last applied.
--
-- Payloads:
--   '<environment_id>:<version>'  the environment is now at <version> (or was just created);
--   '<environment_id>:removed'    the environment was deleted (directly or with its project);
--   'keys'                        SDK or relay keys, or their environments, changed.
-- Server processes also send 'ping:<process>:<n>' to themselves as a heartbeat.

CREATE FUNCTION vexil_notify_environment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('vexil_changes', OLD.id::text || ':removed');
        RETURN OLD;
    END IF;
    PERFORM pg_notify('vexil_changes', NEW.id::text || ':' || NEW.version::text);
    RETURN NEW;
END;
$$;

CREATE TRIGGER environments_notify_version AFTER UPDATE OF version ON environments
    FOR EACH ROW WHEN (NEW.version IS DISTINCT FROM OLD.version)
    EXECUTE FUNCTION vexil_notify_environment();
CREATE TRIGGER environments_notify_created AFTER INSERT ON environments
    FOR EACH ROW EXECUTE FUNCTION vexil_notify_environment();
CREATE TRIGGER environments_notify_removed AFTER DELETE ON environments
    FOR EACH ROW EXECUTE FUNCTION vexil_notify_environment();

CREATE FUNCTION vexil_notify_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('vexil_changes', 'keys');
    RETURN NULL;
END;
$$;

CREATE TRIGGER access_keys_notify AFTER INSERT OR UPDATE OR DELETE ON access_keys
    FOR EACH STATEMENT EXECUTE FUNCTION vexil_notify_keys();
CREATE TRIGGER access_key_environments_notify AFTER INSERT OR UPDATE OR DELETE ON access_key_environments
    FOR EACH STATEMENT EXECUTE FUNCTION vexil_notify_keys();

-- Compaction deletes old rows per environment by version and by age.
CREATE INDEX change_log_by_age ON change_log (created_at);
