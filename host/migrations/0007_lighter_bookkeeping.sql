-- Lighter ingest bookkeeping (README "Performance"). Measured on the development machine, each
-- index entry a record adds costs PostgreSQL 4-8 µs and each of its bytes shows, so a record now
-- adds one index entry and a narrow row.
--
-- 1. The dedupe memory leaves the outcome log for a table of its own, keyed by the event id
--    behind 8 bytes naming the consumer group (of SHA-256 of its name): one single-column key
--    per decided event, compared byte by byte, instead of a (text, text) entry in a partial index
--    of the outcome log (whose comparisons read two variable-length columns). Ids that follow
--    each other (counters, UUIDv7 such as Sluice's own order ids) land on neighbouring index
--    pages, which halves what an insert costs against random ones. Its primary key is the fence
--    between members deciding the same event at once, as the partial unique index was.
-- 2. The outcome log keeps every record's outcome, but what a batch's records share (group,
--    topic, plugin, version, time) is written once per batch, and it has no index a record must
--    update but block-range ones: nothing looks a record up by its place (the consumer position
--    fences offsets). `processed_messages` stays, as a view with the same columns.

-- The host computes the same key (`domain::event_key`); this one serves the backfill below and
-- anyone asking the database whether an event was decided.
CREATE FUNCTION sluice_event_key(group_id text, event_id text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT substring(sha256(convert_to(group_id, 'UTF8')) FROM 1 FOR 8) || convert_to(event_id, 'UTF8')
$$;

CREATE TABLE processed_events (
    key          bytea PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
-- For the retention sweep; rows arrive in time order, so a block range index is enough.
CREATE INDEX processed_events_processed_at ON processed_events USING brin (processed_at);

INSERT INTO processed_events (key, processed_at)
SELECT sluice_event_key(group_id, event_id), min(processed_at)
FROM processed_messages
WHERE event_id IS NOT NULL AND outcome <> 'DUPLICATE'
GROUP BY 1;

CREATE TABLE processed_batches (
    id             bigserial PRIMARY KEY,
    group_id       text COLLATE "C" NOT NULL,
    topic          text COLLATE "C" NOT NULL,
    plugin         text NOT NULL,
    plugin_version text NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX processed_batches_processed_at ON processed_batches USING brin (processed_at);

-- A record's outcome; its batch row goes with it (no foreign key: checking one per record would
-- cost what this table saves; the retention sweep removes both).
CREATE TABLE processed_records (
    batch      bigint NOT NULL,
    partition  int    NOT NULL,
    "offset"   bigint NOT NULL,
    event_id   text COLLATE "C",
    outcome    text   NOT NULL CHECK (outcome IN ('APPLIED', 'REJECTED', 'DEAD_LETTER', 'DUPLICATE')),
    error_kind text,
    reason     text,
    -- Written once, read by people: `json` keeps the text as written, without `jsonb`'s parse.
    mutations  json
);
CREATE INDEX processed_records_batch ON processed_records USING brin (batch);

-- The existing outcomes: a batch row for each (they were written with a time each).
ALTER TABLE processed_messages ADD COLUMN batch bigint;
UPDATE processed_messages SET batch = nextval('processed_batches_id_seq');
INSERT INTO processed_batches (id, group_id, topic, plugin, plugin_version, processed_at)
SELECT batch, group_id, topic, plugin, plugin_version, processed_at FROM processed_messages;
INSERT INTO processed_records (batch, partition, "offset", event_id, outcome, error_kind, reason,
                               mutations)
SELECT batch, partition, "offset", event_id, outcome, error_kind, reason, mutations::json
FROM processed_messages;

DROP TABLE processed_messages;

-- Every record's outcome, as it always read.
CREATE VIEW processed_messages AS
SELECT b.group_id, b.topic, r.partition, r."offset", r.event_id, r.outcome, r.error_kind, r.reason,
       r.mutations, b.plugin, b.plugin_version, b.processed_at
FROM processed_records r
JOIN processed_batches b ON b.id = r.batch;

-- A row written into the view (by hand, or a tool) becomes a batch of its own.
CREATE FUNCTION processed_messages_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    batch bigint;
BEGIN
    INSERT INTO processed_batches (group_id, topic, plugin, plugin_version, processed_at)
    VALUES (NEW.group_id, NEW.topic, NEW.plugin, NEW.plugin_version,
            coalesce(NEW.processed_at, clock_timestamp()))
    RETURNING id INTO batch;
    INSERT INTO processed_records (batch, partition, "offset", event_id, outcome, error_kind,
                                   reason, mutations)
    VALUES (batch, NEW.partition, NEW."offset", NEW.event_id, NEW.outcome, NEW.error_kind,
            NEW.reason, NEW.mutations);
    RETURN NEW;
END
$$;
CREATE TRIGGER processed_messages_insert INSTEAD OF INSERT ON processed_messages
    FOR EACH ROW EXECUTE FUNCTION processed_messages_insert();
