//! Writing a whole tenant's gate at once (after Redis lost its data, or on
//! Reconcile), atomically, ready marker last.
use super::{Gate, GateError, Holds};
use oms_kernel::Tenant;
use std::collections::{BTreeMap, HashSet};

/// A live reservation as the gate keeps it.
pub struct LiveRecord {
    pub id: String,
    pub state: String,
    pub request_hash: String,
    pub expire_ms: i64,
    pub consumed: bool,
    pub holds: Holds,
}

impl Gate {
    pub async fn is_ready(&self, tenant: &Tenant) -> Result<bool, GateError> {
        let mut c = self.conn();
        Ok(redis::cmd("EXISTS")
            .arg(self.keys.ready(tenant))
            .query_async::<i64>(&mut c)
            .await?
            == 1)
    }

    /// Drops the ready marker: the next gate change rebuilds first.
    pub async fn invalidate(&self, tenant: &Tenant) -> Result<(), GateError> {
        let mut c = self.conn();
        redis::cmd("DEL")
            .arg(self.keys.ready(tenant))
            .query_async::<i64>(&mut c)
            .await?;
        Ok(())
    }

    /// Replaces the tenant's figures and reservation records. Records of
    /// reservations the record does not know as live are dropped.
    pub async fn install(
        &self,
        tenant: &Tenant,
        fields: &BTreeMap<String, BTreeMap<String, i64>>,
        live: &[LiveRecord],
        trigger: &'static str,
    ) -> Result<(), GateError> {
        let k = &self.keys;
        let mut conn = self.conn();
        let old: Vec<String> = redis::cmd("ZRANGE")
            .arg(k.expiry(tenant))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let live_ids: HashSet<&str> = live.iter().map(|l| l.id.as_str()).collect();
        let mut p = redis::pipe();
        p.atomic();
        for (sku, f) in fields {
            let key = k.avail(tenant, sku);
            p.del(&key).ignore();
            let pairs: Vec<(&String, &i64)> = f.iter().collect();
            if !pairs.is_empty() {
                p.hset_multiple(&key, &pairs).ignore();
            }
        }
        p.del(k.expiry(tenant)).ignore();
        for id in old.iter().filter(|id| !live_ids.contains(id.as_str())) {
            p.del(k.reservation(tenant, id)).ignore();
        }
        for l in live {
            let rec = serde_json::json!({
                "s": l.state, "h": l.request_hash, "e": l.expire_ms,
                "c": if l.consumed { 1 } else { 0 }, "holds": l.holds,
            });
            p.set(k.reservation(tenant, &l.id), rec.to_string())
                .ignore();
            if l.state == "active" {
                p.zadd(k.expiry(tenant), &l.id, l.expire_ms).ignore();
            }
        }
        // A new epoch: changes recorded before this rebuild and applied
        // after it (Gate::adjust_at) are in the figures already.
        p.set(k.ready(tenant), uuid::Uuid::now_v7().to_string())
            .ignore();
        p.query_async::<()>(&mut conn).await?;
        self.replicated(&mut conn, &k.ready(tenant)).await?;
        self.rebuilds.add(
            1,
            &[
                opentelemetry::KeyValue::new("tenant", tenant.as_str().to_owned()),
                opentelemetry::KeyValue::new("trigger", trigger),
            ],
        );
        Ok(())
    }
}
