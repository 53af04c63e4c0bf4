-- The waits' notification names what changed, one "tenant sku" a line
-- ('*' when that would not fit a notification's 8,000 bytes): the demand
-- publisher then sums the waits of those SKUs only, where it summed every
-- wait of the tenant (150 ms at 100,000 waits) at each notification.
-- Transition tables take one event per trigger: three triggers, one
-- function.
CREATE OR REPLACE FUNCTION stock_waits_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT string_agg(DISTINCT tenant || ' ' || sku, E'\n') INTO changed FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT string_agg(DISTINCT tenant || ' ' || sku, E'\n') INTO changed FROM old_rows;
    ELSE
        SELECT string_agg(DISTINCT tenant || ' ' || sku, E'\n') INTO changed
        FROM (SELECT tenant, sku FROM new_rows UNION ALL SELECT tenant, sku FROM old_rows) c;
    END IF;
    IF changed IS NOT NULL THEN
        PERFORM pg_notify('stock_demand',
                          CASE WHEN octet_length(changed) > 7900 THEN '*' ELSE changed END);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER stock_waits_changed ON stock_waits;
CREATE TRIGGER stock_waits_inserted AFTER INSERT ON stock_waits
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stock_waits_changed();
CREATE TRIGGER stock_waits_deleted AFTER DELETE ON stock_waits
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stock_waits_changed();
CREATE TRIGGER stock_waits_updated AFTER UPDATE ON stock_waits
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION stock_waits_changed();
