//! New orders. CreateOrder requests go through a group-commit writer: the
//! requests waiting are written in one transaction, each table touched by
//! one multi-row statement (claims with their answers, orders, history,
//! saga steps, events), so order intake is not bound by commit latency. A
//! batch that fails as a whole is written again one order at a time
//! ([`batch::together_or_alone`]).
use crate::domain::{NewOrder, OrderState};
use crate::error::{Error, Result};
use crate::repo::{self, history::Change, orders::Projection};
use crate::workers::saga::Saga;
use chrono::Utc;
use oms_kernel::{RequestId, Tenant, Violations};
use oms_proto::orders::{self as pb, CreateOrderRequest, CreateOrderResponse, OrderEvent};
use oms_runtime::{
    auth::Caller,
    batch::{self, Batcher},
    idempotency::{self, BatchClaim, Claim},
    outbox::{self, NewEvent, TraceContext},
    time::to_timestamp,
};
use prost::Message;
use sqlx::PgPool;
use std::collections::HashSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const METHOD: &str = "CreateOrder";
/// Orders per transaction at most; several writers so that one batch is
/// being built while another waits for its commit.
const MAX_BATCH: usize = 128;
const WRITERS: usize = 4;

/// A parsed CreateOrder request waiting to be written.
pub struct Job {
    tenant: Tenant,
    actor: String,
    request_id: RequestId,
    hash: Vec<u8>,
    new: NewOrder,
    trace: TraceContext,
}

/// Where new orders are created.
#[derive(Clone)]
pub struct Intake(Batcher<Job, Result<CreateOrderResponse>>);

impl Intake {
    pub fn start(pool: PgPool, saga: Saga, shutdown: CancellationToken) -> Self {
        Intake(Batcher::start(WRITERS, MAX_BATCH, shutdown, move |jobs| {
            let (pool, saga) = (pool.clone(), saga.clone());
            async move {
                let answers = write(&pool, jobs).await;
                // New orders have their first saga step due.
                if answers.iter().any(|a| a.is_ok()) {
                    saga.wake();
                }
                answers
            }
        }))
    }

    /// Validates a CreateOrder request and writes it (or answers a repeat
    /// of it with the first answer); its events carry `trace`.
    pub async fn create(
        &self,
        caller: &Caller,
        req: CreateOrderRequest,
        trace: TraceContext,
    ) -> Result<CreateOrderResponse> {
        let mut v = Violations::new();
        let request_id = v.check("request_id", RequestId::parse(&req.request_id));
        let new = match NewOrder::parse(req.order.clone()) {
            Ok(n) => Some(n),
            Err(e) => {
                v.0.extend(e.0);
                None
            }
        };
        let (Some(request_id), Some(new)) = (request_id, new) else {
            return Err(v.into());
        };
        let job = Job {
            tenant: caller.tenant.clone(),
            actor: caller.subject.clone(),
            request_id,
            hash: idempotency::request_hash(&req),
            new,
            trace,
        };
        // A writer that stopped answers like a closed pool: unavailable, retry.
        let created = self
            .0
            .submit(job)
            .await
            .map_err(|_| Error::Db(sqlx::Error::PoolClosed))??;
        tracing::info!(order = %created.order.as_ref().map_or("", |o| o.name.as_str()), "order created");
        Ok(created)
    }
}

/// Writes a batch and answers every job in order. Repeats of a request id
/// within the batch are written after it, where they find its answer.
async fn write(pool: &PgPool, jobs: Vec<Job>) -> Vec<Result<CreateOrderResponse>> {
    let mut seen = HashSet::new();
    let (firsts, repeats): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .enumerate()
        .partition(|(_, j)| seen.insert((j.tenant.clone(), j.request_id.clone())));
    let (first_at, firsts): (Vec<usize>, Vec<Job>) = firsts.into_iter().unzip();
    let mut answers: Vec<Option<Result<CreateOrderResponse>>> =
        (0..first_at.len() + repeats.len()).map(|_| None).collect();
    let written = batch::together_or_alone(&firsts, |jobs| write_batch(pool, jobs)).await;
    for (i, a) in first_at.into_iter().zip(written) {
        answers[i] = Some(a);
    }
    if !repeats.is_empty() {
        let (repeat_at, repeats): (Vec<usize>, Vec<Job>) = repeats.into_iter().unzip();
        let again = Box::pin(write(pool, repeats)).await;
        for (i, a) in repeat_at.into_iter().zip(again) {
            answers[i] = Some(a);
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(lost())))
        .collect()
}

fn lost() -> Error {
    Error::Db(sqlx::Error::Protocol(
        "an order batch lost an answer".into(),
    ))
}

/// Writes jobs with distinct request ids in one transaction: an answer per
/// job, or an error when the transaction as a whole failed.
async fn write_batch(pool: &PgPool, jobs: &[Job]) -> Result<Vec<Result<CreateOrderResponse>>> {
    let now = Utc::now();
    // Every job's order and answer are made up front: the answer is stored
    // with the claim (a repeat's are thrown away).
    let records: Vec<(Uuid, CreateOrderResponse)> = jobs
        .iter()
        .map(|j| {
            let id = Uuid::now_v7();
            let order = new_record(&j.new, id, &j.actor, now);
            (id, CreateOrderResponse { order: Some(order) })
        })
        .collect();
    let encoded: Vec<Vec<u8>> = records.iter().map(|(_, r)| r.encode_to_vec()).collect();
    let claims: Vec<BatchClaim<'_>> = jobs
        .iter()
        .zip(&encoded)
        .map(|(j, answer)| BatchClaim {
            tenant: &j.tenant,
            request_id: &j.request_id,
            method: METHOD,
            hash: &j.hash,
            answer,
        })
        .collect();
    let mut tx = pool.begin().await?;
    let claimed = idempotency::claim_many::<CreateOrderResponse>(&mut tx, &claims).await?;
    drop(claims);
    let mut answers: Vec<Option<Result<CreateOrderResponse>>> = Vec::with_capacity(jobs.len());
    // (job, new order, its id)
    let mut fresh: Vec<(usize, pb::Order, Uuid)> = Vec::new();
    for (i, (c, (id, record))) in claimed.into_iter().zip(records).enumerate() {
        answers.push(match c {
            Ok(Claim::Replay(r)) => Some(Ok(r)),
            Err(e) => Some(Err(e.into())),
            Ok(Claim::New) => {
                fresh.push((i, record.order.unwrap_or_default(), id));
                None
            }
        });
    }
    let projections: Vec<(&Tenant, Projection<'_>)> = fresh
        .iter()
        .map(|(i, order, id)| {
            let state = first_state(order);
            let p = Projection {
                order_id: *id,
                state,
                held_from: (state == OrderState::OnHold).then_some(OrderState::Created),
                promise_time: jobs[*i].new.promise_time,
                create_time: now,
                doc: order,
            };
            (&jobs[*i].tenant, p)
        })
        .collect();
    let existing = repo::orders::insert_many(&mut tx, &projections).await?;
    drop(projections);
    // A channel order already on record refuses its request, and gives its
    // claim back so that a corrected request can use the id.
    let mut refused = Vec::new();
    let mut created = Vec::new();
    for ((i, order, id), existing) in fresh.into_iter().zip(existing) {
        match existing {
            Some(other) => {
                refused.push((&jobs[i].tenant, &jobs[i].request_id));
                answers[i] = Some(Err(Error::DuplicateChannelOrder {
                    channel: order.channel,
                    channel_order_id: order.channel_order_id,
                    existing: format!("orders/{other}"),
                }));
            }
            None => created.push((i, order, id)),
        }
    }
    idempotency::release_many(&mut tx, &refused).await?;
    let changes: Vec<_> = created
        .iter()
        .map(|(i, order, id)| {
            let j = &jobs[*i];
            let c = Change {
                actor: &j.actor,
                kind: "OrderCreated",
                reason: "",
                from: None,
                to: Some(first_state(order)),
                request_id: j.request_id.as_str(),
            };
            (&j.tenant, *id, c)
        })
        .collect();
    repo::history::record_many(&mut tx, &changes).await?;
    let steps: Vec<(&Tenant, Uuid)> = created
        .iter()
        .map(|(i, _, id)| (&jobs[*i].tenant, *id))
        .collect();
    repo::saga::enqueue_many(&mut tx, &steps, repo::saga::RESERVE).await?;
    let events: Vec<NewEvent<'_>> = created
        .iter()
        .map(|(i, order, _)| NewEvent {
            tenant: &jobs[*i].tenant,
            event_type: "OrderCreated",
            subject: &order.name,
            request_id: jobs[*i].request_id.as_str(),
            payload: OrderEvent {
                meta: None,
                order: Some(order.clone()),
                kind: Some(pb::order_event::Kind::Created(pb::OrderCreated {})),
            }
            .encode_to_vec(),
        })
        .collect();
    let traced: Vec<_> = events
        .iter()
        .zip(&created)
        .map(|(e, (i, _, _))| (e, &jobs[*i].trace))
        .collect();
    outbox::append_traced(&mut tx, &traced).await?;
    drop(traced);
    drop(events);
    let responses: Vec<(usize, CreateOrderResponse)> = created
        .into_iter()
        .map(|(i, order, _)| (i, CreateOrderResponse { order: Some(order) }))
        .collect();
    tx.commit().await?;
    for (i, r) in responses {
        answers[i] = Some(Ok(r));
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(lost())))
        .collect())
}

/// The order of record for a new order: its name, first state and times.
/// The order as stored: created, or on hold when it came with holds (placed
/// by `actor` now; placement starts once the last is released).
fn new_record(new: &NewOrder, id: Uuid, actor: &str, now: chrono::DateTime<Utc>) -> pb::Order {
    let mut order = new.order.clone();
    order.name = format!("orders/{id}");
    order.order_id = id.to_string();
    order.state = first_state(&order).to_proto() as i32;
    // Output only: what a caller sent there is not kept.
    order.routing_decision.clear();
    order.cancel_requested = false;
    order.reservation = format!("reservations/{}", crate::workers::saga::reservation_id(id));
    for h in &mut order.holds {
        h.placed_by = actor.to_owned();
        h.place_time = Some(to_timestamp(now));
    }
    order.create_time = Some(to_timestamp(now));
    order.update_time = Some(to_timestamp(now));
    order.order_time = Some(to_timestamp(new.order_time.unwrap_or(now)));
    order.version = 1;
    order
}

/// A new order is created, or on hold when it comes with holds.
fn first_state(order: &pb::Order) -> OrderState {
    if order.holds.is_empty() {
        OrderState::Created
    } else {
        OrderState::OnHold
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use oms_proto::orders::{Order, OrderLine};

    fn job(tenant: &str, request_id: &str, channel_order_id: &str, qty: i64) -> Job {
        let req = CreateOrderRequest {
            request_id: request_id.into(),
            order: Some(Order {
                channel: "channels/web".into(),
                channel_order_id: channel_order_id.into(),
                currency_code: "EUR".into(),
                delivery_method: oms_proto::common::DeliveryMethod::Pickup as i32,
                pickup_node_id: "STORE-1".into(),
                lines: vec![OrderLine {
                    sku: "A".into(),
                    quantity: qty,
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        Job {
            tenant: Tenant::parse(tenant).unwrap(),
            actor: "test".into(),
            request_id: RequestId::parse(request_id).unwrap(),
            hash: idempotency::request_hash(&req),
            new: NewOrder::parse(req.order).unwrap(),
            trace: TraceContext::default(),
        }
    }

    fn name(a: &Result<CreateOrderResponse>) -> String {
        a.as_ref().unwrap().order.as_ref().unwrap().name.clone()
    }

    /// One batch holding every case a batch can meet answers each job as
    /// if it had been written alone.
    #[tokio::test]
    async fn a_batch_answers_each_request_as_if_written_alone() {
        let db = oms_testkit::TestDb::new().await;
        let pool = db.pool("orders", Some(&crate::MIGRATOR)).await;
        let earlier = write(&pool, vec![job("acme", "r-old", "c-old", 1)]).await;
        let old = name(&earlier[0]);

        let answers = write(
            &pool,
            vec![
                job("acme", "r1", "c1", 1),
                // The same request again in the batch: the same answer.
                job("acme", "r1", "c1", 1),
                // The same id with another body, in the batch and before it.
                job("acme", "r1", "c1", 5),
                job("acme", "r-old", "c-old", 9),
                // A repeat of a request answered before the batch.
                job("acme", "r-old", "c-old", 1),
                // Another request for a channel order of this batch and of before.
                job("acme", "r2", "c1", 1),
                job("acme", "r3", "c-old", 1),
                // Another tenant's order with the same ids.
                job("globex", "r1", "c1", 1),
            ],
        )
        .await;
        let first = name(&answers[0]);
        assert_eq!(name(&answers[1]), first);
        assert!(matches!(answers[2], Err(Error::Idempotency(_))));
        assert!(matches!(answers[3], Err(Error::Idempotency(_))));
        assert_eq!(name(&answers[4]), old);
        assert!(
            matches!(&answers[5], Err(Error::DuplicateChannelOrder { existing, .. }) if *existing == first)
        );
        assert!(
            matches!(&answers[6], Err(Error::DuplicateChannelOrder { existing, .. }) if *existing == old)
        );
        assert_ne!(name(&answers[7]), first);

        let counts: (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_history),
                    (SELECT count(*) FROM saga_steps), (SELECT count(*) FROM outbox)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(counts, (3, 3, 3, 3), "r-old, r1 and globex's r1 only");
        // A refused request gave its id back: corrected, it is a new order.
        let again = write(&pool, vec![job("acme", "r2", "c2", 1)]).await;
        assert!(again[0].is_ok());
    }
}
