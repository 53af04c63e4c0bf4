-- no-transaction
-- Rebuilding the gate (after Redis lost its data, or Reconcile) reads a
-- tenant's live reservations while the tenant's reservations wait: it
-- must cost what is live, not the tenant's whole history (about 0.1 s per
-- million finished reservations, scanned). Active ones are found through
-- reservations_expiring; this finds confirmed ones. New reservations are
-- active, so the hot path writes no entry here. Built concurrently (hence
-- no transaction: one statement) so an upgrade does not stop writes to a
-- large table meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS reservations_confirmed ON reservations (tenant) WHERE state = 'confirmed';
