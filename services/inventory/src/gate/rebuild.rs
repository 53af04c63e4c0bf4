//! Writing a whole tenant's gate at once (after Redis lost its data, or on
//! Reconcile), atomically, ready marker last.
use super::{Gate, GateError, Holds, table};
use oms_kernel::Tenant;
use oms_proto::inventory::ReservationDrift;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};

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

    /// The gate's expiry schedule: reservation id -> when it expires (ms).
    pub async fn schedule(&self, tenant: &Tenant) -> Result<HashMap<String, i64>, GateError> {
        let scheduled: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.keys.expiry(tenant))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await?;
        Ok((scheduled.into_iter())
            .map(|(id, at)| (id, at as i64))
            .collect())
    }

    /// Replaces the tenant's figures and reservation records. Records of
    /// reservations the record does not know as live are dropped (those
    /// `scheduled`, as [`Gate::schedule`] read it under the same lock).
    pub async fn install(
        &self,
        tenant: &Tenant,
        fields: &BTreeMap<String, BTreeMap<String, i64>>,
        live: &[LiveRecord],
        scheduled: &HashMap<String, i64>,
        trigger: &'static str,
    ) -> Result<(), GateError> {
        let k = &self.keys;
        let mut conn = self.conn();
        let old = scheduled.keys();
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
        // Counts of the old epoch (writes.rs): each writer counts afresh.
        p.del(k.writes(tenant)).ignore();
        let dropped: Vec<String> = old
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

    /// Where the gate's reservation records and expiry schedule
    /// (`scheduled`, as [`Gate::schedule`] read it) differ from the
    /// record's live reservations (`live`), by id. A record the gate
    /// cannot read counts as missing.
    pub async fn reservation_drifts(
        &self,
        tenant: &Tenant,
        live: &[LiveRecord],
        scheduled: &HashMap<String, i64>,
    ) -> Result<Vec<ReservationDrift>, GateError> {
        let k = &self.keys;
        let mut conn = self.conn();
        let mut kept: Vec<Option<Kept>> = Vec::with_capacity(live.len());
        for chunk in live.chunks(CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|l| k.reservation(tenant, &l.id)).collect();
            let raw: Vec<Option<String>> =
                redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            kept.extend(
                raw.into_iter()
                    .map(|r| r.and_then(|r| serde_json::from_str(&r).ok())),
            );
        }
        let mut out: Vec<ReservationDrift> = live
            .iter()
            .zip(kept)
            .filter_map(|(l, kept)| differences(l, kept.as_ref(), scheduled.get(&l.id).copied()))
            .collect();
        // Scheduled to expire though the record holds it no longer live.
        let live_ids: HashSet<&str> = live.iter().map(|l| l.id.as_str()).collect();
        let ghosts = scheduled
            .keys()
            .filter(|id| !live_ids.contains(id.as_str()));
        out.extend(ghosts.map(|id| ReservationDrift {
            reservation_id: id.clone(),
            differences: vec!["expiry_schedule".into()],
            ..Default::default()
        }));
        out.sort_by(|a, b| a.reservation_id.cmp(&b.reservation_id));
        Ok(out)
    }
}

/// A reservation's record as the gate keeps it (common.lua).
#[derive(Deserialize)]
struct Kept {
    s: String,
    #[serde(default)]
    h: String,
    /// Milliseconds; cjson may write a number with a fraction or exponent.
    #[serde(default)]
    e: f64,
    #[serde(default)]
    c: i64,
    #[serde(default, deserialize_with = "table")]
    holds: Holds,
}

/// How the gate's record of `l` (`kept`) and its expiry entry
/// (`scheduled`) differ from the record; `None` when they agree.
fn differences(
    l: &LiveRecord,
    kept: Option<&Kept>,
    scheduled: Option<i64>,
) -> Option<ReservationDrift> {
    let active = l.state == "active";
    let mut d = vec![];
    match kept {
        None => d.push("missing"),
        Some(r) => {
            let checks = [
                (r.s != l.state, "state"),
                (nonzero(&r.holds) != nonzero(&l.holds), "holds"),
                (active && r.e as i64 != l.expire_ms, "expire_time"),
                ((r.c == 1) != l.consumed, "consumed"),
                (r.h != l.request_hash, "request_hash"),
            ];
            d.extend(
                checks
                    .iter()
                    .filter(|(differs, _)| *differs)
                    .map(|(_, what)| *what),
            );
        }
    }
    if scheduled != active.then_some(l.expire_ms) {
        d.push("expiry_schedule");
    }
    (!d.is_empty()).then(|| ReservationDrift {
        reservation_id: l.id.clone(),
        record_state: l.state.clone(),
        gate_state: kept.map(|r| r.s.clone()).unwrap_or_default(),
        differences: d.into_iter().map(str::to_owned).collect(),
    })
}

/// Holds without the lines released to nothing (the gate keeps those
/// until the reservation finishes).
fn nonzero(h: &Holds) -> BTreeMap<&str, i64> {
    h.iter()
        .filter(|(_, u)| **u != 0)
        .map(|(k, u)| (k.as_str(), *u))
        .collect()
}
