-- Catalog module: the stock the ingest flow mutates.
CREATE TABLE catalog (
    product_id   text PRIMARY KEY,
    product_name text NOT NULL,
    stock        bigint NOT NULL CHECK (stock >= 0),
    unit_price   bigint NOT NULL CHECK (unit_price >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The products of the original catalog-service.
INSERT INTO catalog (product_id, product_name, stock, unit_price) VALUES
    ('CATALOG-0001', 'Berlin', 100, 1500),
    ('CATALOG-0002', 'Tokyo', 110, 1000),
    ('CATALOG-0003', 'Stockholm', 120, 2000);

-- Ingest bookkeeping. The consumer position lives here, committed in the same transaction as
-- the mutations it covers; Kafka's committed offset is only a copy for lag monitoring.
CREATE TABLE consumer_positions (
    group_id    text   NOT NULL,
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- One row per consumed message: what happened to it and which plugin version decided.
CREATE TABLE processed_messages (
    group_id       text   NOT NULL,
    topic          text   NOT NULL,
    partition      int    NOT NULL,
    "offset"       bigint NOT NULL,
    event_id       text,
    outcome        text   NOT NULL CHECK (outcome IN ('APPLIED', 'REJECTED', 'DEAD_LETTER', 'DUPLICATE')),
    error_kind     text,
    reason         text,
    mutations      jsonb,
    plugin         text   NOT NULL,
    plugin_version text   NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition, "offset")
);
CREATE INDEX processed_messages_event_id ON processed_messages (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX processed_messages_rejected ON processed_messages (processed_at) WHERE outcome = 'REJECTED';

-- Poison records: what the plugin could not handle (error, trap, deadline, refused output),
-- kept whole so they can be inspected and redriven. Also published to `<topic>.DLT`.
CREATE TABLE dead_letters (
    id             bigserial PRIMARY KEY,
    group_id       text   NOT NULL,
    topic          text   NOT NULL,
    partition      int    NOT NULL,
    "offset"       bigint NOT NULL,
    key            bytea,
    payload        bytea,
    headers        jsonb  NOT NULL,
    event_id       text,
    error_kind     text   NOT NULL,
    error          text   NOT NULL,
    plugin         text   NOT NULL,
    plugin_version text   NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    redrive_count  int    NOT NULL DEFAULT 0,
    last_redrive_at      timestamptz,
    last_redrive_outcome text,
    last_redrive_reason  text,
    resolved_at    timestamptz,
    UNIQUE (group_id, topic, partition, "offset")
);

-- Event ids already decided, for dedupe of republished events.
CREATE TABLE processed_events (
    group_id     text NOT NULL,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, event_id)
);

-- Orders module.
CREATE TABLE orders (
    order_id      uuid PRIMARY KEY,
    user_id       text   NOT NULL,
    product_id    text   NOT NULL,
    quantity      int    NOT NULL CHECK (quantity > 0),
    unit_price    bigint NOT NULL CHECK (unit_price >= 0),
    total_price   bigint NOT NULL,
    status        text   NOT NULL DEFAULT 'PENDING',
    status_reason text,
    created_at    timestamptz NOT NULL,
    -- Reported back by the catalog side through the status topic.
    status_updated_at timestamptz,
    plugin         text,
    plugin_version text
);
CREATE INDEX orders_by_user ON orders (user_id, created_at);

-- Transactional outbox: Kafka records written in the transaction that produced them (an order,
-- an ingest batch's status events and dead letters), published by the relay in id order and
-- deleted once the broker acknowledged them. Headers: [{"key": ..., "value": base64 | null}].
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text  NOT NULL,
    key        bytea,
    payload    bytea,
    headers    jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now()
);
