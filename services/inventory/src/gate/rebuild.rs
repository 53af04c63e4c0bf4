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

/// Keys, records or expiry entries one command of a rebuild names.
const CHUNK: usize = 1000;

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
        // Many keys or members per command: a command per key and
        // reservation (tens of thousands for a large tenant) made this
        // the longest part of a rebuild, which the tenant's changes wait
        // for. A tenant's keys share a slot, so each command may name many.
        let mut p = redis::pipe();
        p.atomic();
        let avail: Vec<String> = fields.keys().map(|sku| k.avail(tenant, sku)).collect();
        for chunk in avail.chunks(CHUNK) {
            p.del(chunk).ignore();
        }
        for (key, f) in avail.iter().zip(fields.values()) {
            let pairs: Vec<(&String, &i64)> = f.iter().collect();
            if !pairs.is_empty() {
                p.hset_multiple(key, &pairs).ignore();
            }
        }
        p.del(k.expiry(tenant)).ignore();
        let dropped: Vec<String> = (old.iter())
            .filter(|id| !live_ids.contains(id.as_str()))
            .map(|id| k.reservation(tenant, id))
            .collect();
        for chunk in dropped.chunks(CHUNK) {
            p.del(chunk).ignore();
        }
        let records: Vec<(String, String)> = live
            .iter()
            .map(|l| {
                let rec = serde_json::json!({
                    "s": l.state, "h": l.request_hash, "e": l.expire_ms,
                    "c": if l.consumed { 1 } else { 0 }, "holds": l.holds,
                });
                (k.reservation(tenant, &l.id), rec.to_string())
            })
            .collect();
        for chunk in records.chunks(CHUNK) {
            p.mset(chunk).ignore();
        }
        let expiring: Vec<(i64, &str)> = (live.iter())
            .filter(|l| l.state == "active")
            .map(|l| (l.expire_ms, l.id.as_str()))
            .collect();
        for chunk in expiring.chunks(CHUNK) {
            p.zadd_multiple(k.expiry(tenant), chunk).ignore();
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
