-- Client-side access (issue 15): public client keys ('client', prefix vxc_) that read only
-- evaluated values of client-side flags, and the browser origins allowed per environment.
-- `origins_changes` counts changes to `allowed_origins`, so the server's key fingerprint
-- sees every one.
--
-- SQLite cannot alter a CHECK constraint, and rebuilding `access_keys` would cascade-delete
-- its environments; the documented way for a change that leaves the stored format alone is
-- to edit the table's definition in the schema table (https://sqlite.org/lang_altertable.html,
-- section 7), then bump the schema version so every connection reloads it.

PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (kind IN (''sdk'', ''relay''))',
                          'CHECK (kind IN (''sdk'', ''relay'', ''client''))')
 WHERE type = 'table' AND name = 'access_keys';
PRAGMA writable_schema = OFF;

ALTER TABLE environments ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '[]';
ALTER TABLE environments ADD COLUMN origins_changes BIGINT NOT NULL DEFAULT 0;
