-- The original catalog's three products came with the first migration, so every database got
-- them. `sluice dev` adds them now (and the tests, where they use them); here they leave the
-- databases that never used them: no order for them, name, stock and price as seeded.
DELETE FROM catalog c
WHERE (c.product_id, c.product_name, c.stock, c.unit_price) IN (
        ('CATALOG-0001', 'Berlin', 100, 1500),
        ('CATALOG-0002', 'Tokyo', 110, 1000),
        ('CATALOG-0003', 'Stockholm', 120, 2000))
  AND c.updated_at = c.created_at
  AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.product_id = c.product_id);
