-- The read side the read-model example writes, as a team creates it (Sluice never creates
-- tables): `sluice dev --init-sql plugins/read-model/tables.sql`, or psql -f against your own.
CREATE TABLE user_orders (
    order_id text PRIMARY KEY,
    user_id text NOT NULL,
    product_id text NOT NULL,
    quantity bigint NOT NULL,
    unit_price bigint NOT NULL,
    total_price bigint NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE product_sales (
    product_id text PRIMARY KEY,
    orders bigint NOT NULL DEFAULT 0,
    units bigint NOT NULL DEFAULT 0,
    revenue bigint NOT NULL DEFAULT 0
);
