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
    outcome        text   NOT NULL CHECK (outcome IN ('APPLIED', 'REJECTED', 'DUPLICATE')),
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
    created_at    timestamptz NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, created_at);

-- Transactional outbox: written with the order, published by the relay, deleted once acked.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text  NOT NULL,
    key        text  NOT NULL,
    event_id   text  NOT NULL,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
