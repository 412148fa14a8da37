-- Plugin versions, shared by every instance. `active_plugins` says which version of each
-- plugin the whole fleet runs; instances follow it through LISTEN/NOTIFY on `sluice_plugins`.
CREATE TABLE plugin_versions (
    name       text  NOT NULL,
    version    text  NOT NULL,  -- sha256 of the component, hex
    component  bytea NOT NULL,
    source     text  NOT NULL,  -- api | file
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE active_plugins (
    name             text PRIMARY KEY,
    version          text NOT NULL,
    previous_version text,
    source           text NOT NULL,
    activated_at     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (name, version) REFERENCES plugin_versions (name, version)
);
