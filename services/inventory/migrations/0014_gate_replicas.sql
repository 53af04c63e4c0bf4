-- Replicas that change the reservation gate, each with the last time it
-- said it was alive. A replica killed between a gate change and its commit
-- leaves Redis changed and the record not, and can tell no one: the others
-- find its row gone stale and rebuild every tenant's gate from the record.
-- A replica that stops cleanly deletes its row. A row per running pod.
CREATE TABLE gate_replicas (
    replica_id  uuid        PRIMARY KEY,
    start_time  timestamptz NOT NULL DEFAULT now(),
    seen_time   timestamptz NOT NULL DEFAULT now()
);
