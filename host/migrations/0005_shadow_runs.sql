-- Shadow runs: a candidate version of a plugin runs beside the active one on live traffic,
-- its output compared, never applied. Fleet-wide: every instance runs the candidate named here
-- and adds to the same tally.
ALTER TABLE active_plugins ADD COLUMN shadow_version text;
ALTER TABLE active_plugins ADD COLUMN shadow_since timestamptz;

CREATE TABLE plugin_shadow_stats (
    name           text   NOT NULL,
    shadow_version text   NOT NULL,
    compared       bigint NOT NULL DEFAULT 0,
    agreed         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (name, shadow_version)
);

-- The first differences of each candidate (up to 20 kept), with both outputs.
CREATE TABLE plugin_shadow_differences (
    id             bigserial PRIMARY KEY,
    name           text   NOT NULL,
    shadow_version text   NOT NULL,
    topic          text   NOT NULL,
    partition      int    NOT NULL,
    "offset"       bigint NOT NULL,
    active         jsonb  NOT NULL,
    shadow         jsonb  NOT NULL,
    noted_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plugin_shadow_differences_by_version ON plugin_shadow_differences (name, shadow_version, id);
