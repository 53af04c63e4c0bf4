//! Reservations: created through a group-commit writer (many per Postgres
//! transaction and one gate script per tenant, so a hot SKU is not bound
//! by commit latency), changed one at a time (confirm, release, consume,
//! expire).
use super::movements::Origin;
use super::{Begin, Inventory, emit, now_ms};
use crate::domain::movement;
use crate::domain::reservation::{Entries, NewReservation, parse_entries};
use crate::domain::{check_node_id, check_sku};
use crate::error::{Error, Result};
use crate::gate::{
    self, ChannelLimit, Gate, GateError, Holds, Line, Op, ReserveItem, ReserveOutcome, Short,
};
use crate::metrics::Api;
use crate::repo::{self, lock, reservations::NewRow};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use oms_kernel::{Paging, RequestId, Tenant, Violations, parse_name};
use oms_proto::inventory::{channel_rule::Buffer, *};
use oms_runtime::{
    batch::Batcher,
    outbox::{self, NewEvent, TraceContext},
    time::to_timestamp,
};
use prost::Message;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const MAX_BATCH: usize = 256;
/// Few writers, so that batches are large: a batch's fixed cost (five
/// round trips, the commit among them) is most of what a small one costs
/// Postgres. The script of a batch unpacks its records in one call, which
/// Redis's Lua allows for a few thousand values: keep `MAX_BATCH` small.
/// With 256 clients `oms-bench hot-sku` gave 4.7k-5.0k/s with 8 writers,
/// 5.8k-6.4k/s with 3 or 4, 5.2k/s with 1 (2026-12-01).
const WORKERS: usize = 3;

/// Reservations of one `StreamReservations` stream being written at once.
pub const STREAM_IN_FLIGHT: usize = 64;

struct Job {
    tenant: Tenant,
    res: NewReservation,
    /// The trace of the request, carried by its event: a batch serves
    /// many requests, each in its own trace.
    trace: TraceContext,
}

/// The group-commit writer of new reservations.
#[derive(Clone)]
pub struct Writer(Batcher<Job, Result<Reservation>>);

impl Writer {
    pub fn start(pool: PgPool, gate: Gate, shutdown: CancellationToken) -> Writer {
        let known = KnownItems::default();
        Writer(Batcher::start(WORKERS, MAX_BATCH, shutdown, move |jobs| {
            let (pool, gate, known) = (pool.clone(), gate.clone(), known.clone());
            async move { write_batch(&pool, &gate, &known, jobs).await }
        }))
    }

    async fn submit(
        &self,
        tenant: &Tenant,
        res: NewReservation,
        trace: TraceContext,
    ) -> Result<Reservation> {
        let job = Job {
            tenant: tenant.clone(),
            res,
            trace,
        };
        self.0.submit(job).await?
    }
}

pub async fn create(
    inv: &Inventory,
    tenant: &Tenant,
    req: CreateReservationRequest,
    api: Api,
    trace: TraceContext,
) -> Result<CreateReservationResponse> {
    let answer = match NewReservation::parse(&req) {
        Ok(res) => inv.writer.submit(tenant, res, trace).await,
        Err(e) => Err(e.into()),
    };
    inv.metrics.reservation(tenant.as_str(), api, &answer);
    Ok(CreateReservationResponse {
        reservation: Some(answer?),
    })
}

/// Writes one batch and answers every job, in order. A gate that lost its
/// data is rebuilt and the batch written again.
async fn write_batch(
    pool: &PgPool,
    gate: &Gate,
    known: &KnownItems,
    jobs: Vec<Job>,
) -> Vec<Result<Reservation>> {
    let n = jobs.len();
    // Each tenant's jobs with their places in the batch.
    let mut by_tenant: BTreeMap<Tenant, Vec<Job>> = BTreeMap::new();
    let mut places: BTreeMap<Tenant, Vec<usize>> = BTreeMap::new();
    for (i, j) in jobs.into_iter().enumerate() {
        places.entry(j.tenant.clone()).or_default().push(i);
        by_tenant.entry(j.tenant.clone()).or_default().push(j);
    }
    let mut rebuilds = 0;
    loop {
        match try_batch(pool, gate, known, &by_tenant).await {
            Ok(mut answers) => {
                let mut out: Vec<Option<Result<Reservation>>> = (0..n).map(|_| None).collect();
                for (t, at) in places {
                    let answers = answers.remove(&t).unwrap_or_default();
                    for (i, a) in at.into_iter().zip(answers) {
                        out[i] = Some(a);
                    }
                }
                return out
                    .into_iter()
                    .map(|a| {
                        a.unwrap_or_else(|| {
                            Err(Error::Internal("reservation batch lost an answer".into()))
                        })
                    })
                    .collect();
            }
            Err((Some(t), Error::Gate(GateError::NotReady))) if rebuilds < 4 => {
                rebuilds += 1;
                if let Err(e) = super::reconcile::ensure_ready_with(pool, gate, &t, "missing").await
                {
                    tracing::error!(error = %e, tenant = %t, "gate rebuild failed");
                }
            }
            Err((_, e)) => {
                tracing::error!(error = %e, "reservation batch failed");
                return (0..n)
                    .map(|_| {
                        Err(match &e {
                            Error::Db(_) | Error::Gate(_) => Error::Unavailable(
                                "the reservation store is unavailable; retry".into(),
                            ),
                            _ => Error::Internal(e.to_string()),
                        })
                    })
                    .collect();
            }
        }
    }
}

type Answers = HashMap<Tenant, Vec<Result<Reservation>>>;

/// What a batch sent to the gate, for [`unwind`] should the batch fail.
struct Sent {
    /// The batch's token in the gate: what it grants or finds granted is
    /// its own to give back (see `Gate::give_back`).
    owner: String,
    /// Per tenant, the jobs (places in its part of the batch) the gate
    /// granted afresh: grants no record but this batch's can keep.
    fresh: Vec<(Tenant, Vec<usize>)>,
    /// Tenants whose script's answer was lost: it may have run, granting
    /// or taking over (EXISTS) who knows what.
    unknown: Vec<Tenant>,
    /// Tenants where the batch took a grant over (EXISTS, active): it owns
    /// the grant now, and failing, can neither keep it (no record may
    /// have it) nor give it back (another batch's record may).
    taken: Vec<Tenant>,
    /// The commit was sent: the record may keep the grants after all.
    committing: bool,
}

/// Writes one batch once. When it fails, nothing it granted is left in
/// the gate without a record.
async fn try_batch(
    pool: &PgPool,
    gate: &Gate,
    known: &KnownItems,
    by_tenant: &BTreeMap<Tenant, Vec<Job>>,
) -> Result<Answers, (Option<Tenant>, Error)> {
    let mut sent = Sent {
        owner: uuid::Uuid::now_v7().to_string(),
        fresh: Vec::new(),
        unknown: Vec::new(),
        taken: Vec::new(),
        committing: false,
    };
    let written = record_batch(pool, gate, known, by_tenant, &mut sent).await;
    if written.is_err() {
        unwind(pool, gate, by_tenant, sent).await;
    }
    written
}

/// Undoes in the gate what a failed batch did to it. Before the commit the
/// record keeps none of the batch's fresh grants: each is given back (if
/// the batch still owns it: another may have found it since and be
/// recording it). A grant the batch only took over (EXISTS) cannot be
/// given back: its record may be another batch's, committed; nor left, as
/// the batch that granted it may have failed too and left it to this one.
/// Where the batch took one over, where the script's answer was lost, or
/// the commit failed (it may have taken place), or a give-back fails, the
/// gate is unknown: the tenant's gate is dropped, so its next
/// change rebuilds it from the record, and where Redis cannot be told even
/// that, the sweep drops it ([`super::reconcile::recover_give_backs`]).
async fn unwind(pool: &PgPool, gate: &Gate, by_tenant: &BTreeMap<Tenant, Vec<Job>>, sent: Sent) {
    let mut dropped: Vec<&Tenant> = sent.unknown.iter().chain(&sent.taken).collect();
    for (t, places) in &sent.fresh {
        if sent.committing {
            dropped.push(t);
            continue;
        }
        let jobs = by_tenant.get(t).map(Vec::as_slice).unwrap_or_default();
        // All at once: the client pipelines them, so a failed batch of 256
        // waits about one round trip, not 256.
        let (now, owner) = (now_ms(), &sent.owner);
        let given = join_all(
            places
                .iter()
                .filter_map(|i| jobs.get(*i))
                .map(|j| async move {
                    let skus = j.res.skus();
                    gate.give_back(t, &j.res.id, &skus, owner, now).await
                }),
        )
        .await;
        if let Some(Err(e)) = given.into_iter().find(Result::is_err) {
            tracing::warn!(error = %e, tenant = %t, "a failed reservation batch could not give back its grants");
            dropped.push(t);
        }
    }
    dropped.sort();
    dropped.dedup();
    for t in dropped {
        let why = "a reservation batch failed unsure of its gate";
        super::drop_gate_or_sweep(pool, gate, t, why).await;
    }
}

async fn record_batch(
    pool: &PgPool,
    gate: &Gate,
    known: &KnownItems,
    by_tenant: &BTreeMap<Tenant, Vec<Job>>,
    sent: &mut Sent,
) -> Result<Answers, (Option<Tenant>, Error)> {
    let mut tx = pool
        .begin_with(sqlx::AssertSqlSafe(lock::begin_shared(by_tenant.keys())))
        .await
        .map_err(|e| (None, e.into()))?;
    let now = Utc::now();
    let mut answers: Answers = HashMap::new();
    let mut events: Vec<(Tenant, String, Vec<u8>, &TraceContext)> = Vec::new();
    for (t, jobs) in by_tenant {
        let per = tenant_batch(&mut tx, gate, known, t, jobs, now, sent)
            .await
            .map_err(|e| (Some(t.clone()), e))?;
        let mut out = Vec::with_capacity(per.len());
        for ((answer, grant), job) in per.into_iter().zip(jobs) {
            if let (Ok(r), Grant::Fresh | Grant::Recorded) = (&answer, grant) {
                let ev = InventoryEvent {
                    meta: None,
                    kind: Some(inventory_event::Kind::StockReserved(StockReserved {
                        reservation: Some(r.clone()),
                    })),
                };
                events.push((t.clone(), r.name.clone(), ev.encode_to_vec(), &job.trace));
            }
            out.push(answer);
        }
        answers.insert(t.clone(), out);
    }
    let new_events: Vec<NewEvent> = events
        .iter()
        .map(|(t, subject, payload, _)| NewEvent {
            tenant: t,
            event_type: "StockReserved",
            subject,
            request_id: "",
            payload: payload.clone(),
        })
        .collect();
    let traced: Vec<(&NewEvent, &TraceContext)> =
        new_events.iter().zip(events.iter().map(|e| e.3)).collect();
    outbox::append_traced(&mut tx, &traced)
        .await
        .map_err(|e| (None, e.into()))?;
    sent.committing = true;
    tx.commit().await.map_err(|e| (None, e.into()))?;
    Ok(answers)
}

/// Reserves one tenant's part of a batch inside the batch transaction:
/// an answer per job, and what the batch did for it.
async fn tenant_batch(
    tx: &mut sqlx::PgConnection,
    gate: &Gate,
    known: &KnownItems,
    tenant: &Tenant,
    jobs: &[Job],
    now: DateTime<Utc>,
    sent: &mut Sent,
) -> Result<Vec<(Result<Reservation>, Grant)>> {
    let mut skus: Vec<String> = jobs.iter().flat_map(|j| j.res.skus()).collect();
    skus.sort();
    skus.dedup();
    let items = known_items(known, tx, tenant, &skus).await?;
    let named = jobs
        .iter()
        .flat_map(|j| j.res.lines.iter().map(|l| l.node_id.clone()))
        .collect();
    let nodes = named_nodes(tx, tenant, named).await?;
    let mut rules: HashMap<String, Option<ChannelRule>> = HashMap::new();

    let mut answers: Vec<Option<Result<Reservation>>> = Vec::with_capacity(jobs.len());
    let mut to_gate: Vec<(usize, ReserveItem)> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        let r = &j.res;
        let lines = || r.lines.iter().map(|l| (l.sku.as_str(), l.node_id.as_str()));
        let checked = unknown_lines("lines", lines(), &items, &nodes)
            .into_result(())
            .map_err(Error::from)
            .and_then(|()| disabled_lines("lines", lines(), &nodes));
        if let Err(e) = checked {
            answers.push(Some(Err(e)));
            continue;
        }
        let rule = match &r.channel {
            None => None,
            Some(c) => {
                let name = format!("channels/{c}");
                if !rules.contains_key(&name) {
                    let rule = repo::rules::channel_rule(&mut *tx, tenant, &name).await?;
                    rules.insert(name.clone(), rule);
                }
                rules[&name].as_ref()
            }
        };
        let nodes = r.lines.iter().map(|l| l.node_id.as_str());
        if let Err(e) = outside_pool("lines", rule, nodes) {
            answers.push(Some(Err(e)));
            continue;
        }
        let channel = rule.map(channel_limit);
        answers.push(None);
        to_gate.push((
            i,
            ReserveItem {
                id: r.id.clone(),
                request_hash: r.request_hash.clone(),
                expire_ms: now.timestamp_millis() + r.ttl.as_millis() as i64,
                lines: r.gate_lines(),
                channel,
            },
        ));
    }
    let items: Vec<ReserveItem> = to_gate.iter().map(|(_, it)| it.clone_item()).collect();
    let outcomes = if items.is_empty() {
        vec![]
    } else {
        match gate.reserve(tenant, &items, &sent.owner).await {
            Ok(outcomes) => {
                let fresh = to_gate.iter().zip(&outcomes);
                let fresh: Vec<usize> = fresh
                    .filter(|(_, o)| matches!(o, ReserveOutcome::Ok))
                    .map(|((i, _), _)| *i)
                    .collect();
                if !fresh.is_empty() {
                    sent.fresh.push((tenant.clone(), fresh));
                }
                let active = |o: &ReserveOutcome| matches!(o, ReserveOutcome::Exists { state } if state == "active");
                if outcomes.iter().any(active) {
                    sent.taken.push(tenant.clone());
                }
                outcomes
            }
            // Refused before it changed anything.
            Err(GateError::NotReady) => return Err(GateError::NotReady.into()),
            Err(e) => {
                sent.unknown.push(tenant.clone());
                return Err(e.into());
            }
        }
    };
    // (job, record, holds, expiry, what storing the record makes of it)
    let mut new_rows: Vec<(usize, Reservation, Holds, DateTime<Utc>, Grant)> = Vec::new();
    // Jobs whose reservation the gate knows only as confirmed or finished,
    // with that state: the record answers them.
    let mut settled: HashMap<usize, String> = HashMap::new();
    for ((i, it), outcome) in to_gate.iter().zip(outcomes) {
        let j = &jobs[*i];
        let grant = match outcome {
            ReserveOutcome::Ok => Grant::Fresh,
            // Granted by another copy of this request, in this batch or in
            // one being written, or by a batch whose record failed and
            // whose give-back failed too. This batch owns the grant now
            // (the script says so): recorded here unless the record is
            // there by then; the gate holds exactly its lines.
            ReserveOutcome::Exists { state } if state == "active" => Grant::Recorded,
            // Confirmed or finished: recorded when it changed, and holding
            // nothing new. Storing it afresh would record holds the gate
            // does not keep.
            ReserveOutcome::Exists { state } => {
                settled.insert(*i, state);
                continue;
            }
            ReserveOutcome::Conflict => {
                answers[*i] = Some(Err(reused(&j.res.id)));
                continue;
            }
            ReserveOutcome::Short { short } => {
                let channel = j.res.channel.as_ref();
                let channel = channel.map(|c| format!("channels/{c}")).unwrap_or_default();
                answers[*i] = Some(Err(Error::Insufficient { short, channel }));
                continue;
            }
        };
        let expire = DateTime::from_timestamp_millis(it.expire_ms).unwrap_or(now);
        let r = new_reservation(&j.res, now, expire);
        let holds = j.res.gate_lines().iter().fold(Holds::new(), |mut h, l| {
            *h.entry(gate::hold_key(&l.sku, &l.node)).or_default() += l.q;
            h
        });
        new_rows.push((*i, r, holds, expire, grant));
    }
    let rows: Vec<NewRow> = new_rows
        .iter()
        .map(|(i, r, holds, expire, _)| NewRow {
            reservation: r,
            request_hash: &jobs[*i].res.request_hash,
            expire_time: *expire,
            holds,
        })
        .collect();
    let mut stored_now = repo::reservations::insert_many(tx, tenant, &rows, now).await?;
    let mut grants = vec![Grant::Old; jobs.len()];
    let mut unneeded = Vec::new();
    for (i, r, _, _, grant) in new_rows {
        if stored_now.remove(&r.reservation_id) {
            answers[i] = Some(Ok(r));
            grants[i] = grant;
        } else if grant == Grant::Fresh {
            // Granted, but the record has the id already: a repeat of a
            // reservation the gate no longer holds (released, expired,
            // consumed). The record answers; the grant goes back below.
            unneeded.push(i);
        }
    }
    // The record answers every job this batch did not store, before any
    // refusal: a repeat returns the first result whatever the stock or the
    // nodes are now. Looked up here rather than before the gate, where it
    // cost every new reservation a probe (about a tenth of a batch's
    // Postgres time: tools/bench/replica); a new reservation is never in it.
    let unstored: Vec<usize> = (0..jobs.len())
        .filter(|i| !matches!(answers[*i], Some(Ok(_))))
        .collect();
    if !unstored.is_empty() {
        let ids: Vec<String> = unstored.iter().map(|i| jobs[*i].res.id.clone()).collect();
        let stored = repo::reservations::existing(&mut *tx, tenant, &ids).await?;
        for i in unstored {
            let r = &jobs[i].res;
            match stored.get(&r.id) {
                Some((hash, existing)) if *hash == r.request_hash => {
                    answers[i] = Some(Ok(existing.clone()))
                }
                Some(_) => answers[i] = Some(Err(reused(&r.id))),
                // The gate still knows a reservation whose record the
                // retention deleted (a gate record kept past it): refused
                // rather than reserved again under the gate's old state.
                None if settled.contains_key(&i) => {
                    answers[i] = Some(Err(forgotten(&r.id, &settled[&i])))
                }
                // Granted or found in the gate, yet stored by neither this
                // batch nor another: cannot happen while inserts wait for
                // concurrent commits of the same id.
                None if answers[i].is_none() => {
                    answers[i] = Some(Err(Error::Internal(format!(
                        "reservation {} was neither stored nor found",
                        r.id
                    ))))
                }
                None => {}
            }
        }
    }
    for i in unneeded {
        let r = &jobs[i].res;
        if let Err(e) = gate
            .give_back(tenant, &r.id, &r.skus(), &sent.owner, now_ms())
            .await
        {
            // Left held until the next reconcile, which finds the gate
            // holding more than the record.
            tracing::warn!(error = %e, reservation = %r.id, "giving back a repeat's grant failed");
        }
    }
    Ok(answers
        .into_iter()
        .zip(grants)
        .map(|(a, g)| {
            (
                a.unwrap_or_else(|| Err(Error::Internal("unanswered reservation".into()))),
                g,
            )
        })
        .collect())
}

/// What a batch did for one answered reservation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// Nothing new: answered from the record, or refused.
    Old,
    /// Granted by this batch's script and recorded by it.
    Fresh,
    /// Granted earlier (a record that failed) and recorded by this batch.
    Recorded,
}

/// The nodes named among `ids` (empty ones name none) that `tenant` may
/// use, with whether each is enabled; no query when none is named.
async fn named_nodes(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    mut ids: Vec<String>,
) -> Result<HashMap<String, bool>> {
    ids.retain(|n| !n.is_empty());
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(repo::nodes::visible(&mut *tx, tenant, &ids).await?)
}

/// Items are never deleted, so a SKU seen once stays known: the hot path
/// asks Postgres only about SKUs this writer has not seen.
#[derive(Clone, Default)]
struct KnownItems(Arc<std::sync::Mutex<std::collections::HashSet<(Tenant, String)>>>);

async fn known_items(
    cache_of: &KnownItems,
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    skus: &[String],
) -> Result<std::collections::HashSet<String>> {
    let mut known = std::collections::HashSet::new();
    let mut ask = Vec::new();
    {
        let cache = cache_of.0.lock().unwrap_or_else(|p| p.into_inner());
        for s in skus {
            if cache.contains(&(tenant.clone(), s.clone())) {
                known.insert(s.clone());
            } else {
                ask.push(s.clone());
            }
        }
    }
    if !ask.is_empty() {
        let found = repo::items::existing(&mut *tx, tenant, &ask).await?;
        let mut cache = cache_of.0.lock().unwrap_or_else(|p| p.into_inner());
        for s in found.into_keys() {
            cache.insert((tenant.clone(), s.clone()));
            known.insert(s);
        }
    }
    Ok(known)
}

/// Refuses lines (`field[i]`: SKU and node) at a disabled node, as a
/// precondition (`NODE_DISABLED`: the node may be enabled again, and a
/// caller that planned by it plans again); before 2026-12-04 they were
/// field violations.
fn disabled_lines<'a>(
    field: &str,
    lines: impl Iterator<Item = (&'a str, &'a str)>,
    nodes: &HashMap<String, bool>,
) -> Result<()> {
    let at_disabled: Vec<(usize, &str)> = lines
        .enumerate()
        .filter(|(_, (_, node))| nodes.get(*node) == Some(&false))
        .map(|(i, (_, node))| (i, node))
        .collect();
    let Some((_, first)) = at_disabled.first() else {
        return Ok(());
    };
    let fields: Vec<String> = at_disabled
        .iter()
        .map(|(i, node)| format!("{field}[{i}].node_id: nodes/{node}"))
        .collect();
    Err(Error::precondition(
        "NODE_DISABLED",
        format!("nodes/{first}"),
        format!("disabled: {}", fields.join(", ")),
    ))
}

/// Violations for lines (`field[i]`: SKU and node) naming an unknown SKU
/// or an unknown node.
fn unknown_lines<'a>(
    field: &str,
    lines: impl Iterator<Item = (&'a str, &'a str)>,
    items: &std::collections::HashSet<String>,
    nodes: &HashMap<String, bool>,
) -> Violations {
    let mut v = Violations::new();
    for (i, (sku, node)) in lines.enumerate() {
        if !items.contains(sku) {
            v.add(
                format!("{field}[{i}].sku"),
                format!("items/{sku} not found"),
            );
        }
        match nodes.get(node) {
            _ if node.is_empty() => {}
            None => v.add(
                format!("{field}[{i}].node_id"),
                format!("nodes/{node} not found"),
            ),
            Some(_) => {}
        }
    }
    v
}

/// Refuses entries (their nodes, in order) at nodes outside the pool of a
/// channel's rule: units a channel took there would be sold from stock the
/// rule keeps from it, and its pool would look untouched. A precondition,
/// not bad input: the rule may change (and routing plans by the rule it
/// last read), so a caller plans again.
fn outside_pool<'a>(
    field: &str,
    rule: Option<&ChannelRule>,
    nodes: impl Iterator<Item = &'a str>,
) -> Result<()> {
    let Some(rule) = rule.filter(|r| !r.node_ids.is_empty()) else {
        return Ok(());
    };
    let outside: Vec<String> = nodes
        .enumerate()
        .filter(|(_, n)| !n.is_empty() && !rule.node_ids.iter().any(|p| p == n))
        .map(|(i, n)| format!("{field}[{i}].node_id: nodes/{n}"))
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    Err(Error::precondition(
        "OUTSIDE_CHANNEL_POOL",
        rule.channel.clone(),
        format!(
            "not in the pool of nodes of {}: {}",
            rule.channel,
            outside.join(", ")
        ),
    ))
}

/// The gate's view of a channel's allocation rule.
fn channel_limit(rule: &ChannelRule) -> ChannelLimit {
    ChannelLimit {
        pool: rule.node_ids.clone(),
        buffer_percent: match rule.buffer {
            Some(Buffer::BufferPercent(p)) => i64::from(p),
            _ => 0,
        },
        buffer_quantity: match rule.buffer {
            Some(Buffer::BufferQuantity(q)) => q,
            _ => 0,
        },
    }
}

impl ReserveItem {
    fn clone_item(&self) -> ReserveItem {
        ReserveItem {
            id: self.id.clone(),
            request_hash: self.request_hash.clone(),
            expire_ms: self.expire_ms,
            lines: self.lines.clone(),
            channel: self.channel.clone(),
        }
    }
}

fn reused(id: &str) -> Error {
    Violations::one(
        "reservation_id",
        format!("{id:?} was used for a different reservation"),
    )
    .into()
}

fn forgotten(id: &str, state: &str) -> Error {
    let name = format!("reservations/{id}");
    Error::precondition(
        "RESERVATION_FORGOTTEN",
        &name,
        format!("{name} is {state} and no longer kept; reserve under a new id"),
    )
}

fn new_reservation(r: &NewReservation, now: DateTime<Utc>, expire: DateTime<Utc>) -> Reservation {
    Reservation {
        name: format!("reservations/{}", r.id),
        reservation_id: r.id.clone(),
        state: ReservationState::Active as i32,
        lines: r.lines.clone(),
        reference: r.reference.clone(),
        channel: r
            .channel
            .as_ref()
            .map(|c| format!("channels/{c}"))
            .unwrap_or_default(),
        expire_time: Some(to_timestamp(expire)),
        create_time: Some(to_timestamp(now)),
        update_time: Some(to_timestamp(now)),
    }
}

/// What a change of a reservation names, checked at once: its request
/// id, the reservation and the entries (parsed by the caller).
fn change_target<'a>(
    request_id: &str,
    name: &'a str,
    entries: std::result::Result<Vec<Line>, Violations>,
) -> Result<(&'a str, Vec<Line>)> {
    let mut v = Violations::new();
    v.check("request_id", RequestId::parse(request_id));
    let id = v.check("name", parse_name(name, "reservations"));
    let entries = v.merge(entries);
    match (id, entries, v.is_empty()) {
        (Some(id), Some(entries), true) => Ok((id, entries)),
        _ => Err(v.into()),
    }
}

fn reservation_id<'a>(field: &str, name: &'a str) -> Result<&'a str> {
    parse_name(name, "reservations").map_err(|e| Violations::one(field, e).into())
}

pub async fn get(
    inv: &Inventory,
    tenant: &Tenant,
    req: GetReservationRequest,
) -> Result<GetReservationResponse> {
    let id = reservation_id("name", &req.name)?;
    let mut c = inv.pool.acquire().await?;
    let mut r = repo::reservations::get(&mut *c, tenant, id)
        .await?
        .ok_or_else(|| Error::not_found("reservation", req.name.clone()))?;
    super::lot_expiry::date_allocations(&mut c, tenant, std::slice::from_mut(&mut r)).await?;
    Ok(GetReservationResponse {
        reservation: Some(r),
    })
}

pub async fn list(
    inv: &Inventory,
    tenant: &Tenant,
    req: ListReservationsRequest,
) -> Result<ListReservationsResponse> {
    let mut v = Violations::new();
    let hash = oms_kernel::fingerprint(&ListReservationsRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let paging = Paging::<(DateTime<Utc>, String)>::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        (100, 1000),
        hash,
    );
    let mut states = Vec::new();
    for (i, s) in req.states.iter().enumerate() {
        match ReservationState::try_from(*s) {
            Ok(st) if st != ReservationState::Unspecified => {
                states.push(repo::reservations::state_db(st))
            }
            _ => v.add(format!("states[{i}]"), "unknown reservation state"),
        }
    }
    if !req.sku.is_empty() {
        v.check("sku", check_sku(&req.sku));
    }
    if !req.node_id.is_empty() {
        v.check("node_id", check_node_id(&req.node_id));
    }
    v.into_result(())?;
    let reference = (!req.reference.is_empty()).then_some(req.reference.as_str());
    let holding = repo::reservations::Holding {
        sku: (!req.sku.is_empty()).then_some(req.sku.as_str()),
        node: (!req.node_id.is_empty()).then_some(req.node_id.as_str()),
    };
    let rows = repo::reservations::list(
        &inv.pool,
        tenant,
        &states,
        reference,
        holding,
        paging.after.clone(),
        paging.fetch(),
    )
    .await?;
    let (rows, next_page_token) = paging.page(rows, |(t, r)| (*t, r.reservation_id.clone()));
    let mut reservations: Vec<Reservation> = rows.into_iter().map(|(_, r)| r).collect();
    let mut c = inv.pool.acquire().await?;
    super::lot_expiry::date_allocations(&mut c, tenant, &mut reservations).await?;
    Ok(ListReservationsResponse {
        reservations,
        next_page_token,
    })
}

/// A change asked of one reservation.
pub struct Change<'a> {
    pub op: Op,
    pub id: &'a str,
    pub entries: Vec<Line>,
    pub reason: &'a str,
    pub reference: &'a str,
}

pub async fn confirm(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: ConfirmReservationRequest,
) -> Result<ConfirmReservationResponse> {
    let entries = parse_entries(Entries::Allocations, &req.allocations);
    let (id, entries) = change_target(&req.request_id, &req.name, entries)?;
    let change = Change {
        op: Op::Confirm,
        id,
        entries,
        reason: "",
        reference: "",
    };
    let r = idempotent_change(
        inv,
        tenant,
        actor,
        &req.request_id,
        "ConfirmReservation",
        &req,
        &change,
    )
    .await?;
    Ok(ConfirmReservationResponse {
        reservation: Some(r),
    })
}

pub async fn release(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: ReleaseReservationRequest,
) -> Result<ReleaseReservationResponse> {
    let entries = at_most(
        parse_entries(Entries::Release, &req.lines),
        "reason",
        &req.reason,
        500,
    );
    let (id, entries) = change_target(&req.request_id, &req.name, entries)?;
    let change = Change {
        op: Op::Release,
        id,
        entries,
        reason: &req.reason,
        reference: "",
    };
    let r = idempotent_change(
        inv,
        tenant,
        actor,
        &req.request_id,
        "ReleaseReservation",
        &req,
        &change,
    )
    .await?;
    Ok(ReleaseReservationResponse {
        reservation: Some(r),
    })
}

pub async fn consume(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: ConsumeAllocationsRequest,
) -> Result<ConsumeAllocationsResponse> {
    let entries = parse_entries(Entries::Shipped, &req.shipped);
    let entries = at_most(entries, "reference", &req.reference, 200);
    let (id, entries) = change_target(&req.request_id, &req.name, entries)?;
    let change = Change {
        op: Op::Consume,
        id,
        entries,
        reason: "",
        reference: &req.reference,
    };
    let r = idempotent_change(
        inv,
        tenant,
        actor,
        &req.request_id,
        "ConsumeAllocations",
        &req,
        &change,
    )
    .await?;
    Ok(ConsumeAllocationsResponse {
        reservation: Some(r),
    })
}

pub async fn extend(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: ExtendReservationRequest,
) -> Result<ExtendReservationResponse> {
    let entries = at_most(
        parse_entries(Entries::Extension, &req.lines),
        "reason",
        &req.reason,
        500,
    );
    let (id, entries) = change_target(&req.request_id, &req.name, entries)?;
    let change = Change {
        op: Op::Extend,
        id,
        entries,
        reason: &req.reason,
        reference: "",
    };
    let r = idempotent_change(
        inv,
        tenant,
        actor,
        &req.request_id,
        "ExtendReservation",
        &req,
        &change,
    )
    .await?;
    Ok(ExtendReservationResponse {
        reservation: Some(r),
    })
}

/// `entries`, with a violation more when `text` (a reason, a reference,
/// kept with the record) is longer than `max` bytes.
fn at_most(
    entries: std::result::Result<Vec<Line>, Violations>,
    field: &str,
    text: &str,
    max: usize,
) -> std::result::Result<Vec<Line>, Violations> {
    if text.len() <= max {
        return entries;
    }
    let mut v = entries.err().unwrap_or_default();
    v.at_most(field, text, max);
    Err(v)
}

/// Checks an extension against the record and the catalog: a confirmed
/// reservation takes units at named nodes only (they are allocated at
/// once), SKUs and nodes must exist. Returns the channel's limit.
async fn extension_limit(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    r: &Reservation,
    state: ReservationState,
    entries: &[Line],
) -> Result<Option<ChannelLimit>> {
    let mut v = Violations::new();
    if state == ReservationState::Confirmed {
        for (i, e) in entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.node.is_empty())
        {
            v.add(
                format!("lines[{i}].node_id"),
                format!(
                    "is required: {} is confirmed, so added units are allocated at once ({})",
                    r.name, e.sku
                ),
            );
        }
    }
    let mut skus: Vec<String> = entries.iter().map(|e| e.sku.clone()).collect();
    skus.sort();
    skus.dedup();
    let items = repo::items::existing(&mut *tx, tenant, &skus)
        .await?
        .into_keys()
        .collect();
    let named = entries.iter().map(|e| e.node.clone()).collect();
    let nodes = named_nodes(tx, tenant, named).await?;
    let lines = || entries.iter().map(|e| (e.sku.as_str(), e.node.as_str()));
    v.0.extend(unknown_lines("lines", lines(), &items, &nodes).0);
    v.into_result(())?;
    disabled_lines("lines", lines(), &nodes)?;
    if r.channel.is_empty() {
        return Ok(None);
    }
    let rule = repo::rules::channel_rule(&mut *tx, tenant, &r.channel).await?;
    let nodes = entries.iter().map(|e| e.node.as_str());
    outside_pool("lines", rule.as_ref(), nodes)?;
    Ok(rule.as_ref().map(channel_limit))
}

async fn idempotent_change<Req: Message>(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    request_id: &str,
    method: &str,
    req: &Req,
    change: &Change<'_>,
) -> Result<Reservation> {
    // The stored answer is the reservation; the response types wrap it.
    inv.retrying(tenant, || async {
        let (mut tx, rid) = match inv
            .begin::<Req, Reservation>(tenant, request_id, method, req)
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Tx(tx, rid) => (tx, rid),
        };
        match apply_change(inv, &mut tx, tenant, actor, rid.as_str(), change).await? {
            Applied::Done(r) => inv.finish(tx, tenant, &rid, r).await,
            Applied::Refused(e) => {
                // Keep what was learnt (an expiry), not the claim.
                oms_runtime::idempotency::release(&mut tx, tenant, &rid).await?;
                super::commit(tx).await?;
                Err(e)
            }
        }
    })
    .await
}

/// Expires those of `ids` (one tenant's, read due by the sweep) that are
/// still active and due, in one transaction and one gate script: a flash
/// sale's abandoned carts come back a batch at a time, not a transaction
/// each. Each expires as a change that finds it due would expire it
/// (`record`). How many expired.
pub async fn expire_many(inv: &Inventory, tenant: &Tenant, ids: &[String]) -> Result<usize> {
    inv.retrying(tenant, || async {
        let mut tx = inv.pool.begin().await?;
        lock::shared(&mut tx, tenant).await?;
        let Some((now, mut due)) = repo::reservations::lock_due(&mut tx, tenant, ids).await?
        else {
            return Ok(0);
        };
        // Due by the database's clock (`now`), for the record and the gate
        // alike (the gate keeps the record's expiry): the gate expires
        // exactly these, so they are written first. What the database
        // refuses then fails the batch before the gate is changed, not
        // after (a gate changed for nothing is rebuilt).
        for (r, _) in &mut due {
            expire_lines(r);
            r.state = ReservationState::Expired as i32;
            r.update_time = Some(to_timestamp(now));
        }
        let mut freed: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for (k, units) in due.iter().flat_map(|(_, holds)| holds) {
            *freed.entry(gate::split_hold(k)).or_default() += units;
        }
        let records: Vec<&Reservation> = due.iter().map(|(r, _)| r).collect();
        repo::reservations::save_expired(&mut tx, tenant, &records, &freed, now).await?;
        let events = records
            .iter()
            .map(|r| (r.name.clone(), expired_event(r)))
            .collect();
        super::emit_many(&mut tx, tenant, "", events).await?;
        let known: Vec<(&str, &Holds)> = due
            .iter()
            .map(|(r, holds)| (r.reservation_id.as_str(), holds))
            .collect();
        let mark = super::changing_gate();
        let out = inv.gate.expire(tenant, &known, now.timestamp_millis()).await?;
        match out.status.as_str() {
            "OK" => {}
            // As for one reservation (`apply_change`): rebuild the gate
            // from the record, then try again.
            "DIVERGED" | "NOT_FOUND" => {
                mark.unchanged();
                if out.status == "DIVERGED" {
                    tracing::warn!(reservation = %out.id, "the gate and the record disagree on a reservation");
                }
                super::reconcile::invalidate(inv, tenant).await?;
                return Err(GateError::NotReady.into());
            }
            other => {
                mark.unchanged();
                return Err(GateError::Answer(serde::de::Error::custom(format!(
                    "gate status {other}"
                )))
                .into());
            }
        }
        if out.expired.len() != records.len() {
            // The gate changed some: the run's end drops it.
            return Err(GateError::Answer(serde::de::Error::custom(format!(
                "the gate expired {} of {} reservations due",
                out.expired.len(),
                records.len()
            )))
            .into());
        }
        super::give_back_later(inv, tenant, out.given_back(), out.epoch.clone()).await?;
        super::commit(tx).await?;
        Ok(records.len())
    })
    .await
}

/// An expired reservation's lines: each released whole.
fn expire_lines(r: &mut Reservation) {
    for l in &mut r.lines {
        l.quantity_released = l.quantity;
    }
}

fn expired_event(r: &Reservation) -> inventory_event::Kind {
    inventory_event::Kind::ReservationReleased(ReservationReleased {
        reservation: Some(r.clone()),
        released: vec![],
        reason: "expired".into(),
    })
}

enum Applied {
    Done(Reservation),
    /// Refused, but the transaction holds a state change worth keeping.
    Refused(Error),
}

async fn apply_change(
    inv: &Inventory,
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    actor: &str,
    request_id: &str,
    c: &Change<'_>,
) -> Result<Applied> {
    let name = format!("reservations/{}", c.id);
    let Some((mut r, consumed, holds)) = repo::reservations::lock(tx, tenant, c.id).await? else {
        return Err(Error::not_found("reservation", name));
    };
    let state = ReservationState::try_from(r.state).unwrap_or_default();
    if !matches!(
        state,
        ReservationState::Active | ReservationState::Confirmed
    ) {
        return Err(not_live(&name, state));
    }
    let mut skus: Vec<String> = r.lines.iter().map(|l| l.sku.clone()).collect();
    skus.sort();
    skus.dedup();
    if c.op == Op::Confirm && !r.channel.is_empty() {
        let rule = repo::rules::channel_rule(&mut *tx, tenant, &r.channel).await?;
        let nodes = c.entries.iter().map(|e| e.node.as_str());
        outside_pool("allocations", rule.as_ref(), nodes)?;
    }
    if c.op == Op::Consume {
        // Refused here, not by the shipment's movements after the gate
        // consumed the units (which would cost the tenant a rebuild).
        let items = repo::items::existing(&mut *tx, tenant, &skus).await?;
        movement::check_shipped(Entries::Shipped.field(), &c.entries, &items).into_result(())?;
    }
    let known = gate::Known {
        id: c.id,
        skus: &skus,
        state: repo::reservations::state_db(state),
        holds: &holds,
    };
    let mark = super::changing_gate();
    let out = if c.op == Op::Extend {
        let limit = extension_limit(tx, tenant, &r, state, &c.entries).await?;
        inv.gate
            .extend(tenant, &known, &c.entries, limit.as_ref(), now_ms())
            .await?
    } else {
        inv.gate
            .change(tenant, c.op, &known, &c.entries, now_ms())
            .await?
    };
    super::give_back_later(inv, tenant, out.given_back(), out.epoch.clone()).await?;
    let new_state = repo::reservations::state_from(&out.state);
    // Every answer but these is a refusal the script made before changing
    // anything (found expired on the way, it expired the reservation).
    let expired = out.status == "STATE" && new_state == ReservationState::Expired;
    if out.status != "OK" && !expired {
        mark.unchanged();
    }
    match out.status.as_str() {
        "OK" => {}
        "STATE" if expired => {
            // Found expired on the way: record that, refuse the change.
            let released = record(
                inv,
                tx,
                tenant,
                &mut r,
                &out.holds,
                consumed,
                new_state,
                c,
                request_id,
                actor,
                &BTreeMap::new(),
            )
            .await;
            released?;
            return Ok(Applied::Refused(Error::precondition(
                "RESERVATION_EXPIRED",
                name.clone(),
                format!("{name} expired"),
            )));
        }
        "STATE" => return Err(not_live(&name, new_state)),
        // The record is the truth; the gate disagrees with it: rebuild
        // from it, then try again. DIVERGED: the gate is ahead of the
        // record (a change of this reservation reached Redis and its
        // replica died before the commit; the caller's retry lands here).
        // NOT_FOUND: the record is live but Redis lost it.
        "DIVERGED" | "NOT_FOUND" => {
            if out.status == "DIVERGED" {
                tracing::warn!(reservation = %name, gate = %out.state, record = ?state, "the gate and the record disagree on a reservation");
            }
            super::reconcile::invalidate(inv, tenant).await?;
            return Err(GateError::NotReady.into());
        }
        "SHORT" => {
            let short: Vec<Short> = serde_json::from_value(out.detail).map_err(GateError::from)?;
            let channel = r.channel.clone();
            return Err(Error::Insufficient { short, channel });
        }
        "MISMATCH" => {
            let d = out.detail;
            return Err(Violations::one(
                "allocations",
                format!(
                    "must cover exactly what is reserved: {} of items/{} held {}, allocations give {}",
                    d["held"],
                    d["sku"].as_str().unwrap_or_default(),
                    place(d["node"].as_str().unwrap_or("")),
                    d["want"]
                ),
            )
            .into());
        }
        "TOO_MUCH" => {
            let d = &out.detail;
            let (reason, what) = if c.op == Op::Consume {
                ("CONSUME_EXCEEDS_ALLOCATED", "allocated")
            } else {
                ("RELEASE_EXCEEDS_HELD", "held")
            };
            return Err(Error::precondition(
                reason,
                name,
                format!(
                    "{} of items/{} {} {}; {} asked",
                    d["held"],
                    d["sku"].as_str().unwrap_or_default(),
                    what,
                    place(d["node"].as_str().unwrap_or("")),
                    d["want"]
                ),
            ));
        }
        other => {
            return Err(GateError::Answer(serde::de::Error::custom(format!(
                "gate status {other}"
            )))
            .into());
        }
    }
    let taken: BTreeMap<String, i64> =
        serde_json::from_value(out.detail.clone()).unwrap_or_default();
    let consumed = consumed || c.op == Op::Consume;
    record(
        inv, tx, tenant, &mut r, &out.holds, consumed, new_state, c, request_id, actor, &taken,
    )
    .await?;
    Ok(Applied::Done(r))
}

/// Where units are held, for people: a hold not yet at a node is held in
/// the network.
fn place(node: &str) -> String {
    if node.is_empty() {
        "in the network (no node yet)".into()
    } else {
        format!("at nodes/{node}")
    }
}

fn not_live(name: &str, state: ReservationState) -> Error {
    let s = repo::reservations::state_db(state);
    Error::precondition("RESERVATION_NOT_ACTIVE", name, format!("{name} is {s}"))
}

/// Writes a changed reservation: its document, holds, event, and for
/// shipments the ledger.
#[allow(clippy::too_many_arguments)]
async fn record(
    inv: &Inventory,
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    r: &mut Reservation,
    holds: &Holds,
    consumed: bool,
    state: ReservationState,
    c: &Change<'_>,
    request_id: &str,
    actor: &str,
    taken: &BTreeMap<String, i64>,
) -> Result<()> {
    let now = Utc::now();
    let mut moved: Vec<&Line> = Vec::new();
    match (c.op, state) {
        (_, ReservationState::Expired) => expire_lines(r),
        (Op::Confirm, _) => {
            for e in &c.entries {
                allocate(&mut r.lines, e);
            }
            super::lot_expiry::date_allocations(tx, tenant, std::slice::from_mut(r)).await?;
        }
        (Op::Release, _) => {
            // Each hold the gate took from is released on the lines it
            // belongs to: allocations at its node (confirmed), or lines of
            // its node, or of the network when it has none (active). A
            // line counts both as released: its quantity less what it
            // released is what it holds or allocated.
            for (k, t) in taken {
                let (sku, node) = gate::split_hold(k);
                let mut left = *t;
                for l in r.lines.iter_mut().filter(|l| l.sku == sku) {
                    for a in l.allocations.iter_mut().filter(|a| a.node_id == node) {
                        let x = left.min(a.quantity - a.quantity_consumed);
                        a.quantity -= x;
                        l.quantity_released += x;
                        left -= x;
                    }
                }
                for l in r
                    .lines
                    .iter_mut()
                    .filter(|l| l.sku == sku && l.node_id == node)
                {
                    let x = left.min(l.quantity - l.quantity_released);
                    l.quantity_released += x;
                    left -= x;
                }
            }
        }
        (Op::Consume, _) => {
            // Dated as of the shipment, before the units count as shipped:
            // an allocation shipped in full keeps that date (reads restate
            // it only while units are left to ship).
            super::lot_expiry::date_allocations(tx, tenant, std::slice::from_mut(r)).await?;
            for (k, t) in taken {
                let (sku, node) = gate::split_hold(k);
                let mut left = *t;
                for a in r
                    .lines
                    .iter_mut()
                    .flat_map(|l| l.allocations.iter_mut())
                    .filter(|a| a.sku == sku && a.node_id == node)
                {
                    let x = left.min(a.quantity - a.quantity_consumed);
                    a.quantity_consumed += x;
                    left -= x;
                }
            }
            // One shipment per entry, with its lot and serial numbers: the
            // gate took exactly what the entries name, per SKU and node.
            moved = c.entries.iter().collect();
        }
        (Op::Extend, _) => {
            for (k, q) in taken {
                let (sku, node) = gate::split_hold(k);
                extend_lines(r, sku, node, *q, state == ReservationState::Confirmed);
            }
        }
    }
    r.state = state as i32;
    if matches!(
        state,
        ReservationState::Confirmed | ReservationState::Released | ReservationState::Consumed
    ) {
        // It no longer expires; an expired one keeps the time it did.
        r.expire_time = None;
    }
    r.update_time = Some(to_timestamp(now));
    repo::reservations::save(tx, tenant, r, holds, consumed, now).await?;
    // Shipped units leave on-hand; what the node can promise is unchanged
    // (the allocation they leave held the same units) unless they leave an
    // expired lot (see `Origin::Shipment`).
    let lots: Vec<_> = moved
        .iter()
        .map(|e| (e.node.as_str(), e.sku.as_str(), e.lot.as_str()))
        .collect();
    repo::stock::lock_for_movements(tx, tenant, &lots).await?;
    for e in moved {
        let m = StockMovement {
            kind: MovementKind::Shipment as i32,
            node_id: e.node.clone(),
            sku: e.sku.clone(),
            lot: e.lot.clone(),
            serial_numbers: e.serials.clone(),
            quantity: -e.q,
            reference: if c.reference.is_empty() {
                r.name.clone()
            } else {
                c.reference.to_owned()
            },
            reason: "shipment of allocated units".into(),
            // One shipment: every line left at one moment.
            occur_time: Some(to_timestamp(now)),
            ..Default::default()
        };
        super::movements::apply(inv, tx, tenant, m, actor, request_id, Origin::Shipment).await?;
    }
    let kind = match (c.op, state) {
        (_, ReservationState::Expired) => expired_event(r),
        (Op::Confirm, _) => inventory_event::Kind::ReservationConfirmed(ReservationConfirmed {
            reservation: Some(r.clone()),
        }),
        (Op::Extend, _) => inventory_event::Kind::ReservationExtended(ReservationExtended {
            reservation: Some(r.clone()),
            added: as_allocations(taken),
            reason: c.reason.to_owned(),
        }),
        (Op::Consume, _) => inventory_event::Kind::AllocationsConsumed(AllocationsConsumed {
            reservation: Some(r.clone()),
            consumed: as_allocations(taken),
        }),
        _ => inventory_event::Kind::ReservationReleased(ReservationReleased {
            reservation: Some(r.clone()),
            released: as_allocations(taken),
            reason: c.reason.to_owned(),
        }),
    };
    emit(tx, tenant, &r.name, request_id, kind).await
}

/// Puts a confirmation's allocation on the lines of its SKU that hold its
/// units: lines reserved at its node first, then lines reserved in the
/// network, each up to what it holds unallocated, so that each line's
/// allocations add up to its quantity less what it released. (The gate
/// checked that the allocations cover the holds exactly; a remainder,
/// which that leaves none of, would go on the SKU's first line.)
fn allocate(lines: &mut [ReservationLine], e: &Line) {
    let mut left = e.q;
    for network in [false, true] {
        for l in lines
            .iter_mut()
            .filter(|l| l.sku == e.sku && l.node_id == if network { "" } else { e.node.as_str() })
        {
            let allocated: i64 = l.allocations.iter().map(|a| a.quantity).sum();
            let x = left.min(l.quantity - l.quantity_released - allocated);
            if x > 0 {
                add_allocation(l, &e.node, x);
                left -= x;
            }
        }
    }
    if let (true, Some(l)) = (left > 0, lines.iter_mut().find(|l| l.sku == e.sku)) {
        add_allocation(l, &e.node, left);
    }
}

/// `q` more units allocated at `node` on a line.
fn add_allocation(line: &mut ReservationLine, node: &str, q: i64) {
    match line.allocations.iter_mut().find(|a| a.node_id == node) {
        Some(a) => a.quantity += q,
        None => line.allocations.push(Allocation {
            sku: line.sku.clone(),
            node_id: node.to_owned(),
            quantity: q,
            ..Default::default()
        }),
    }
}

/// Adds `q` units of `sku` at `node` to a reservation's lines: to a
/// confirmed one as an allocation on the SKU's line, to an active one on
/// the line of that SKU and node.
fn extend_lines(r: &mut Reservation, sku: &str, node: &str, q: i64, allocated: bool) {
    let i = r
        .lines
        .iter()
        .position(|l| l.sku == sku && (allocated || l.node_id == node))
        .unwrap_or_else(|| {
            r.lines.push(ReservationLine {
                sku: sku.to_owned(),
                node_id: if allocated {
                    String::new()
                } else {
                    node.to_owned()
                },
                ..Default::default()
            });
            r.lines.len() - 1
        });
    let line = &mut r.lines[i];
    line.quantity += q;
    if allocated {
        add_allocation(line, node, q);
    }
}

fn as_allocations(taken: &BTreeMap<String, i64>) -> Vec<Allocation> {
    taken
        .iter()
        .map(|(k, q)| {
            let (sku, node) = gate::split_hold(k);
            Allocation {
                sku: sku.to_owned(),
                node_id: node.to_owned(),
                quantity: *q,
                ..Default::default()
            }
        })
        .collect()
}

/// Expires due reservations every `interval` until `shutdown`, takes lots
/// past their expiry date out of availability, rebuilds gates that lost a
/// give-back ([`super::reconcile::recover_give_backs`]), and deletes
/// reservations finished longer than `retention` ago and snapshot imports
/// nobody went on with for `imports_retention` (the idempotency retention:
/// after it, a repeat of the request is a new request anyway).
pub fn start_sweeper(
    inv: super::Shared,
    interval: std::time::Duration,
    retention: Option<std::time::Duration>,
    imports_retention: Option<std::time::Duration>,
) {
    let shutdown = inv.shutdown.clone();
    oms_runtime::periodic::every(interval, shutdown, move || {
        let inv = inv.clone();
        async move {
            expire_due(&inv).await;
            // What is still due now waits for the next sweep: alerted on
            // when it grows (expiries failing keep carts' units from sale).
            match repo::reservations::oldest_due(&inv.pool).await {
                Ok(lags) => inv.metrics.expiry_lag(&lags),
                Err(e) => tracing::warn!(error = %e, "the expiry sweep's lag is unknown"),
            }
            super::lot_expiry::expire_due_lots(&inv).await;
            super::reconcile::recover_give_backs(&inv).await;
            // Every sweep: with nothing old enough it is one probe of an
            // index, and a backlog (a first start with years of
            // reservations) goes a batch per sweep.
            if let Some(keep) = retention {
                purge_old("finished reservations", keep, |cutoff, n| {
                    repo::reservations::purge_finished(&inv.pool, cutoff, n)
                })
                .await;
            }
            if let Some(keep) = imports_retention {
                purge_old("abandoned snapshot imports", keep, |cutoff, n| {
                    repo::imports::purge_abandoned(&inv.pool, cutoff, n)
                })
                .await;
            }
        }
    });
}

/// Reservations deleted per sweep at most.
const PURGE_BATCH: i64 = 1000;

/// Due reservations read at a time.
const DUE_BATCH: i64 = 1000;
/// Reservations of one tenant expired in one transaction and one gate
/// script ([`expire_many`]) at most: one transaction each returned about
/// 1,300 carts a second (release build, `oms-bench expiry`), a flash
/// sale's 100,000 abandoned carts in over a minute.
const EXPIRE_BATCH: usize = 250;
/// Batches expired at once: at most 4, and half the pool's connections (5
/// of the default 10), so an expiry wave leaves the other half to callers
/// and the reservation writer.
fn expiring_at_once(pool: &sqlx::PgPool) -> usize {
    (pool.options().get_max_connections() as usize / 2).clamp(1, 4)
}

/// Expires every reservation due, a read at a time, until none is left or
/// a read expires none (the gate or the record failing: the next sweep
/// tries again).
async fn expire_due(inv: &Inventory) {
    use futures::StreamExt as _;
    while !inv.shutdown.is_cancelled() {
        let mut due = match repo::reservations::due(&inv.pool, DUE_BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "expiry sweep cannot read due reservations");
                return;
            }
        };
        let read = due.len();
        // Each replica in an order of its own, so that replicas sweeping at
        // once rarely lock the same batch (each skips the other's rows).
        due.rotate_left(rand::random_range(0..read.max(1)));
        let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tenant, id) in due {
            by_tenant.entry(tenant).or_default().push(id);
        }
        // Owned: the sweep's future must not borrow with lifetimes the
        // compiler cannot prove `Send` for.
        let batches: Vec<(String, Vec<String>)> = by_tenant
            .into_iter()
            .flat_map(|(tenant, ids)| {
                ids.chunks(EXPIRE_BATCH)
                    .map(|ids| (tenant.clone(), ids.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        // How many each batch expired, or why it failed.
        let outcomes: Vec<(usize, Option<(String, Error)>)> = futures::stream::iter(batches)
            .map(|(tenant, ids)| async move {
                let Ok(t) = Tenant::parse(&tenant) else {
                    return (0, None);
                };
                let (expired, failed) = expire_batch(inv, &t, &ids).await;
                inv.metrics.expired(&tenant, expired);
                (expired, failed.map(|e| (tenant, e)))
            })
            .buffer_unordered(expiring_at_once(&inv.pool))
            .collect()
            .await;
        let expired: usize = outcomes.iter().map(|(n, _)| n).sum();
        let failed: Vec<_> = outcomes.into_iter().filter_map(|(_, f)| f).collect();
        if let Some((tenant, e)) = failed.first() {
            tracing::warn!(error = %e, tenant = %tenant, failed = failed.len(), "expiries failed; retried next sweep");
        }
        // Another read only after a full one that went well: rows that
        // stay due (failing, or not yet due by this replica's clock) wait
        // for the next sweep.
        if read < DUE_BATCH as usize || !failed.is_empty() || expired == 0 {
            return;
        }
    }
}

/// Expires a batch ([`expire_many`]); should it fail for what may be one
/// reservation's fault, each of its reservations on its own, so that one
/// that cannot expire (its row refused by the database, say) keeps none of
/// the others from expiring. How many expired, and the first failure.
async fn expire_batch(inv: &Inventory, tenant: &Tenant, ids: &[String]) -> (usize, Option<Error>) {
    let e = match expire_many(inv, tenant, ids).await {
        Ok(n) => return (n, None),
        Err(e) if ids.len() == 1 || !one_reservations_fault(&e) => return (0, Some(e)),
        Err(e) => e,
    };
    tracing::warn!(error = %e, tenant = %tenant, reservations = ids.len(), "an expiry batch failed; its reservations expire one by one");
    let mut expired = 0;
    let mut failed = None;
    for id in ids {
        match expire_many(inv, tenant, std::slice::from_ref(id)).await {
            Ok(n) => expired += n,
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    (expired, failed)
}

/// Whether a failed batch may owe it to one of its reservations: the
/// database refused a row, or a record does not decode. A failing Redis
/// or Postgres connection is not: each of the batch's reservations would
/// meet it again, one after the other (250 timeouts in a row), so the
/// batch waits for the next sweep instead.
fn one_reservations_fault(e: &Error) -> bool {
    matches!(
        e,
        Error::Db(sqlx::Error::Database(_) | sqlx::Error::Decode(_))
    )
}

/// Deletes one batch of `what` older than `keep` with `purge` (given the
/// cutoff and the batch size); a failure is retried at the next sweep.
async fn purge_old<F, Fut>(what: &str, keep: std::time::Duration, purge: F)
where
    F: FnOnce(DateTime<Utc>, i64) -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<u64>>,
{
    let Some(cutoff) = oms_runtime::retention::before(keep) else {
        return;
    };
    match purge(cutoff, PURGE_BATCH).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, before = %cutoff, "{what} deleted"),
        Err(e) => tracing::warn!(error = %e, "deleting {what} failed; retried next sweep"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_or_unreadable_row_sends_a_batch_one_by_one() {
        let decode = sqlx::Error::Decode("not a reservation".into());
        assert!(one_reservations_fault(&Error::Db(decode)));
        for infra in [
            Error::Db(sqlx::Error::PoolTimedOut),
            Error::Gate(GateError::NotReady),
            Error::Gate(GateError::NotReplicated {
                acked: 0,
                wanted: 1,
            }),
            Error::Unavailable("redis".into()),
        ] {
            assert!(!one_reservations_fault(&infra), "{infra:?}");
        }
    }
}
