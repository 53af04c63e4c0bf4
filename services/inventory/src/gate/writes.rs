//! Changes Redis answered and then lost. Redis replicates asynchronously:
//! a failover to a replica that lagged, or a restart from an older
//! snapshot, brings back a gate that lacks the last changes made to it,
//! with its `ready` marker still there. Nothing else would tell: the gate
//! would promise again the units those changes held.
//!
//! So every gate script counts the runs of its writer (this replica) in
//! the tenant's `writes` hash and answers the count with the gate's epoch;
//! the writer sends back the highest count it was answered in that epoch
//! and the epoch before it, and a script that counts no higher, or finds
//! the epoch before (Redis lost a rebuild), drops the gate (common.lua's
//! `behind`, which `open` runs in every script). The writer's next change
//! finds that out; a writer that makes none finds it through
//! [`Gate::find_lost_writes`] (check.lua), which the sweep runs.
//! Other replicas' changes meanwhile run on the old gate: that window is
//! what `OMS_REDIS_MIN_REPLICAS` closes.
use super::{Gate, GateError};
use oms_kernel::Tenant;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after this replica's last change of a tenant's gate the sweep
/// still checks that Redis has it: replication lags milliseconds, and a
/// failover takes seconds to be decided.
const CHECKED_FOR: Duration = Duration::from_secs(60);
/// Gates the sweep checks at once.
const CHECKS_AT_ONCE: usize = 16;

/// What a script answers of its writer's count (`wr`).
#[derive(Debug, Deserialize)]
pub(super) struct Wrote {
    ep: String,
    n: i64,
}

struct Seen {
    wrote: Wrote,
    /// The epoch before `wrote.ep`: Redis never goes back to it unless it
    /// lost the rebuild that ended it.
    prev: Option<String>,
    at: Instant,
}

/// This replica's id in the writes hashes, and the highest count each
/// tenant's gate answered it, with that gate's epoch.
#[derive(Clone)]
pub(super) struct Writes {
    pub(super) id: Arc<str>,
    seen: Arc<Mutex<HashMap<Tenant, Seen>>>,
}

impl Writes {
    pub(super) fn new() -> Self {
        Self {
            id: uuid::Uuid::now_v7().simple().to_string().into(),
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<Tenant, Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `wr` a script is sent: this writer, and what it was last
    /// answered of the tenant's gate (nothing yet: only counted).
    pub(super) fn arg(&self, tenant: &Tenant) -> serde_json::Value {
        self.wr(self.seen().get(tenant))
    }

    fn wr(&self, seen: Option<&Seen>) -> serde_json::Value {
        match seen {
            Some(s) => serde_json::json!({
                "id": &*self.id, "ep": s.wrote.ep, "n": s.wrote.n, "prev": s.prev,
            }),
            None => serde_json::json!({ "id": &*self.id }),
        }
    }

    /// A script answered `wrote`. Answers may arrive out of order (scripts
    /// run at once on several tasks): the highest count of an epoch is
    /// kept; an answer of the epoch before (sent before the rebuild,
    /// arriving late) changes nothing; one of another epoch is the gate
    /// rebuilt, and the epoch it had becomes the one Redis must not go back
    /// to. (An answer late by two rebuilds would make the next script take
    /// the current epoch for a lost one: a needless rebuild, nothing
    /// promised wrongly.)
    pub(super) fn answered(&self, tenant: &Tenant, wrote: Wrote) {
        let mut seen = self.seen();
        let at = Instant::now();
        match seen.get_mut(tenant) {
            Some(s) if s.wrote.ep == wrote.ep => {
                s.wrote.n = s.wrote.n.max(wrote.n);
                s.at = at;
            }
            Some(s) if s.prev.as_ref() == Some(&wrote.ep) => {}
            Some(s) => {
                s.prev = Some(std::mem::replace(&mut s.wrote, wrote).ep);
                s.at = at;
            }
            None => {
                let prev = None;
                seen.insert(tenant.clone(), Seen { wrote, prev, at });
            }
        }
    }

    /// The tenants changed in the last [`CHECKED_FOR`], with the `wr` of
    /// each (what its gate answered); the others are forgotten.
    fn recent(&self) -> Vec<(Tenant, serde_json::Value)> {
        let mut seen = self.seen();
        seen.retain(|_, s| s.at.elapsed() < CHECKED_FOR);
        (seen.iter())
            .map(|(t, s)| (t.clone(), self.wr(Some(s))))
            .collect()
    }
}

impl Gate {
    /// Checks, without changing anything, the gate of each tenant this
    /// replica changed in the last minute: those that lost changes it
    /// made are dropped (rebuild them), or the check failed. Several at
    /// once: a replica may have changed many tenants' gates, and the sweep
    /// waits for this.
    pub async fn find_lost_writes(&self) -> Vec<Result<Tenant, GateError>> {
        use futures::StreamExt as _;
        let checks = self
            .writes
            .recent()
            .into_iter()
            .map(|(tenant, wr)| async move {
                let k = &self.keys;
                let dropped: i64 = (self.check.key(k.ready(&tenant)))
                    .key(k.writes(&tenant))
                    .arg(serde_json::json!({ "wr": wr }).to_string())
                    .invoke_async(&mut self.conn())
                    .await?;
                if dropped == 1 {
                    self.lost_writes(&tenant, "sweep");
                }
                Ok((dropped == 1).then_some(tenant))
            });
        let found: Vec<Result<Option<Tenant>, GateError>> = futures::stream::iter(checks)
            .buffer_unordered(CHECKS_AT_ONCE)
            .collect()
            .await;
        found.into_iter().filter_map(Result::transpose).collect()
    }

    /// Redis lost changes of `tenant`'s gate it had answered; `found_by`
    /// a change of this replica or its sweep.
    /// (What this replica was answered stays: the rebuild's epoch replaces
    /// it, and the lost epoch becomes the one Redis must not go back to.)
    pub(super) fn lost_writes(&self, tenant: &Tenant, found_by: &'static str) {
        tracing::warn!(
            tenant = %tenant,
            found_by,
            "Redis lost changes of the reservation gate it had answered (a failover to a replica that lagged, or a restart from an older snapshot); the gate is rebuilt from the record"
        );
        self.lost.add(
            1,
            &[
                opentelemetry::KeyValue::new("tenant", tenant.as_str().to_owned()),
                opentelemetry::KeyValue::new("found_by", found_by),
            ],
        );
    }
}
