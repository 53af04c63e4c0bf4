//! The reservation gate in Redis: atomic Lua scripts over per-SKU
//! availability hashes and reservation records, all keyed under the
//! tenant's hash tag so they run unchanged on Redis Cluster.
//!
//! The gate is only ever changed inside a Postgres transaction that holds
//! the tenant's gate lock in shared mode and records the same change, so a
//! rebuild (which takes the lock exclusively) always sees a quiet, complete
//! record. A missing `ready` marker (Redis lost its data) makes every
//! script refuse with `NotReady` until the gate is rebuilt.
mod keys;
pub mod rebuild;
mod writes;

pub use keys::GateKeys;

use oms_kernel::Tenant;
use oms_runtime::redis::RedisConn;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const COMMON: &str = include_str!("lua/common.lua");
/// How long the gate keeps a finished (released, expired, consumed)
/// reservation's record: long enough that a client's retries of its
/// CreateReservation are answered here, short enough that Redis holds
/// about an hour of reservations rather than every one ever made.
const FINISHED_KEPT_MS: i64 = 60 * 60 * 1000;
/// SKUs whose figures one pipelined read asks for: few round trips, and
/// no answer of more than a few hundred kilobytes held at once.
const READ_CHUNK: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// Redis lost its data; rebuild the tenant's gate and try again.
    #[error("the reservation gate of the tenant must be rebuilt")]
    NotReady,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected gate answer: {0}")]
    Answer(#[from] serde_json::Error),
    /// Fewer replicas than asked for confirmed the change in time: a
    /// failover could lose it, so it does not count as made.
    #[error("{acked} of {wanted} replicas confirmed the change in time")]
    NotReplicated { acked: i64, wanted: u32 },
}

#[derive(Clone)]
pub struct Gate {
    conn: RedisConn,
    pub keys: GateKeys,
    /// Replicas that must have each change, and how long to wait for them.
    replicas: Option<(u32, Duration)>,
    reserve: Script,
    change: Script,
    expire: Script,
    adjust: Script,
    /// The sweep's check that no change was lost (writes.rs).
    check: Script,
    /// Gates rebuilt from the record, by tenant and trigger.
    rebuilds: opentelemetry::metrics::Counter<u64>,
    /// What this replica's changes were answered (writes.rs).
    writes: writes::Writes,
    /// Gates found to have lost changes they had answered.
    lost: opentelemetry::metrics::Counter<u64>,
    /// How long rebuilds and comparisons took, by trigger.
    rebuild_time: opentelemetry::metrics::Histogram<f64>,
}

/// One line to hold: units of a SKU anywhere (`node` empty) or at a node.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub sku: String,
    pub node: String,
    pub q: i64,
    /// Lot of shipped units; the gate does not count lots.
    #[serde(skip)]
    pub lot: String,
    /// Serial numbers of shipped units; nor serials.
    #[serde(skip)]
    pub serials: Vec<String>,
}

/// A channel's pool and buffer, checked on top of network availability.
#[derive(Debug, Clone, Default)]
pub struct ChannelLimit {
    pub pool: Vec<String>,
    pub buffer_percent: i64,
    pub buffer_quantity: i64,
}

/// What a reservation must leave to others: its channel's share when the
/// channel has a rule, and what the backorders of every source but the
/// one it is for ask for: in the network, and in that share (the
/// channel's own and those of no channel), as published availability
/// keeps them.
#[derive(Debug, Clone, Default)]
pub struct Leave {
    pub rule: Option<ChannelLimit>,
    /// `channels/{id}`, or empty.
    pub channel: String,
    /// The backorder source the reservation is for; empty: none.
    pub backorders_of: String,
}

impl Leave {
    /// As the scripts read it: `{pool, buf_pct, buf_qty}` of the rule
    /// (none: no share to check), `chan`, `bo`.
    fn to_json(&self) -> serde_json::Value {
        let mut j = match &self.rule {
            Some(r) => serde_json::json!({
                "pool": r.pool, "buf_pct": r.buffer_percent, "buf_qty": r.buffer_quantity,
            }),
            None => serde_json::json!({}),
        };
        j["chan"] = self.channel.clone().into();
        j["bo"] = self.backorders_of.clone().into();
        j
    }
}

pub struct ReserveItem {
    pub id: String,
    pub request_hash: String,
    pub expire_ms: i64,
    pub lines: Vec<Line>,
    pub leave: Leave,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Short {
    pub sku: String,
    pub node: String,
    pub have: i64,
    pub want: i64,
    #[serde(default)]
    pub channel: bool,
    /// Units of it kept for backorders (`have` is after them).
    #[serde(default)]
    pub kept: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReserveOutcome {
    Ok,
    /// The id was reserved before with the same request; the gate's
    /// record is in `state` (`active`, `confirmed`, or finished).
    Exists {
        state: String,
    },
    /// The id was reserved before with a different request.
    Conflict,
    Short {
        short: Vec<Short>,
    },
}

/// Units per `"<sku>\t<node>"`, as the gate keeps them.
pub type Holds = BTreeMap<String, i64>;

/// A live reservation as the Postgres record has it, for a change of it:
/// every SKU it holds, its state (`active`, `confirmed`) and holds.
pub struct Known<'a> {
    pub id: &'a str,
    pub skus: &'a [String],
    pub state: &'a str,
    pub holds: &'a Holds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Confirm,
    Release,
    Consume,
    Extend,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChangeOutcome {
    pub status: String,
    #[serde(default)]
    pub state: String,
    #[serde(default, deserialize_with = "table")]
    pub holds: Holds,
    #[serde(default)]
    pub detail: serde_json::Value,
    /// Units released or expired, for the caller to give back after its
    /// commit ([`Gate::adjust_at`] with `epoch`): see [`Gate::change`].
    #[serde(default, deserialize_with = "table")]
    given: Vec<Given>,
    /// The gate's epoch when the change was made.
    #[serde(default)]
    pub epoch: Option<String>,
}

/// What [`Gate::expire`] did.
#[derive(Debug, Clone, Deserialize)]
pub struct ExpireOutcome {
    /// `OK`, or why nothing changed: `NOT_FOUND` (the gate lost a live
    /// reservation), `DIVERGED` (the gate is ahead of the record).
    pub status: String,
    /// The reservation that was not found or diverged.
    #[serde(default)]
    pub id: String,
    /// The reservations expired (those not due by `now_ms` are not).
    #[serde(default, deserialize_with = "table")]
    pub expired: Vec<String>,
    #[serde(default, deserialize_with = "table")]
    given: Vec<Given>,
    #[serde(default)]
    pub epoch: Option<String>,
}

impl ExpireOutcome {
    /// What giving back the expired units changes, as
    /// [`ChangeOutcome::given_back`].
    pub fn given_back(&self) -> Vec<AvailChange> {
        given_back(&self.given)
    }
}

/// Units freed at a node, or (no node) in the network.
#[derive(Debug, Clone, Deserialize)]
struct Given {
    sku: String,
    node: String,
    q: i64,
}

impl ChangeOutcome {
    /// What giving back the released or expired units changes: a node's
    /// promisable stock, or (no node) the network hold.
    pub fn given_back(&self) -> Vec<AvailChange> {
        given_back(&self.given)
    }
}

fn given_back(given: &[Given]) -> Vec<AvailChange> {
    given
        .iter()
        .map(|l| {
            AvailChange::stock(
                &l.sku,
                &l.node,
                if l.node.is_empty() { -l.q } else { l.q },
                0,
            )
        })
        .collect()
}

// cjson writes an empty table as `{}` whether it stands for a list or a
// map (and a map may come as `[]`): an empty one is the default.
pub(crate) fn table<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Object(m) if m.is_empty() => Ok(T::default()),
        serde_json::Value::Array(a) if a.is_empty() => Ok(T::default()),
        v => serde_json::from_value(v).map_err(serde::de::Error::custom),
    }
}

/// A change of one of a SKU's gate figures (`field`): promisable stock at
/// a node, the units held in the network (`nh`: a give-back lowers it),
/// or the units a source's backorders ask for.
#[derive(Debug, Clone)]
pub struct AvailChange {
    pub sku: String,
    pub field: String,
    pub delta: i64,
    /// Starting value when the gate has never seen this field: a node's
    /// minus its safety stock.
    pub init: i64,
}

impl AvailChange {
    /// Of promisable stock at `node`, or (`node` empty) of the network
    /// hold.
    pub fn stock(sku: &str, node: &str, delta: i64, init: i64) -> Self {
        let field = match node {
            "" => "nh".to_owned(),
            n => format!("n:{n}"),
        };
        AvailChange {
            sku: sku.to_owned(),
            field,
            delta,
            init,
        }
    }

    /// Of the units the backorders of `source` sold in `channel` (empty:
    /// of no channel) ask for.
    pub fn demand(sku: &str, source: &str, channel: &str, delta: i64) -> Self {
        AvailChange {
            sku: sku.to_owned(),
            field: demand_field(source, channel),
            delta,
            init: 0,
        }
    }
}

/// The gate's field of the units the backorders of `source` sold in
/// `channel` ask for (sources hold no ':').
pub fn demand_field(source: &str, channel: &str) -> String {
    format!("b:{source}:{channel}")
}

#[derive(Deserialize)]
struct Envelope<T> {
    ready: bool,
    /// The script found that the gate lost changes (writes.rs) and
    /// dropped it.
    #[serde(default)]
    lost: bool,
    /// The writer's count of the tenant's gate, and its epoch.
    #[serde(default)]
    wr: Option<writes::Wrote>,
    #[serde(flatten)]
    body: Option<T>,
}

#[derive(Deserialize)]
struct ReserveBody {
    results: Vec<ReserveOutcome>,
}

pub fn hold_key(sku: &str, node: &str) -> String {
    format!("{sku}\t{node}")
}

pub fn split_hold(key: &str) -> (&str, &str) {
    key.split_once('\t').unwrap_or((key, ""))
}

impl Gate {
    pub fn new(conn: RedisConn, keys: GateKeys) -> Self {
        let script = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Self {
            conn,
            keys,
            replicas: None,
            reserve: script(include_str!("lua/reserve.lua")),
            change: script(include_str!("lua/change.lua")),
            expire: script(include_str!("lua/expire.lua")),
            adjust: script(include_str!("lua/adjust.lua")),
            check: script(include_str!("lua/check.lua")),
            rebuilds: opentelemetry::global::meter("oms-inventory")
                .u64_counter("oms.inventory.gate.rebuilds")
                .with_description(
                    "Reservation gates rebuilt from the record, by tenant and trigger (missing: Redis lost it or a change the record did not keep dropped it; reconcile)",
                )
                .build(),
            writes: writes::Writes::new(),
            lost: opentelemetry::global::meter("oms-inventory")
                .u64_counter("oms.inventory.gate.lost_writes")
                .with_description(
                    "Reservation gates found to lack changes Redis had answered (a failover to a replica that lagged, a restart from an older snapshot), by tenant and who found it (change, sweep); each is rebuilt from the record",
                )
                .build(),
            rebuild_time: opentelemetry::global::meter("oms-inventory")
                .f64_histogram("oms.inventory.gate.rebuild.duration")
                .with_unit("s")
                .with_description(
                    "How long a rebuild of a tenant's reservation gate (or a Reconcile dry run's comparison) took, by tenant and trigger: the tenant's changes wait for it",
                )
                .with_boundaries(vec![
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ])
                .build(),
        }
    }

    /// A rebuild (or, `trigger` `dry_run`, a comparison) of the tenant's
    /// gate took `took`.
    pub fn rebuilt_in(&self, tenant: &Tenant, trigger: &'static str, took: Duration) {
        self.rebuild_time.record(
            took.as_secs_f64(),
            &[
                opentelemetry::KeyValue::new("tenant", tenant.as_str().to_owned()),
                opentelemetry::KeyValue::new("trigger", trigger),
            ],
        );
    }

    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Returns once the replicas asked for have every write made on `conn`
    /// to the node of the tenant's gate (at once when none are asked for).
    /// When too few have them in time, the change does not count: an
    /// error, and the gate's `ready` marker is dropped, so the next change
    /// rebuilds the gate from the record (a reservation batch that fails
    /// here leaves grants its record will not have).
    async fn replicated(&self, conn: &mut RedisConn, ready: &str) -> Result<(), GateError> {
        let Some((wanted, timeout)) = self.replicas else {
            return Ok(());
        };
        // An error (the connection lost, say) leaves as much unknown.
        let acked = oms_runtime::redis::wait_for_replicas(conn, ready, wanted, timeout)
            .await
            .unwrap_or(0);
        if acked < i64::from(wanted) {
            redis::cmd("DEL")
                .arg(ready)
                .query_async::<i64>(conn)
                .await?;
            return Err(GateError::NotReplicated { acked, wanted });
        }
        Ok(())
    }

    /// Counts a change as made only once `n` replicas have it (none: as
    /// soon as the node has it).
    pub fn with_replicas(mut self, n: u32, timeout: Duration) -> Self {
        self.replicas = (n > 0).then_some((n, timeout));
        self
    }

    /// Runs one of the tenant's gate scripts: `keys` (the ready marker
    /// first) and then the writes hash, `arg` and this writer's `wr`.
    async fn run<T: for<'de> Deserialize<'de>>(
        &self,
        tenant: &Tenant,
        script: &Script,
        mut keys: Vec<String>,
        mut arg: serde_json::Value,
    ) -> Result<T, GateError> {
        keys.push(self.keys.writes(tenant));
        arg["wr"] = self.writes.arg(tenant);
        let mut inv = script.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(arg.to_string());
        let mut conn = self.conn.clone();
        let raw: String = inv.invoke_async(&mut conn).await?;
        self.replicated(&mut conn, &keys[0]).await?;
        let env: Envelope<T> = serde_json::from_str(&raw)?;
        if env.lost {
            self.lost_writes(tenant, "change");
        }
        if let Some(wrote) = env.wr {
            self.writes.answered(tenant, wrote);
        }
        match (env.ready, env.body) {
            (true, Some(b)) => Ok(b),
            (false, _) => Err(GateError::NotReady),
            (true, None) => Err(GateError::Answer(serde::de::Error::custom("empty answer"))),
        }
    }

    /// Reserves a batch of one tenant's reservations in one atomic script.
    /// `owner` is the batch's token: what it grants or finds granted is
    /// its own to [`Gate::give_back`].
    pub async fn reserve(
        &self,
        tenant: &Tenant,
        items: &[ReserveItem],
        owner: &str,
    ) -> Result<Vec<ReserveOutcome>, GateError> {
        let k = &self.keys;
        let mut keys = vec![k.ready(tenant), k.expiry(tenant)];
        keys.extend(items.iter().map(|it| k.reservation(tenant, &it.id)));
        let mut akeys = serde_json::Map::new();
        for l in items.iter().flat_map(|it| &it.lines) {
            if !akeys.contains_key(&l.sku) {
                let a = k.avail(tenant, &l.sku);
                keys.push(a.clone());
                akeys.insert(l.sku.clone(), a.into());
            }
        }
        let json_items: Vec<serde_json::Value> = items
            .iter()
            .map(|it| {
                let mut item = serde_json::json!({
                    "id": it.id, "h": it.request_hash, "e": it.expire_ms, "lines": it.lines,
                });
                // The item doubles as the limit the script checks.
                for (k, v) in it.leave.to_json().as_object().into_iter().flatten() {
                    item[k] = v.clone();
                }
                item
            })
            .collect();
        let body: ReserveBody = self
            .run(
                tenant,
                &self.reserve,
                keys,
                serde_json::json!({ "w": owner, "akeys": akeys, "items": json_items }),
            )
            .await?;
        Ok(body.results)
    }

    /// Confirms, releases or consumes one reservation, or expires it when
    /// it is found due (`STATE`). `skus` are every SKU the reservation
    /// holds. Units a release or expiry frees are
    /// not given back here: the outcome lists them (`given_back`, with the
    /// gate's `epoch`) for the caller to give back once its record of the
    /// change is committed, so they cannot be promised to anyone while
    /// that record may still fail.
    /// Refused (`DIVERGED`, nothing changed) when the gate's state or
    /// holds of it are not `known`'s.
    pub async fn change(
        &self,
        tenant: &Tenant,
        op: Op,
        known: &Known<'_>,
        entries: &[Line],
        now_ms: i64,
    ) -> Result<ChangeOutcome, GateError> {
        self.run_change(tenant, op, known, entries, None, None, now_ms)
            .await
    }

    /// Expires those of `due` (one tenant's active reservations with their
    /// holds, as the Postgres record has them) that are due by `now_ms`, in
    /// one script; their units are not given back here but listed, as
    /// [`Gate::change`] lists them. Refused whole (`DIVERGED`, `NOT_FOUND`,
    /// nothing changed) when the gate's state or holds of any of them are
    /// not the record's.
    pub async fn expire(
        &self,
        tenant: &Tenant,
        due: &[(&str, &Holds)],
        now_ms: i64,
    ) -> Result<ExpireOutcome, GateError> {
        let k = &self.keys;
        let mut keys = vec![k.ready(tenant), k.expiry(tenant)];
        keys.extend(due.iter().map(|(id, _)| k.reservation(tenant, id)));
        let items: Vec<_> = due
            .iter()
            .map(|(id, holds)| serde_json::json!({"id": id, "s": "active", "holds": holds}))
            .collect();
        let arg = serde_json::json!({
            "now": now_ms, "keep_ms": FINISHED_KEPT_MS, "items": items,
        });
        self.run(tenant, &self.expire, keys, arg).await
    }

    /// Gives back a grant of the batch `owner` that the Postgres record
    /// does not keep (its write failed, or the id was recorded already):
    /// its units return and the gate forgets it. Refused (`STATE`) when
    /// another batch found it since and owns it now.
    pub async fn give_back(
        &self,
        tenant: &Tenant,
        id: &str,
        skus: &[String],
        owner: &str,
        now_ms: i64,
    ) -> Result<ChangeOutcome, GateError> {
        // Not an `Op` of the domain: only the batch writer asks it.
        let op = serde_json::json!("giveback");
        let extra = serde_json::json!({});
        self.run_change_as(tenant, op, id, skus, &[], now_ms, Some(owner), extra)
            .await
    }

    /// Adds `entries` to one live reservation, leaving what it must
    /// `leave` to others, and with `renew` (ms since the epoch)
    /// makes that the active reservation's new expiry; refused as
    /// [`Gate::change`] is.
    #[allow(clippy::too_many_arguments)]
    pub async fn extend(
        &self,
        tenant: &Tenant,
        known: &Known<'_>,
        entries: &[Line],
        leave: &Leave,
        renew: Option<i64>,
        now_ms: i64,
    ) -> Result<ChangeOutcome, GateError> {
        let leave = Some(leave);
        self.run_change(tenant, Op::Extend, known, entries, leave, renew, now_ms)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_change(
        &self,
        tenant: &Tenant,
        op: Op,
        known: &Known<'_>,
        entries: &[Line],
        leave: Option<&Leave>,
        renew: Option<i64>,
        now_ms: i64,
    ) -> Result<ChangeOutcome, GateError> {
        let op = serde_json::json!(op);
        let expect = serde_json::json!({"s": known.state, "holds": known.holds});
        let mut extra = serde_json::json!({"expect": expect});
        if let Some(l) = leave {
            extra["limit"] = l.to_json();
        }
        if let Some(e) = renew {
            extra["renew"] = e.into();
        }
        self.run_change_as(
            tenant, op, known.id, known.skus, entries, now_ms, None, extra,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_change_as(
        &self,
        tenant: &Tenant,
        op: serde_json::Value,
        id: &str,
        skus: &[String],
        entries: &[Line],
        now_ms: i64,
        owner: Option<&str>,
        // More of the script's argument: `expect`, `limit`, `renew`.
        extra: serde_json::Value,
    ) -> Result<ChangeOutcome, GateError> {
        let k = &self.keys;
        let mut keys = vec![k.ready(tenant), k.expiry(tenant), k.reservation(tenant, id)];
        let mut akeys = serde_json::Map::new();
        for sku in skus.iter().chain(entries.iter().map(|e| &e.sku)) {
            if !akeys.contains_key(sku) {
                let a = k.avail(tenant, sku);
                keys.push(a.clone());
                akeys.insert(sku.clone(), a.into());
            }
        }
        let mut arg = serde_json::json!({
            "op": op, "id": id, "now": now_ms, "akeys": akeys, "entries": entries,
            "keep_ms": FINISHED_KEPT_MS,
        });
        if let (Some(arg), serde_json::Value::Object(extra)) = (arg.as_object_mut(), extra) {
            arg.extend(extra);
        }
        match owner {
            Some(w) => arg["w"] = w.into(),
            None => arg["later"] = true.into(),
        }
        self.run(tenant, &self.change, keys, arg).await
    }

    /// Applies changes of promisable stock.
    pub async fn adjust(&self, tenant: &Tenant, changes: &[AvailChange]) -> Result<(), GateError> {
        self.adjust_in(tenant, changes, None).await.map(|_| ())
    }

    /// The gate's epoch: its ready marker's value, new at every rebuild;
    /// `None` when the gate is missing.
    pub async fn epoch(&self, tenant: &Tenant) -> Result<Option<String>, GateError> {
        let mut c = self.conn();
        Ok(redis::cmd("GET")
            .arg(self.keys.ready(tenant))
            .query_async(&mut c)
            .await?)
    }

    /// Applies changes recorded while the gate was at `epoch`, unless it
    /// has been rebuilt since (the rebuild counted them): whether they
    /// were applied. A missing gate counts them when it is rebuilt.
    pub async fn adjust_at(
        &self,
        tenant: &Tenant,
        changes: &[AvailChange],
        epoch: &str,
    ) -> Result<bool, GateError> {
        match self.adjust_in(tenant, changes, Some(epoch)).await {
            Err(GateError::NotReady) => Ok(false),
            other => other,
        }
    }

    async fn adjust_in(
        &self,
        tenant: &Tenant,
        changes: &[AvailChange],
        epoch: Option<&str>,
    ) -> Result<bool, GateError> {
        if changes.is_empty() {
            return Ok(true);
        }
        let k = &self.keys;
        let mut keys = vec![k.ready(tenant)];
        let mut list = Vec::new();
        for c in changes {
            let a = k.avail(tenant, &c.sku);
            keys.push(a.clone());
            list.push(
                serde_json::json!({"akey": a, "f": c.field, "delta": c.delta, "init": c.init}),
            );
        }
        #[derive(Deserialize)]
        struct Applied {
            applied: bool,
        }
        let arg = match epoch {
            Some(e) => serde_json::json!({ "changes": list, "epoch": e }),
            None => serde_json::json!({ "changes": list }),
        };
        let out: Applied = self.run(tenant, &self.adjust, keys, arg).await?;
        Ok(out.applied)
    }

    /// The gate's current figures of some SKUs: field -> value per SKU.
    pub async fn read(
        &self,
        tenant: &Tenant,
        skus: &[String],
    ) -> Result<HashMap<String, HashMap<String, i64>>, GateError> {
        let mut out = HashMap::new();
        let mut conn = self.conn.clone();
        // Pipelined, a chunk at a time: a round trip per SKU made a
        // rebuild, which every change of the tenant waits for, grow with
        // the round trips (a tenant's keys share a slot, so a pipeline
        // goes to one node of a cluster).
        for chunk in skus.chunks(READ_CHUNK) {
            let mut p = redis::pipe();
            for sku in chunk {
                p.hgetall(self.keys.avail(tenant, sku));
            }
            let figures: Vec<HashMap<String, i64>> = p.query_async(&mut conn).await?;
            out.extend(chunk.iter().cloned().zip(figures));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use oms_runtime::config::RedisConfig;

    /// A gate of its own (a fresh key prefix) on the test Redis, with a
    /// connection to it, for tenant acme.
    async fn gate() -> (Gate, RedisConn, Tenant) {
        let cfg = RedisConfig {
            url: oms_testkit::redis_url(),
            cluster_nodes: vec![],
            key_prefix: oms_testkit::redis_prefix(),
            min_replicas: 0,
            replica_timeout: std::time::Duration::from_millis(100),
        };
        let conn = oms_runtime::redis::connect(&cfg).await.unwrap();
        let gate = Gate::new(conn.clone(), GateKeys::new(&cfg.key_prefix));
        (gate, conn, Tenant::parse("acme").unwrap())
    }

    /// Batch "a" grants a reservation and its record fails; batch "b",
    /// with a copy of the request, finds the grant (EXISTS) before "a"
    /// gives it back. "a"'s give-back must leave "b"'s grant alone (b is
    /// recording it); b's own give-back, had its record failed too, works
    /// and forgets the reservation.
    #[tokio::test]
    async fn only_the_batch_that_owns_a_grant_gives_it_back() {
        let (gate, mut conn, t) = gate().await;
        set_epoch(&gate, &mut conn, &t, "1").await;
        redis::cmd("HSET")
            .arg(gate.keys.avail(&t, "A"))
            .arg("n:DC1")
            .arg(10)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        let item = || ReserveItem {
            id: "r1".into(),
            request_hash: "h".into(),
            expire_ms: now + 60_000,
            lines: vec![Line {
                sku: "A".into(),
                node: String::new(),
                q: 3,
                lot: String::new(),
                serials: vec![],
            }],
            leave: Leave::default(),
        };
        let reserve =
            async |owner: &str| gate.reserve(&t, &[item()], owner).await.unwrap().remove(0);
        let held = async || gate.read(&t, &["A".into()]).await.unwrap()["A"]["nh"];
        let skus = ["A".to_string()];

        assert!(matches!(reserve("a").await, ReserveOutcome::Ok));
        assert!(matches!(reserve("b").await, ReserveOutcome::Exists { .. }));
        let a = gate.give_back(&t, "r1", &skus, "a", now).await.unwrap();
        assert_eq!(a.status, "STATE", "b owns the grant now");
        assert_eq!(held().await, 3);
        let b = gate.give_back(&t, "r1", &skus, "b", now).await.unwrap();
        assert_eq!(b.status, "OK");
        assert_eq!(held().await, 0);
        // Forgotten: the same request again is a new grant.
        assert!(matches!(reserve("c").await, ReserveOutcome::Ok));
        assert_eq!(held().await, 3);

        // A live record stays; a finished one is dropped after a while.
        let ttl = async |conn: &mut RedisConn| -> i64 {
            redis::cmd("PTTL")
                .arg(gate.keys.reservation(&t, "r1"))
                .query_async(conn)
                .await
                .unwrap()
        };
        assert_eq!(ttl(&mut conn).await, -1, "live: no expiry");
        let holds = Holds::from([("A\t".to_string(), 3)]);
        let known = Known {
            id: "r1",
            skus: &skus,
            state: "active",
            holds: &holds,
        };
        let out = gate
            .change(&t, Op::Release, &known, &[], now)
            .await
            .unwrap();
        assert_eq!(
            (out.status.as_str(), out.state.as_str()),
            ("OK", "released")
        );
        // The units are the caller's to give back, after its commit.
        assert_eq!(held().await, 3);
        let epoch = out.epoch.clone().unwrap();
        assert!(gate.adjust_at(&t, &out.given_back(), &epoch).await.unwrap());
        assert_eq!(held().await, 0);
        let left = ttl(&mut conn).await;
        assert!(
            left > FINISHED_KEPT_MS - 60_000 && left <= FINISHED_KEPT_MS,
            "finished: kept {left} ms"
        );
        // A repeat finds the finished record and leaves it as it was: still
        // dropped after a while, still holding nothing.
        match reserve("d").await {
            ReserveOutcome::Exists { state } => assert_eq!(state, "released"),
            other => panic!("a repeat of a released reservation: {other:?}"),
        }
        let kept = ttl(&mut conn).await;
        assert!(
            kept > 0 && kept <= left,
            "the repeat kept the expiry: {kept} ms"
        );
        assert_eq!(held().await, 0);
    }

    /// The tenants the sweep finds to have lost changes.
    async fn lost(gate: &Gate) -> Vec<Tenant> {
        let found = gate.find_lost_writes().await;
        found.into_iter().map(Result::unwrap).collect()
    }

    /// Sets the gate's epoch (its ready marker), as a rebuild does.
    async fn set_epoch(gate: &Gate, conn: &mut RedisConn, t: &Tenant, epoch: &str) {
        redis::cmd("SET")
            .arg(gate.keys.ready(t))
            .arg(epoch)
            .query_async::<()>(conn)
            .await
            .unwrap();
    }

    /// Sets the gate up at epoch e1, with 10 units of SKU A at DC1.
    async fn ready_with_a(gate: &Gate, conn: &mut RedisConn, t: &Tenant) {
        redis::pipe()
            .set(gate.keys.ready(t), "e1")
            .hset(gate.keys.avail(t, "A"), "n:DC1", 10)
            .query_async::<()>(conn)
            .await
            .unwrap();
    }

    /// A reservation of `q` units of A as `id`.
    fn cart(id: &str, q: i64) -> ReserveItem {
        ReserveItem {
            id: id.into(),
            request_hash: id.into(),
            expire_ms: chrono::Utc::now().timestamp_millis() + 60_000,
            lines: vec![Line {
                sku: "A".into(),
                node: String::new(),
                q,
                lot: String::new(),
                serials: vec![],
            }],
            leave: Leave::default(),
        }
    }

    /// Redis lost a change it had answered this writer (the count of its
    /// scripts went back, as a failover to a replica that lagged leaves
    /// it): the next script changes nothing and drops the gate. A rebuilt
    /// gate (a new epoch, counts afresh) is not taken for one that lost.
    #[tokio::test]
    async fn a_gate_behind_what_it_answered_is_dropped_by_the_next_change() {
        let (gate, mut conn, t) = gate().await;
        ready_with_a(&gate, &mut conn, &t).await;
        let reserve = async |id: &str| gate.reserve(&t, &[cart(id, 2)], "w").await;
        let granted = async |id: &str| matches!(reserve(id).await.unwrap()[0], ReserveOutcome::Ok);
        assert!(granted("r1").await);
        assert!(granted("r2").await);
        let writes = gate.keys.writes(&t);
        let id = gate.writes.id.to_string();
        redis::cmd("HINCRBY")
            .arg(&writes)
            .arg(&id)
            .arg(-1)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        assert!(matches!(reserve("r3").await, Err(GateError::NotReady)));
        assert_eq!(gate.epoch(&t).await.unwrap(), None, "the gate is dropped");
        let r3: Option<String> = redis::cmd("GET")
            .arg(gate.keys.reservation(&t, "r3"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(r3, None, "nothing changed");
        // Rebuilt: a new epoch whose counts start again.
        redis::pipe()
            .set(gate.keys.ready(&t), "e2")
            .del(&writes)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        assert!(granted("r3").await);
        assert!(granted("r4").await);
        assert_eq!(gate.epoch(&t).await.unwrap().as_deref(), Some("e2"));
        // Redis lost that rebuild: the gate is back at e1.
        set_epoch(&gate, &mut conn, &t, "e1").await;
        assert!(matches!(reserve("r5").await, Err(GateError::NotReady)));
        assert_eq!(gate.epoch(&t).await.unwrap(), None, "the gate is dropped");
    }

    /// The sweep finds the loss without a change: a writer that makes no
    /// more changes of the tenant, while other replicas make theirs.
    #[tokio::test]
    async fn the_sweep_finds_a_gate_behind_what_it_answered() {
        let (gate, mut conn, t) = gate().await;
        ready_with_a(&gate, &mut conn, &t).await;
        let out = gate.reserve(&t, &[cart("r1", 3)], "w").await.unwrap();
        assert!(matches!(out[0], ReserveOutcome::Ok));
        assert!(lost(&gate).await.is_empty());
        assert_eq!(gate.epoch(&t).await.unwrap().as_deref(), Some("e1"));
        redis::cmd("HDEL")
            .arg(gate.keys.writes(&t))
            .arg(gate.writes.id.to_string())
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        assert_eq!(lost(&gate).await, std::slice::from_ref(&t));
        assert_eq!(gate.epoch(&t).await.unwrap(), None, "the gate is dropped");
        assert!(lost(&gate).await.is_empty());

        // Rebuilt twice (e2, e3), then back at e2: a rebuild lost.
        for (ep, id) in [("e2", "r2"), ("e3", "r3")] {
            set_epoch(&gate, &mut conn, &t, ep).await;
            let out = gate.reserve(&t, &[cart(id, 1)], "w").await.unwrap();
            assert!(matches!(out[0], ReserveOutcome::Ok));
        }
        assert!(lost(&gate).await.is_empty());
        set_epoch(&gate, &mut conn, &t, "e2").await;
        let lost = lost(&gate).await;
        assert_eq!(lost, std::slice::from_ref(&t), "the epoch before");
        assert_eq!(gate.epoch(&t).await.unwrap(), None, "the gate is dropped");
    }

    /// Stock given back after a commit reaches the gate only if no rebuild
    /// came in between (the rebuild counted it from the record).
    #[tokio::test]
    async fn a_change_applied_after_its_commit_is_skipped_by_a_newer_gate() {
        let (gate, mut conn, t) = gate().await;
        let change = [AvailChange::stock("A", "DC1", 5, 0)];
        let dc1 = async || {
            gate.read(&t, &["A".into()]).await.unwrap()["A"]
                .get("n:DC1")
                .copied()
        };
        assert!(!gate.adjust_at(&t, &change, "e1").await.unwrap(), "no gate");
        set_epoch(&gate, &mut conn, &t, "e2").await;
        assert_eq!(gate.epoch(&t).await.unwrap().as_deref(), Some("e2"));
        assert!(
            !gate.adjust_at(&t, &change, "e1").await.unwrap(),
            "rebuilt since"
        );
        assert_eq!(dc1().await, None);
        assert!(gate.adjust_at(&t, &change, "e2").await.unwrap());
        assert_eq!(dc1().await, Some(5));
    }
}
