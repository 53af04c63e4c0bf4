//! New reservations: a group-commit writer (many per Postgres transaction
//! and one gate script per tenant, so a hot SKU is not bound by commit
//! latency).
use super::lines::*;
use crate::domain::reservation::NewReservation;
use crate::error::{Error, Result};
use crate::gate::{self, Gate, GateError, Holds, ReserveItem, ReserveOutcome};
use crate::metrics::Api;
use crate::ops::{Inventory, now_ms};
use crate::repo::{self, lock, reservations::NewRow};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use oms_kernel::{Tenant, Violations};
use oms_proto::inventory::*;
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
                if let Err(e) =
                    crate::ops::reconcile::ensure_ready_with(pool, gate, &t, "missing").await
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
/// that, the sweep drops it ([`crate::ops::reconcile::recover_give_backs`]).
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
        crate::ops::drop_gate_or_sweep(pool, gate, t, why).await;
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
        let leave = gate::Leave {
            rule: rule.map(channel_limit),
            channel: (r.channel.as_ref())
                .map(|c| format!("channels/{c}"))
                .unwrap_or_default(),
            backorders_of: r.backorders_of.clone(),
        };
        answers.push(None);
        to_gate.push((
            i,
            ReserveItem {
                id: r.id.clone(),
                request_hash: r.request_hash.clone(),
                expire_ms: now.timestamp_millis() + r.ttl.as_millis() as i64,
                lines: r.gate_lines(),
                leave,
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

impl ReserveItem {
    fn clone_item(&self) -> ReserveItem {
        ReserveItem {
            id: self.id.clone(),
            request_hash: self.request_hash.clone(),
            expire_ms: self.expire_ms,
            lines: self.lines.clone(),
            leave: self.leave.clone(),
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
        backorders_of: r.backorders_of.clone(),
    }
}
