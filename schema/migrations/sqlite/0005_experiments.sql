-- Experiments (SQLite): metrics (per project), experiments (per flag x environment) and their
-- iterations, and the per-unit aggregates that event ingestion maintains incrementally so an
-- analysis reads aggregates, never raw events. Event times are milliseconds since the epoch.

CREATE TABLE metrics (
    id          INTEGER PRIMARY KEY,
    project_id  BIGINT      NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    key         TEXT        NOT NULL,
    -- Copied out of the definition: ingestion finds the metrics an event feeds by it.
    event_key   TEXT        NOT NULL,
    -- The whole Metric document.
    definition  TEXT        NOT NULL,
    version     BIGINT      NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (project_id, key)
);

CREATE TABLE experiments (
    id             INTEGER PRIMARY KEY,
    environment_id BIGINT      NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    flag_id        BIGINT      NOT NULL REFERENCES flags (id) ON DELETE CASCADE,
    -- Copied from the flag (keys never change): exposures name the flag by key.
    flag_key       TEXT        NOT NULL,
    key            TEXT        NOT NULL,
    -- The whole Experiment document (hypothesis, metrics, method, alpha).
    definition     TEXT        NOT NULL,
    status         TEXT        NOT NULL CHECK (status IN ('draft', 'running', 'stopped')),
    version        BIGINT      NOT NULL,
    started_at     TEXT,
    stopped_at     TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (environment_id, key)
);
CREATE INDEX experiments_by_flag ON experiments (environment_id, flag_key);
CREATE INDEX experiments_by_flag_id ON experiments (flag_id, environment_id);

-- One iteration per allocation: changing the flag's rollout weights or variations while the
-- experiment runs ends the current iteration and starts the next. Results never mix them.
CREATE TABLE experiment_iterations (
    id            INTEGER PRIMARY KEY,
    experiment_id BIGINT NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    number        BIGINT NOT NULL,
    started_ms    BIGINT NOT NULL,
    ended_ms      BIGINT,
    -- The allocation the iteration ran under: variations and rollout weights.
    allocation    TEXT   NOT NULL,
    -- Why it started: "start" or "allocation_changed".
    reason        TEXT   NOT NULL,
    UNIQUE (experiment_id, number)
);

-- One row per unit (context key) exposed in an iteration.
CREATE TABLE experiment_units (
    iteration_id BIGINT  NOT NULL REFERENCES experiment_iterations (id) ON DELETE CASCADE,
    unit         TEXT    NOT NULL,
    -- The first variation seen; units seen with more than one are `multiple` (excluded).
    variation    BIGINT  NOT NULL,
    first_ms     BIGINT  NOT NULL,
    multiple     INTEGER NOT NULL,
    PRIMARY KEY (iteration_id, unit)
);

-- One row per unit x metric with events in an iteration.
CREATE TABLE experiment_unit_metrics (
    iteration_id     BIGINT           NOT NULL REFERENCES experiment_iterations (id) ON DELETE CASCADE,
    metric_id        BIGINT           NOT NULL,
    unit             TEXT             NOT NULL,
    -- Events before the unit's first exposure (the CUPED covariate).
    pre_count        BIGINT           NOT NULL,
    pre_sum          REAL             NOT NULL,
    -- Events within the metric's window after the first exposure.
    count            BIGINT           NOT NULL,
    sum              REAL             NOT NULL,
    converted_ms     BIGINT,
    -- Events received while the unit had no exposure yet, attributed when it arrives.
    pending_count    BIGINT           NOT NULL,
    pending_sum      REAL             NOT NULL,
    pending_first_ms BIGINT,
    pending_last_ms  BIGINT,
    PRIMARY KEY (iteration_id, metric_id, unit)
);
