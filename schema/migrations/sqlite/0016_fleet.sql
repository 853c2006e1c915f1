-- The fleet view (issue 16).
--
-- `fleet_reports`: the latest report of each process serving SDK streams, per environment:
-- relays post theirs (`POST /relay/v1/fleet`), every server instance writes its own direct
-- streams, so that any instance on this database answers `GET …/fleet` for the whole fleet.
-- `source` is `relay:<id>` or `server:<instance>`; `report` the `EnvironmentReport` JSON
-- (streams per version, recent changes' delivery histograms); `meta` what the source says of
-- itself (version, upstream state). A row past `expires_at_ms` belongs to a process that
-- stopped reporting: it is ignored, and deleted by the next write.
CREATE TABLE fleet_reports (
    source         TEXT   NOT NULL,
    environment_id BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    kind           TEXT   NOT NULL,
    meta           TEXT   NOT NULL,
    report         TEXT   NOT NULL,
    received_at_ms BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (environment_id, source)
);
CREATE INDEX fleet_reports_expiry ON fleet_reports (expires_at_ms);

-- Flag usage from SDK evaluation summaries, folded in at ingestion: evaluations per flag,
-- variation (-1: the caller's default, an error) and UTC day, with the latest summary end.
CREATE TABLE flag_usage (
    environment_id    BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    flag_key          TEXT   NOT NULL,
    variation         INTEGER NOT NULL,
    day               BIGINT NOT NULL,
    evaluations       BIGINT NOT NULL,
    last_evaluated_ms BIGINT NOT NULL,
    PRIMARY KEY (environment_id, flag_key, variation, day)
);

-- SDKs (name and version) seen evaluating each flag, with when last seen.
CREATE TABLE flag_usage_sdks (
    environment_id BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    flag_key       TEXT   NOT NULL,
    sdk_name       TEXT   NOT NULL,
    sdk_version    TEXT   NOT NULL,
    last_seen_ms   BIGINT NOT NULL,
    PRIMARY KEY (environment_id, flag_key, sdk_name, sdk_version)
);
