-- An import's refused rows, each stored once as its chunk commits, instead
-- of its whole answer so far rewritten by every chunk (0015): an import
-- whose 100,000 rows were all refused rewrote megabytes per chunk, about
-- a gigabyte in all. Imports under way at this upgrade start over when
-- sent again (counts restate stock, so a row applied twice sets the same
-- figure).
DELETE FROM snapshot_imports;
ALTER TABLE snapshot_imports DROP COLUMN answer;
ALTER TABLE snapshot_imports ADD COLUMN rows_applied bigint NOT NULL DEFAULT 0;
CREATE TABLE snapshot_import_errors (
    tenant       text    NOT NULL,
    request_id   text    NOT NULL,
    row_index    integer NOT NULL,
    field        text    NOT NULL,
    description  text    NOT NULL,
    PRIMARY KEY (tenant, request_id, row_index)
);
