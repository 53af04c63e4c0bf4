//! The OrderService API: parses requests, runs them in one transaction with
//! their idempotency record, history and outbox event, and is the only
//! place errors become gRPC statuses.
use crate::changes::{Happened, record};
use crate::domain::stock_due::{self, Due};
use crate::domain::{OrderFilter, OrderState, lifecycle};
use crate::error::{Error, Result};
use crate::intake::Intake;
use crate::repo;
use crate::workers::saga::{self, Saga};
use crate::workers::{fulfillment_feed, stock_line};
use chrono::Utc;
use futures::StreamExt as _;
use oms_kernel::{Paging, RequestId, Violations, parse_name, parse_uuid_name};
use oms_proto::orders::{
    self as pb, CreateOrderRequest, CreateOrderResponse, GetOrderRequest, GetOrderResponse,
    ListOrderHistoryRequest, ListOrderHistoryResponse, ListOrdersRequest, ListOrdersResponse,
    OrderEvent, WatchOrderEventsRequest, WatchOrderEventsResponse, order_event,
    order_service_server::OrderService,
};
use oms_runtime::{
    auth::{self, Caller},
    idempotency::{self, Claim},
    outbox::{self, FeedWaker, TraceContext},
    status,
    time::to_timestamp,
};
use prost::Message;
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, codegen::BoxStream};
use uuid::Uuid;

const DOMAIN: &str = "orders.oms";
const MAX_BATCH_CREATE: usize = 1000;

pub struct OrderApi {
    pool: PgPool,
    waker: FeedWaker,
    shutdown: CancellationToken,
    saga: Saga,
    intake: Intake,
}

/// A custom method under way: its request claimed, its order locked.
struct Mutation {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    rid: RequestId,
    id: Uuid,
    /// The state before the change.
    from: OrderState,
    order: pb::Order,
    held_from: Option<OrderState>,
}

impl Mutation {
    /// Refuses to change the order's lines while its placement is in
    /// doubt: what inventory confirmed, or the work at the node, keeps the
    /// lines as they are, and the step's next attempt must send the same
    /// request. Asked only by the changes that touch lines: the others
    /// read no mark.
    async fn lines_may_change(&mut self, tenant: &oms_kernel::Tenant) -> Result<()> {
        let placed = self.held_from.unwrap_or(self.from);
        if !saga::placing(placed)
            || !repo::saga::exists(&mut self.tx, tenant, self.id, repo::saga::IN_DOUBT).await?
        {
            return Ok(());
        }
        let what = match placed {
            OrderState::Routed => "released to its nodes",
            OrderState::Reserved => "confirmed at its nodes",
            _ => "reserved",
        };
        Err(Error::Refused(lifecycle::Refused {
            reason: "PLACEMENT_IN_DOUBT",
            message: format!(
                "{} is being {what}, and an earlier attempt may have gone through with its \
                 lines as they are; they can no longer change",
                self.order.name
            ),
        }))
    }
}

enum Started {
    /// The request was answered before: its answer.
    Replay(pb::Order),
    Locked(Mutation),
}

/// What a custom method did to an order.
struct Outcome {
    happened: Happened,
    /// Saga steps to enqueue: (step, payload).
    steps: Vec<(String, Vec<u8>)>,
}

impl OrderApi {
    pub fn new(pool: PgPool, waker: FeedWaker, shutdown: CancellationToken, saga: Saga) -> Self {
        let intake = Intake::start(pool.clone(), saga.clone(), shutdown.clone());
        Self {
            pool,
            waker,
            shutdown,
            saga,
            intake,
        }
    }

    /// Runs a custom method: claims the request id, locks the order, lets
    /// `apply` change it under the lifecycle rules, records the change and
    /// its saga steps, and answers with the order. One that `changes_lines`
    /// is refused while the order's release is in doubt.
    #[allow(clippy::too_many_arguments)]
    async fn mutate<Req: Message>(
        &self,
        caller: &Caller,
        request_id: &str,
        method: &str,
        req: &Req,
        name: &str,
        changes_lines: bool,
        apply: impl FnOnce(&mut pb::Order, &mut Option<OrderState>, Uuid) -> Result<Outcome>,
    ) -> Result<pb::Order> {
        let mut m = match self.begin(caller, request_id, method, req, name).await? {
            Started::Replay(o) => return Ok(o),
            Started::Locked(m) => m,
        };
        if changes_lines {
            m.lines_may_change(&caller.tenant).await?;
        }
        let outcome = apply(&mut m.order, &mut m.held_from, m.id)?;
        self.commit(caller, m, outcome).await
    }

    /// Claims the request id of a custom method and locks its order.
    async fn begin<Req: Message>(
        &self,
        caller: &Caller,
        request_id: &str,
        method: &str,
        req: &Req,
        name: &str,
    ) -> Result<Started> {
        let (rid, id) = call_ids(request_id, name, Violations::new())?;
        let tenant = &caller.tenant;
        let mut tx = self.pool.begin().await?;
        if let Claim::Replay(o) =
            idempotency::claim::<Req, pb::Order>(&mut tx, tenant, &rid, method, req).await?
        {
            return Ok(Started::Replay(o));
        }
        let Some((order, held_from)) = repo::orders::lock(&mut tx, tenant, id).await? else {
            return Err(Error::NotFound(name.to_owned()));
        };
        let from = lifecycle::state(&order);
        Ok(Started::Locked(Mutation {
            tx,
            rid,
            id,
            from,
            order,
            held_from,
        }))
    }

    /// Records a custom method's change with its saga steps and answer.
    async fn commit(&self, caller: &Caller, m: Mutation, outcome: Outcome) -> Result<pb::Order> {
        let Mutation {
            mut tx,
            rid,
            id,
            from,
            mut order,
            held_from,
            ..
        } = m;
        let tenant = &caller.tenant;
        record(
            &mut tx,
            tenant,
            id,
            &mut order,
            held_from,
            from,
            &caller.subject,
            rid.as_str(),
            outcome.happened,
        )
        .await?;
        let wake = !outcome.steps.is_empty();
        for (step, payload) in &outcome.steps {
            repo::saga::enqueue(&mut tx, tenant, id, step, payload).await?;
        }
        idempotency::complete(&mut tx, tenant, &rid, &order).await?;
        tx.commit().await?;
        if wake {
            self.saga.wake();
        }
        Ok(order)
    }
}

/// The paging of a backorder list (pages of 100 unless asked, at most
/// 1,000) bound to its `filters`, once the request's other violations `v`
/// are none.
fn backorder_paging<K: serde::Serialize + serde::de::DeserializeOwned>(
    mut v: Violations,
    (page_size, page_token): (i32, &str),
    filters: &impl prost::Message,
) -> std::result::Result<Paging<K>, Status> {
    let hash = oms_kernel::fingerprint(filters);
    let paging = Paging::parse(&mut v, page_size, page_token, (100, 1000), hash);
    if !v.is_empty() {
        return Err(to_status(v.into()));
    }
    Ok(paging)
}

fn order_id(field: &str, name: &str) -> Result<Uuid> {
    parse_uuid_name(name, "orders", "an order").map_err(|e| Violations::one(field, e).into())
}

fn to_status(e: Error) -> Status {
    match e {
        Error::Invalid(v) => status::invalid_argument(DOMAIN, &v),
        Error::NotFound(name) => status::not_found(DOMAIN, "order", &name),
        Error::DuplicateChannelOrder { existing, .. } => {
            status::already_exists(DOMAIN, "CHANNEL_ORDER_EXISTS", &existing)
        }
        Error::Refused(r) => status::failed_precondition(DOMAIN, r.reason, "order", &r.message),
        Error::Idempotency(e) => e.into_status(DOMAIN),
        Error::Db(e) => status::from_db(DOMAIN, &e),
        Error::Inventory(st) => match st.code() {
            // Short stock, an expired reservation: inventory's own answer,
            // with its details.
            Code::FailedPrecondition => st,
            Code::InvalidArgument | Code::NotFound => status::with_reason(
                Code::FailedPrecondition,
                DOMAIN,
                "INVENTORY_REFUSED",
                format!("inventory refused the change: {}", st.message()),
            ),
            _ => status::with_reason(
                Code::Unavailable,
                DOMAIN,
                "DEPENDENCY_UNAVAILABLE",
                format!(
                    "inventory did not answer ({}); retry with the same request_id",
                    st.message()
                ),
            ),
        },
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(
        &self,
        req: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let caller = auth::caller(&req)?;
        self.intake
            .create(&caller, req.into_inner(), TraceContext::current())
            .await
            .map(Response::new)
            .map_err(to_status)
    }

    async fn batch_create_orders(
        &self,
        req: Request<pb::BatchCreateOrdersRequest>,
    ) -> Result<Response<pb::BatchCreateOrdersResponse>, Status> {
        let caller = auth::caller(&req)?;
        let pb::BatchCreateOrdersRequest { requests, traces } = req.into_inner();
        if requests.len() > MAX_BATCH_CREATE {
            return Err(to_status(
                Violations::one(
                    "requests",
                    format!("at most {MAX_BATCH_CREATE} orders per call"),
                )
                .into(),
            ));
        }
        if traces.len() > requests.len() {
            return Err(to_status(
                Violations::one("traces", "at most one per request").into(),
            ));
        }
        let call_trace = TraceContext::current();
        // Submitted together, they share the intake's transactions; each
        // in its own trace when it names one.
        let created = futures::future::join_all(requests.into_iter().enumerate().map(|(i, r)| {
            let trace = traces.get(i).map_or(Ok(None), |t| {
                TraceContext::named(&t.traceparent, &t.tracestate).map_err(|e| {
                    Error::from(Violations::one(format!("traces[{i}].traceparent"), e))
                })
            });
            let call_trace = call_trace.clone();
            let caller = &caller;
            async move {
                self.intake
                    .create(caller, r, trace?.unwrap_or(call_trace))
                    .await
            }
        }))
        .await;
        let results = created
            .into_iter()
            .map(|r| match r {
                Ok(r) => pb::BatchCreateOrderResult {
                    status: Some(status::to_rpc(None)),
                    order: r.order,
                },
                Err(e) => pb::BatchCreateOrderResult {
                    status: Some(status::to_rpc(Some(&to_status(e)))),
                    order: None,
                },
            })
            .collect();
        Ok(Response::new(pb::BatchCreateOrdersResponse { results }))
    }

    async fn get_order(
        &self,
        req: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let caller = auth::caller(&req)?;
        let name = req.into_inner().name;
        let id = order_id("name", &name).map_err(to_status)?;
        match repo::orders::get(&self.pool, &caller.tenant, id).await {
            Ok(Some(order)) => Ok(Response::new(GetOrderResponse { order: Some(order) })),
            Ok(None) => Err(to_status(Error::NotFound(name))),
            Err(e) => Err(to_status(e.into())),
        }
    }

    async fn list_orders(
        &self,
        req: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let caller = auth::caller(&req)?;
        let filter = OrderFilter::parse(req.get_ref()).map_err(|v| to_status(v.into()))?;
        let (orders, last) = repo::orders::list(&self.pool, &caller.tenant, &filter)
            .await
            .map_err(|e| to_status(e.into()))?;
        Ok(Response::new(ListOrdersResponse {
            orders,
            next_page_token: last.map(|l| filter.next_page_token(l)).unwrap_or_default(),
        }))
    }

    async fn list_order_history(
        &self,
        req: Request<ListOrderHistoryRequest>,
    ) -> Result<Response<ListOrderHistoryResponse>, Status> {
        let caller = auth::caller(&req)?;
        let req = req.into_inner();
        let mut v = Violations::new();
        let id = v.check(
            "name",
            order_id("name", &req.name).map_err(|_| "must look like orders/{id}"),
        );
        let paging =
            oms_kernel::Paging::<i64>::parse(&mut v, req.page_size, &req.page_token, (100, 500), 0);
        let Some(id) = id else {
            return Err(to_status(v.into()));
        };
        if !v.is_empty() {
            return Err(to_status(v.into()));
        }
        let tenant = &caller.tenant;
        let exists = repo::orders::get(&self.pool, tenant, id)
            .await
            .map_err(|e| to_status(e.into()))?;
        if exists.is_none() {
            return Err(to_status(Error::NotFound(req.name)));
        }
        let rows = repo::history::list(
            &self.pool,
            tenant,
            id,
            paging.after.unwrap_or(0),
            paging.fetch(),
        )
        .await
        .map_err(|e| to_status(e.into()))?;
        let (rows, next_page_token) = paging.page(rows, |r| r.seq);
        let state = |s: Option<OrderState>| s.map_or(0, |s| s.to_proto() as i32);
        let changes = rows
            .into_iter()
            .map(|r| pb::OrderChange {
                change_time: Some(to_timestamp(r.change_time)),
                actor: r.actor,
                kind: r.kind,
                reason: r.reason,
                from_state: state(r.from_state),
                to_state: state(r.to_state),
                request_id: r.request_id,
            })
            .collect();
        Ok(Response::new(ListOrderHistoryResponse {
            changes,
            next_page_token,
        }))
    }

    async fn watch_order_events(
        &self,
        req: Request<WatchOrderEventsRequest>,
    ) -> Result<Response<BoxStream<WatchOrderEventsResponse>>, Status> {
        let caller = auth::caller(&req)?;
        let feed = outbox::watch(
            self.pool.clone(),
            caller.tenant,
            &req.get_ref().after_cursor,
            self.waker.clone(),
            self.shutdown.clone(),
            DOMAIN,
        )?
        .map(|e| {
            e.map(|(mut event, meta): (OrderEvent, _)| {
                event.meta = Some(meta);
                WatchOrderEventsResponse { event: Some(event) }
            })
        });
        Ok(Response::new(Box::pin(feed)))
    }
    async fn place_hold(
        &self,
        req: Request<pb::PlaceHoldRequest>,
    ) -> Result<Response<pb::PlaceHoldResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let kind = v
            .check("type", lifecycle::hold_type(r.r#type))
            .unwrap_or_default();
        v.at_most("reason", &r.reason, lifecycle::MAX_REASON);
        call_ids(&r.request_id, &r.name, v).map_err(to_status)?;
        let hold = pb::Hold {
            r#type: kind as i32,
            reason: r.reason.clone(),
            placed_by: caller.subject.clone(),
            place_time: Some(to_timestamp(Utc::now())),
        };
        self.mutate(
            &caller,
            &r.request_id,
            "PlaceHold",
            &r,
            &r.name,
            false,
            |o, held_from, _| {
                let mut steps = vec![];
                if let Some(from) =
                    lifecycle::place_hold(o, hold.clone()).map_err(Error::Refused)?
                {
                    *held_from = Some(from);
                    // Its reservation may expire unconfirmed while held.
                    if from == OrderState::Reserved {
                        steps.push((crate::repo::saga::HELD_EXPIRY.to_owned(), vec![]));
                    }
                }
                Ok(Outcome {
                    happened: Happened {
                        kind: order_event::Kind::HoldPlaced(pb::OrderHoldPlaced {
                            hold: Some(hold),
                        }),
                        reason: r.reason.clone(),
                    },
                    steps,
                })
            },
        )
        .await
        .map(|o| Response::new(pb::PlaceHoldResponse { order: Some(o) }))
        .map_err(to_status)
    }

    async fn release_hold(
        &self,
        req: Request<pb::ReleaseHoldRequest>,
    ) -> Result<Response<pb::ReleaseHoldResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let kind = v
            .check("type", lifecycle::hold_type(r.r#type))
            .unwrap_or_default();
        v.at_most("reason", &r.reason, lifecycle::MAX_REASON);
        call_ids(&r.request_id, &r.name, v).map_err(to_status)?;
        self.mutate(
            &caller,
            &r.request_id,
            "ReleaseHold",
            &r,
            &r.name,
            false,
            |o, held_from, _| {
                let back_to = held_from.unwrap_or(OrderState::Created);
                let resumed = lifecycle::release_hold(o, kind, back_to).map_err(Error::Refused)?;
                let mut steps = vec![];
                if resumed {
                    *held_from = None;
                    // Placement resumes where it stopped.
                    if matches!(back_to, OrderState::Created | OrderState::Backordered) {
                        steps.push((crate::repo::saga::RESERVE.to_owned(), vec![]));
                    }
                    if back_to == OrderState::Reserved {
                        steps.push(crate::workers::saga::route_step());
                        // Its reservation's watch, made due, ends now
                        // (the order is no longer held) rather than
                        // lingering until the reservation's expiry.
                        steps.push((crate::repo::saga::HELD_EXPIRY.to_owned(), vec![]));
                    }
                    // A fulfil step that found the order held ended; the
                    // order would stay ROUTED.
                    if back_to == OrderState::Routed {
                        steps.push((crate::repo::saga::FULFIL.to_owned(), vec![]));
                    }
                } else if lifecycle::awaits_payment_only(o)
                    && matches!(back_to, OrderState::Created | OrderState::Backordered)
                {
                    // Only its payment is awaited now, which keeps it from
                    // its warehouse, not from its stock: it reserves (the
                    // other hold stopped its placement).
                    steps.push((crate::repo::saga::RESERVE.to_owned(), vec![]));
                }
                Ok(Outcome {
                    happened: Happened {
                        kind: order_event::Kind::HoldReleased(pb::OrderHoldReleased {
                            r#type: kind as i32,
                            reason: r.reason.clone(),
                        }),
                        reason: r.reason.clone(),
                    },
                    steps,
                })
            },
        )
        .await
        .map(|o| Response::new(pb::ReleaseHoldResponse { order: Some(o) }))
        .map_err(to_status)
    }

    async fn cancel_order(
        &self,
        req: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.at_most("reason", &r.reason, lifecycle::MAX_REASON);
        call_ids(&r.request_id, &r.name, v).map_err(to_status)?;
        self.cancel(&caller, &r)
            .await
            .map(|o| Response::new(pb::CancelOrderResponse { order: Some(o) }))
            .map_err(to_status)
    }

    async fn cancel_order_lines(
        &self,
        req: Request<pb::CancelOrderLinesRequest>,
    ) -> Result<Response<pb::CancelOrderLinesResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        if r.lines.is_empty() {
            v.add("lines", "name at least one line");
        }
        for (i, l) in r.lines.iter().enumerate() {
            if l.quantity <= 0 {
                v.add(format!("lines[{i}].quantity"), "must be positive");
            }
        }
        v.at_most("reason", &r.reason, lifecycle::MAX_REASON);
        call_ids(&r.request_id, &r.name, v).map_err(to_status)?;
        let key = r.request_id.clone();
        self.mutate(
            &caller,
            &r.request_id,
            "CancelOrderLines",
            &r,
            &r.name,
            true,
            |o, held_from, id| {
                let before = lifecycle::state(o);
                let reserved = matches!(before, OrderState::Reserved | OrderState::Routed)
                    || matches!(held_from, Some(OrderState::Reserved | OrderState::Routed));
                let cancelled = lifecycle::cancel_lines(o, &r.lines).map_err(Error::Refused)?;
                let mut steps = vec![];
                if lifecycle::state(o) == OrderState::Cancelled {
                    *held_from = None;
                    steps.push(saga::unplan_all_step());
                } else if matches!(before, OrderState::Created | OrderState::Backordered) {
                    // Placement looks again with what is left, as after an
                    // edit: a backordered order whose short line went may
                    // reserve the rest now (before, it waited for its
                    // backoff, up to 5 minutes, or for stock of the SKU it
                    // no longer wanted).
                    steps.push((crate::repo::saga::RESERVE.to_owned(), vec![]));
                }
                if reserved {
                    let release = saga::release_request(
                        &saga::reservation_name(o),
                        id,
                        &key,
                        &cancelled,
                        "lines cancelled",
                    )
                    .encode_to_vec();
                    steps.push((format!("{}{key}", crate::repo::saga::RELEASE), release));
                }
                Ok(Outcome {
                    happened: Happened {
                        kind: order_event::Kind::LinesCancelled(pb::OrderLinesCancelled {
                            lines: r.lines.clone(),
                            reason: r.reason.clone(),
                        }),
                        reason: r.reason.clone(),
                    },
                    steps,
                })
            },
        )
        .await
        .map(|o| Response::new(pb::CancelOrderLinesResponse { order: Some(o) }))
        .map_err(to_status)
    }

    async fn count_orders(
        &self,
        req: Request<pb::CountOrdersRequest>,
    ) -> Result<Response<pb::CountOrdersResponse>, Status> {
        let caller = auth::caller(&req)?;
        let channel = req.into_inner().channel;
        if !channel.is_empty() {
            parse_name(&channel, "channels")
                .map_err(|e| to_status(Violations::one("channel", e).into()))?;
        }
        let rows = repo::orders::counts(
            &self.pool,
            &caller.tenant,
            (!channel.is_empty()).then_some(channel.as_str()),
        )
        .await
        .map_err(|e| to_status(e.into()))?;
        let total = rows.iter().map(|(_, n)| n).sum();
        let mut counts: Vec<pb::StateCount> = rows
            .into_iter()
            .map(|(s, count)| pb::StateCount {
                state: s.to_proto() as i32,
                count,
            })
            .collect();
        counts.sort_by_key(|c| c.state);
        Ok(Response::new(pb::CountOrdersResponse { counts, total }))
    }
    async fn list_backorder_queue(
        &self,
        req: Request<pb::ListBackorderQueueRequest>,
    ) -> Result<Response<pb::ListBackorderQueueResponse>, Status> {
        let caller = auth::caller(&req)?;
        let req = req.into_inner();
        let mut v = Violations::new();
        v.check("sku", oms_kernel::check_sku(&req.sku));
        let order = match req.order.as_str() {
            "" => None,
            name => v.check("order", parse_uuid_name(name, "orders", "an order")),
        };
        let sku = req.sku.clone();
        let filters = pb::ListBackorderQueueRequest {
            sku: sku.clone(),
            order: req.order.clone(),
            ..Default::default()
        };
        // A page ends at an order's turn.
        let paging: Paging<repo::stock_waits::Turn> =
            backorder_paging(v, (req.page_size, &req.page_token), &filters)?;
        let rows = repo::stock_waits::queue(
            &self.pool,
            &caller.tenant,
            (&sku, order),
            paging.after,
            paging.fetch(),
        )
        .await
        .map_err(|e| to_status(e.into()))?;
        let (rows, next_page_token) = paging.page(rows, |r| (r.since, r.order_id));
        // What is available and on the way where each order takes its
        // stock from (its channel's share, or the network).
        let channels: BTreeSet<&str> = rows.iter().map(|r| r.channel.as_str()).collect();
        let mut stock = HashMap::new();
        for channel in channels {
            let read = stock_line::before_own_backorders(
                &self.saga.peers,
                &caller.tenant,
                channel,
                vec![sku.clone()],
            );
            let figure = read
                .await
                .map_err(|e| status::unavailable(DOMAIN, "inventory (when stock is due)", &e))?;
            stock.insert(
                channel.to_owned(),
                figure.into_iter().next().unwrap_or_default(),
            );
        }
        let entries = rows
            .into_iter()
            .map(|r| {
                let a = &stock[&r.channel];
                let due = stock_due::due(a.available, &a.arrivals, r.units_ahead, r.units);
                pb::BackorderQueueEntry {
                    order: format!("orders/{}", r.order_id),
                    units: r.units,
                    create_time: Some(to_timestamp(r.since)),
                    orders_ahead: r.orders_ahead,
                    units_ahead: r.units_ahead,
                    covered_now: due == Due::Now,
                    stock_due_time: match due {
                        Due::At(t) => Some(t),
                        _ => None,
                    },
                    channel: r.channel,
                }
            })
            .collect();
        Ok(Response::new(pb::ListBackorderQueueResponse {
            entries,
            next_page_token,
        }))
    }

    async fn list_backorder_demand(
        &self,
        req: Request<pb::ListBackorderDemandRequest>,
    ) -> Result<Response<pb::ListBackorderDemandResponse>, Status> {
        let caller = auth::caller(&req)?;
        let req = req.into_inner();
        let mut v = Violations::new();
        let skus = oms_kernel::parse_skus(&mut v, "skus", &req.skus, (false, 1000));
        let filters = pb::ListBackorderDemandRequest {
            skus: skus.clone(),
            ..Default::default()
        };
        let paging: Paging<String> =
            backorder_paging(v, (req.page_size, &req.page_token), &filters)?;
        let skus = (!skus.is_empty()).then_some(skus.as_slice());
        let rows = repo::stock_waits::demand(
            &self.pool,
            &caller.tenant,
            skus,
            paging.after.as_deref(),
            paging.fetch(),
        )
        .await
        .map_err(|e| to_status(e.into()))?;
        let (rows, next_page_token) = paging.page(rows, |r| r.0.clone());
        let demand = rows
            .into_iter()
            .map(|(sku, orders, units, oldest)| pb::BackorderDemand {
                sku,
                orders,
                units,
                oldest_order_time: Some(to_timestamp(oldest)),
            })
            .collect();
        Ok(Response::new(pb::ListBackorderDemandResponse {
            demand,
            next_page_token,
        }))
    }
    async fn update_order(
        &self,
        req: Request<pb::UpdateOrderRequest>,
    ) -> Result<Response<pb::UpdateOrderResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.at_most("reason", &r.reason, lifecycle::MAX_REASON);
        let Some(patch) = r.order.clone() else {
            v.check("request_id", RequestId::parse(&r.request_id));
            v.add("order", "is required");
            return Err(to_status(v.into()));
        };
        call_ids(&r.request_id, &patch.name, v).map_err(to_status)?;
        let paths = r
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        let reason = r.reason.clone();
        self.mutate(
            &caller,
            &r.request_id,
            "UpdateOrder",
            &r,
            &patch.name,
            false,
            |o, _, _| {
                lifecycle::update(o, &patch, &paths).map_err(|e| match e {
                    lifecycle::UpdateError::Invalid(v) => Error::Invalid(v),
                    lifecycle::UpdateError::Refused(r) => Error::Refused(r),
                })?;
                Ok(Outcome {
                    happened: Happened {
                        kind: order_event::Kind::Updated(pb::OrderUpdated {
                            paths: paths.clone(),
                            reason: reason.clone(),
                        }),
                        reason: reason.clone(),
                    },
                    steps: vec![],
                })
            },
        )
        .await
        .map(|o| Response::new(pb::UpdateOrderResponse { order: Some(o) }))
        .map_err(to_status)
    }
    async fn edit_order_lines(
        &self,
        req: Request<pb::EditOrderLinesRequest>,
    ) -> Result<Response<pb::EditOrderLinesResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        if r.lines.is_empty() {
            v.add("lines", "name at least one line");
        }
        for (i, l) in r.lines.iter().enumerate() {
            if l.quantity <= 0 || l.quantity > 1_000_000 {
                v.add(
                    format!("lines[{i}].quantity"),
                    "must be 1 to 1000000 (cancel lines to remove them)",
                );
            }
        }
        v.at_most("reason", &r.reason, lifecycle::MAX_REASON);
        call_ids(&r.request_id, &r.name, v).map_err(to_status)?;
        self.edit_lines(&caller, &r)
            .await
            .map(|o| Response::new(pb::EditOrderLinesResponse { order: Some(o) }))
            .map_err(to_status)
    }
}

impl OrderApi {
    /// Cancels an order. Before release it is the OMS's alone: cancelled at
    /// once, its stock and plan given back by saga steps. After release the
    /// nodes have its work: each open fulfillment order is asked to cancel
    /// (a saga step); what the nodes give up is cancelled and its stock
    /// released as their answers arrive, what they already packed ships.
    async fn cancel(&self, caller: &Caller, r: &pb::CancelOrderRequest) -> Result<pb::Order> {
        let mut m = match self
            .begin(caller, &r.request_id, "CancelOrder", r, &r.name)
            .await?
        {
            Started::Replay(o) => return Ok(o),
            Started::Locked(m) => m,
        };
        let key = &r.request_id;
        let from = m.from;
        let outcome = if from.before_release() {
            let open: Vec<pb::LineQuantity> = lifecycle::open_quantity(&m.order)
                .into_iter()
                .map(|(line_id, _, quantity)| pb::LineQuantity { line_id, quantity })
                .collect();
            lifecycle::cancel(&mut m.order).map_err(Error::Refused)?;
            m.held_from = None;
            // Whatever was reserved goes back (a release of nothing is a no-op).
            let release = saga::release_request(
                &saga::reservation_name(&m.order),
                m.id,
                key,
                &[],
                "order cancelled",
            )
            .encode_to_vec();
            let mut steps = vec![(format!("{}{key}", crate::repo::saga::RELEASE), release)];
            // Its plans will not ship: their node capacity goes back, with
            // any plan the order did not record (an attempt that stopped
            // before its record made it).
            steps.push(saga::unplan_all_step());
            // Work a release left at a node without being recorded (its
            // placement was in doubt), reported already: asked to stop too.
            let work = repo::feeds::fulfillments(&mut m.tx, &caller.tenant, m.id).await?;
            steps.extend(
                work.iter()
                    .filter(|f| saga::open_work(f))
                    .map(|f| saga::cancel_work_step(f, key, &r.reason)),
            );
            Outcome {
                happened: Happened {
                    kind: order_event::Kind::LinesCancelled(pb::OrderLinesCancelled {
                        lines: open,
                        reason: r.reason.clone(),
                    }),
                    reason: format!("cancelled from {}: {}", from.as_db(), r.reason),
                },
                steps,
            }
        } else {
            let now = lifecycle::request_cancel(&mut m.order).map_err(Error::Refused)?;
            let work = repo::feeds::fulfillments(&mut m.tx, &caller.tenant, m.id).await?;
            // What was cancelled now may have been all that was left open
            // (shipped, or delivered, but for a backordered rest).
            let shipped = fulfillment_feed::progress(&work);
            lifecycle::progressed(&mut m.order, &shipped).map_err(Error::Refused)?;
            // Work the fulfillment feed has not brought yet is asked to
            // cancel when it arrives (the feed sees `cancel_requested`).
            let steps = work
                .iter()
                .filter(|f| saga::open_work(f))
                .map(|f| saga::cancel_work_step(f, key, &r.reason))
                .chain(saga::unplanned_if_unshipped(&m.order))
                .collect();
            Outcome {
                happened: Happened {
                    kind: order_event::Kind::LinesCancelled(pb::OrderLinesCancelled {
                        lines: now
                            .into_iter()
                            .map(|(line_id, quantity)| pb::LineQuantity { line_id, quantity })
                            .collect(),
                        reason: r.reason.clone(),
                    }),
                    reason: format!(
                        "cancel requested after release (nodes asked to stop): {}",
                        r.reason
                    ),
                },
                steps,
            }
        };
        self.commit(caller, m, outcome).await
    }

    /// Edits line quantities. Units removed go back to inventory by a saga
    /// step; units added to a reserved order are reserved before the edit
    /// is recorded (an edit inventory cannot cover is refused and changes
    /// nothing), in the network or, once routed, at the line's node.
    async fn edit_lines(
        &self,
        caller: &Caller,
        r: &pb::EditOrderLinesRequest,
    ) -> Result<pb::Order> {
        // For the undo step the edit commits on its own while it holds the
        // order's lock: taken first, so it never waits for a connection
        // that requests queued on that lock hold.
        let mut side = self.pool.acquire().await?;
        let mut m = match self
            .begin(caller, &r.request_id, "EditOrderLines", r, &r.name)
            .await?
        {
            Started::Replay(o) => return Ok(o),
            Started::Locked(m) => m,
        };
        m.lines_may_change(&caller.tenant).await?;
        let placed = m.held_from.unwrap_or(m.from);
        let held = match placed {
            OrderState::Reserved => lifecycle::Held::Network,
            OrderState::Routed => lifecycle::Held::AtNodes,
            _ => lifecycle::Held::Nothing,
        };
        let edit = lifecycle::edit_lines(&mut m.order, &r.lines, held).map_err(Error::Refused)?;
        if !edit.added.is_empty() {
            // Under the order's lock: the saga cannot confirm or release
            // the reservation meanwhile. The request id is the edit's, so a
            // retried edit replays the extension instead of repeating it.
            let extend = saga::extend_request(&m.order, &r.request_id, &edit.added, &r.reason);
            self.saga
                .extend_for_edit(
                    &mut m.tx,
                    &mut side,
                    &caller.tenant,
                    m.id,
                    &r.request_id,
                    extend,
                )
                .await?;
        }
        let mut steps = vec![];
        if !edit.freed.is_empty() && held != lifecycle::Held::Nothing {
            steps.push((
                format!("{}{}", crate::repo::saga::RELEASE, r.request_id),
                saga::release_request(
                    &saga::reservation_name(&m.order),
                    m.id,
                    &r.request_id,
                    &edit.freed,
                    "lines edited",
                )
                .encode_to_vec(),
            ));
        }
        if held == lifecycle::Held::Nothing
            && matches!(m.from, OrderState::Created | OrderState::Backordered)
        {
            // Placement looks again with the new quantities.
            steps.push((crate::repo::saga::RESERVE.to_owned(), vec![]));
        }
        let outcome = Outcome {
            happened: Happened {
                kind: order_event::Kind::Updated(pb::OrderUpdated {
                    paths: vec!["lines".into()],
                    reason: r.reason.clone(),
                }),
                reason: r.reason.clone(),
            },
            steps,
        };
        self.commit(caller, m, outcome).await
    }
}

/// The request id and order of a custom method's call, checked with what
/// the caller found wrong with the rest of its body (`body`), so every bad
/// field comes back in one answer.
fn call_ids(request_id: &str, name: &str, body: Violations) -> Result<(RequestId, Uuid)> {
    let mut v = Violations::new();
    let rid = v.check("request_id", RequestId::parse(request_id));
    let id = v.check(
        "name",
        order_id("name", name).map_err(|_| "must look like orders/{id}"),
    );
    v.0.extend(body.0);
    match (rid, id, v.is_empty()) {
        (Some(rid), Some(id), true) => Ok((rid, id)),
        _ => Err(v.into()),
    }
}
