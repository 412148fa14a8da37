-- Contract 0.2 (sluice:handler@0.2.0): keyed state committed with the consumer position, and the
-- guard that watches each newly activated version.

-- A plugin's state per record key. It belongs to the plugin name, so it survives version swaps
-- and rollbacks. A row is made (with no value) the first time a batch locks its key, so that the
-- lock holds against another member deciding the same key; clearing the state keeps the row.
CREATE TABLE plugin_state (
    plugin     text  NOT NULL,
    key        bytea NOT NULL,
    value      bytea,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plugin, key)
);

-- How many records each batch decided (duplicates aside) and how many of them became dead
-- letters: the guard compares a new version's failure rate with its predecessor's from these.
ALTER TABLE processed_batches ADD COLUMN decided int, ADD COLUMN dead_lettered int;

-- The guard, per plugin: on (default) or off; what it is doing for the active version
-- (watching | passed | rolled-back | failed: judged bad with no previous version to roll back
-- to; NULL when the version was not installed or promoted, e.g. a default or a rollback), why,
-- for which version, since when.
ALTER TABLE active_plugins
    ADD COLUMN guard boolean NOT NULL DEFAULT true,
    ADD COLUMN guard_state text
        CHECK (guard_state IN ('watching', 'passed', 'rolled-back', 'failed')),
    ADD COLUMN guard_version text,
    ADD COLUMN guard_reason text,
    ADD COLUMN guard_changed_at timestamptz;
