-- Ingest at speed (README "Performance").
--
-- One table is both the outcome log and the dedupe memory: an event id is decided once per
-- group, which a partial unique index says (and enforces between concurrent members), and
-- outcomes are kept as long as event ids are remembered (SLUICE_DEDUPE_RETENTION_HOURS).
-- Every decided event already has its outcome row, so nothing is lost with processed_events.
DROP INDEX processed_messages_event_id;
DROP INDEX processed_messages_rejected;
DROP TABLE processed_events;
-- Identifiers compare byte by byte, whatever the database's collation.
ALTER TABLE processed_messages
    ALTER COLUMN group_id TYPE text COLLATE "C",
    ALTER COLUMN topic TYPE text COLLATE "C",
    ALTER COLUMN event_id TYPE text COLLATE "C";
ALTER TABLE consumer_positions
    ALTER COLUMN group_id TYPE text COLLATE "C",
    ALTER COLUMN topic TYPE text COLLATE "C";
CREATE UNIQUE INDEX processed_messages_decided_event ON processed_messages (group_id, event_id)
    WHERE event_id IS NOT NULL AND outcome <> 'DUPLICATE';
-- For the retention sweep; rows arrive in time order, so a block range index is enough.
CREATE INDEX processed_messages_processed_at ON processed_messages USING brin (processed_at);

-- An outbox row carries either one record in its own columns (an order's event) or, in
-- `records`, a whole batch of them (an ingest batch's status events and dead-letter copies),
-- encoded by the host: one row per batch instead of one per record.
ALTER TABLE outbox ALTER COLUMN topic DROP NOT NULL;
ALTER TABLE outbox ADD COLUMN records bytea;
ALTER TABLE outbox ADD CONSTRAINT outbox_one_shape CHECK ((topic IS NULL) <> (records IS NULL));
-- A batch's records are written and read once: not worth compressing.
ALTER TABLE outbox ALTER COLUMN records SET STORAGE EXTERNAL;
