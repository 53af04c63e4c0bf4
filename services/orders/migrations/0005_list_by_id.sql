-- Orders are listed newest first by id (UUIDv7, taken at creation): the
-- primary key serves the list, and the index by state ends in the id. The
-- index by create time was an entry more for every order created.
DROP INDEX orders_by_time;
DROP INDEX orders_by_state;
CREATE INDEX orders_by_state ON orders (tenant, state, order_id DESC);
