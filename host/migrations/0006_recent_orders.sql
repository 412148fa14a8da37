-- The console and `GET /orders` list the newest orders across all users.
CREATE INDEX orders_by_time ON orders (created_at DESC, order_id);
