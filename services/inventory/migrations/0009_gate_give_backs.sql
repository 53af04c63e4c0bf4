-- Stock a committed change gives back to the Redis gate (a receipt, a
-- release, an expiry...) reaches the gate after the commit. A row here,
-- written in the change's transaction and deleted once the gate has the
-- stock, says that a give-back is on its way; one that outlives its
-- replica (a crash, Redis unreachable just then) is found by the sweep,
-- which drops the tenant's gate so the next change rebuilds it from the
-- record. A rebuild deletes its tenant's rows: it counted them. Rows live
-- milliseconds, so no index beyond the key.
CREATE TABLE gate_give_backs (
    tenant        text        NOT NULL,
    give_back_id  uuid        NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, give_back_id)
);
