//! The IngestService API.
use crate::adapters::{self, Mapped};
use crate::order_creator::OrderCreator;
use crate::repo::{AuditRow, Seen};
use crate::skus::ChannelSkus;
use crate::submissions::Submissions;
use crate::{availability, repo, signature};
use oms_kernel::{RequestId, Tenant, Violations, check_id, check_sku, parse_name};
use oms_proto::ingest::{ingest_service_server::IngestService, *};
use oms_proto::inventory::inventory_service_client::InventoryServiceClient;
use oms_proto::orders::{self as ord, order_service_client::OrderServiceClient};
use oms_runtime::{
    auth::{self, Caller, TokenIssuer},
    client::Outbound,
    idempotency::REQUEST_ID_REUSED,
    status,
};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use tonic::{
    Code, Request, Response, Status, codegen::BoxStream, transport::Channel as GrpcChannel,
};

pub(crate) const DOMAIN: &str = "ingest.oms";
const MAX_BODY: usize = 1 << 20;

pub struct IngestApi {
    pub pool: PgPool,
    /// The submission path's reads and writes, batched.
    pub submissions: Submissions,
    /// Creates orders, many per call.
    pub creator: OrderCreator,
    pub orders: GrpcChannel,
    pub inventory: GrpcChannel,
    pub issuer: TokenIssuer,
    pub metrics: crate::metrics::Metrics,
    /// Ends availability watches when the service stops.
    pub shutdown: tokio_util::sync::CancellationToken,
}

fn db(e: sqlx::Error) -> Status {
    status::from_db(DOMAIN, &e)
}

fn invalid(v: Violations) -> Status {
    status::invalid_argument(DOMAIN, &v)
}

fn channel_id(field: &str, name: &str) -> Result<String, Status> {
    parse_name(name, "channels")
        .map(str::to_owned)
        .map_err(|e| invalid(Violations::one(field, e)))
}

/// What a channel must hold however it was written: a signed kind has its
/// secret, every mapping names both SKUs.
fn check_channel(v: &mut Violations, c: &Channel, secret: &str) {
    let kind = ChannelKind::try_from(c.kind).unwrap_or_default();
    if matches!(kind, ChannelKind::Shopify | ChannelKind::Woocommerce) && secret.is_empty() {
        v.add(
            "channel.webhook_secret",
            "signed channels need their webhook secret",
        );
    }
    // One item per channel SKU: with two, which one an order line names
    // would be a guess.
    let mut mapped: HashMap<&str, usize> = HashMap::new();
    for (i, m) in c.sku_mappings.iter().enumerate() {
        if m.channel_sku.is_empty() || m.sku.is_empty() {
            v.add(
                format!("channel.sku_mappings[{i}]"),
                "both channel_sku and sku are required",
            );
            continue;
        }
        if m.channel_sku.len() > MAX_CHANNEL_SKU {
            let why = format!("at most {MAX_CHANNEL_SKU} bytes");
            v.add(format!("channel.sku_mappings[{i}].channel_sku"), why);
        }
        if let Some(j) = mapped.insert(&m.channel_sku, i) {
            let why = format!("is mapped by sku_mappings[{j}] too");
            v.add(format!("channel.sku_mappings[{i}].channel_sku"), why);
        }
        v.check(format!("channel.sku_mappings[{i}].sku"), check_sku(&m.sku));
    }
    for (i, n) in c.default_node_ids.iter().enumerate() {
        v.check(format!("channel.default_node_ids[{i}]"), check_id(n));
    }
    v.no_repeats("channel.default_node_ids", &c.default_node_ids);
}

/// Longest channel SKU a mapping takes (a marketplace's variant ids are
/// far shorter).
const MAX_CHANNEL_SKU: usize = 255;

/// A payload as received, before and after mapping.
struct Submission<'a> {
    channel: &'a str,
    body: Vec<u8>,
    headers: BTreeMap<String, String>,
    /// The canonical order, when the caller sent one instead of a payload.
    canonical: Option<ord::Order>,
}

/// The orders service as ingest calls it, with a tenant's token.
type Orders =
    OrderServiceClient<tonic::service::interceptor::InterceptedService<GrpcChannel, Outbound>>;

/// Who ingest is to the orders service: the holds it places carry it.
pub const SUBJECT: &str = "service:ingest";

/// A later version of a channel order that is already the order `name`.
struct Later<'a> {
    channel_id: &'a str,
    coid: &'a str,
    name: &'a str,
    /// Whether the channel had cancelled it before.
    was_cancelled: bool,
    /// Whether this version cancels it.
    cancelled: bool,
    /// What this version says is left of each line ([`Mapped::left`]).
    left: &'a [(String, i64)],
    /// The channel says it has been paid: a channel payload not awaiting
    /// payment. A canonical order says nothing of it (a payment hold its
    /// sender placed stays).
    paid: bool,
    body_hash: &'a str,
}

impl IngestApi {
    async fn submit(
        &self,
        caller: &Caller,
        s: Submission<'_>,
    ) -> Result<SubmitChannelPayloadResponse, Status> {
        let tenant = &caller.tenant;
        let id = channel_id("channel", s.channel)?;
        let Some((channel, secret)) = self.submissions.channel(tenant, &id).await? else {
            return Err(status::not_found(DOMAIN, "channel", s.channel));
        };
        if !channel.enabled {
            return Err(status::failed_precondition(
                DOMAIN,
                "CHANNEL_DISABLED",
                s.channel,
                // A channel is created disabled unless `enabled` is set:
                // say how to turn it on.
                "the channel is disabled: enable it with UpdateChannel (`enabled`, update_mask \
                 `enabled`); a channel created without `enabled: true` starts disabled",
            ));
        }
        let payload_id = uuid::Uuid::now_v7();
        let body_hash = hex::encode(Sha256::digest(&s.body));
        let mut audit = Payload {
            name: format!("payloads/{payload_id}"),
            channel: s.channel.to_owned(),
            body: s.body.clone(),
            headers: s.headers.clone().into_iter().collect(),
            receive_time: Some(oms_runtime::time::to_timestamp(chrono::Utc::now())),
            ..Default::default()
        };
        let outcome = self.accept(tenant, &channel, &secret, &s, &body_hash).await;
        let status_code = match &outcome {
            Ok((resp, _)) => {
                audit.order = resp.order.clone();
                if resp.outcome == SubmissionOutcome::Duplicate as i32 {
                    PayloadStatus::Duplicate
                } else {
                    PayloadStatus::Accepted
                }
            }
            Err(e) => {
                audit.error = e.message().to_owned();
                PayloadStatus::Rejected
            }
        };
        audit.status = status_code as i32;
        // Every attempt is kept for audit, accepted or not; what the channel
        // order became is recorded with it, in the same row.
        let name = audit.name.clone();
        let (result, seen) = match outcome {
            Ok((r, seen)) => (Ok(r), Some(seen)),
            Err(e) => (Err(e), None),
        };
        let recorded = self
            .submissions
            .record(AuditRow {
                tenant: tenant.clone(),
                payload_id,
                payload: audit,
                body_hash,
                seen,
            })
            .await;
        let answer = recorded.and(result).map(|mut r| {
            r.payload = name;
            r
        });
        let kind = ChannelKind::try_from(channel.kind).unwrap_or_default();
        self.metrics.submission(
            tenant.as_str(),
            &channel.channel_id,
            kind.as_str_name(),
            &answer,
        );
        answer
    }

    async fn accept(
        &self,
        tenant: &Tenant,
        channel: &oms_proto::ingest::Channel,
        secret: &str,
        s: &Submission<'_>,
        body_hash: &str,
    ) -> Result<(SubmitChannelPayloadResponse, Seen), Status> {
        let kind = ChannelKind::try_from(channel.kind).unwrap_or_default();
        let mapped = match (&s.canonical, kind) {
            (Some(order), _) => Mapped {
                order: order.clone(),
                ..Default::default()
            },
            (None, ChannelKind::Shopify | ChannelKind::Woocommerce) => {
                let header = if kind == ChannelKind::Shopify {
                    adapters::shopify::SIGNATURE_HEADER
                } else {
                    adapters::woocommerce::SIGNATURE_HEADER
                };
                let given = s
                    .headers
                    .get(header)
                    .map(String::as_str)
                    .unwrap_or_default();
                if secret.is_empty() || !signature::verify(secret, &s.body, given) {
                    return Err(status::with_reason(
                        Code::Unauthenticated,
                        DOMAIN,
                        "SIGNATURE_INVALID",
                        format!(
                            "the {header} header does not sign this body with the channel's webhook secret"
                        ),
                    ));
                }
                let json = json_body(&s.body)?;
                let mapped = if kind == ChannelKind::Shopify {
                    adapters::shopify::map(&json)
                } else {
                    adapters::woocommerce::map(&json)
                };
                mapped.map_err(invalid)?
            }
            // Polled by a connector with API credentials: not signed.
            (
                None,
                ChannelKind::AmazonSpApi | ChannelKind::MercadoLibre | ChannelKind::Trendyol,
            ) => {
                let json = json_body(&s.body)?;
                let mapped = match kind {
                    ChannelKind::AmazonSpApi => adapters::amazon::map(&json),
                    ChannelKind::MercadoLibre => adapters::mercadolibre::map(&json),
                    _ => adapters::trendyol::map(&json),
                };
                mapped.map_err(invalid)?
            }
            (None, _) => {
                return Err(invalid(Violations::one(
                    "body",
                    "this channel kind takes canonical orders (SubmitOrder), not raw payloads",
                )));
            }
        };
        let says_paid = s.canonical.is_none() && mapped.awaiting_payment.is_none();
        let mut order = mapped.order;
        if order.channel_order_id.is_empty() {
            return Err(invalid(Violations::one(
                "order.channel_order_id",
                "is required to recognise repeats",
            )));
        }
        let skus = ChannelSkus::of(channel);
        for l in &mut order.lines {
            if l.channel_sku.is_empty() {
                l.channel_sku = l.sku.clone();
            }
            if let Some(sku) = skus.mapped(&l.channel_sku) {
                l.sku = sku.to_owned();
            }
        }
        order.channel = channel.name.clone();
        let coid = order.channel_order_id.clone();
        let known = self
            .submissions
            .channel_order(tenant, &channel.channel_id, &coid)
            .await?;
        let (name, outcome) = match known {
            Some(seen) if seen.last_body_hash == body_hash => {
                (seen.order_name, SubmissionOutcome::Duplicate)
            }
            Some(seen) => {
                let name = seen.order_name;
                let later = Later {
                    channel_id: &channel.channel_id,
                    coid: &coid,
                    name: &name,
                    was_cancelled: seen.cancelled,
                    cancelled: mapped.cancelled,
                    left: &mapped.left,
                    paid: says_paid,
                    body_hash,
                };
                self.later_version(tenant, &later, order).await?;
                (name, SubmissionOutcome::Updated)
            }
            None => {
                let request_id =
                    RequestId::derived("ingest", format!("ingest:{}:{}", channel.channel_id, coid));
                // Not paid yet: created on hold, placed once paid.
                if let Some(reason) = &mapped.awaiting_payment {
                    order.holds.push(ord::Hold {
                        r#type: ord::HoldType::Payment as i32,
                        reason: reason.clone(),
                        ..Default::default()
                    });
                }
                // Kept for the race below: what a later version changes.
                let changes = ord::Order {
                    ship_to: order.ship_to.clone(),
                    customer: order.customer.clone(),
                    ..Default::default()
                };
                let created = self
                    .creator
                    .create(
                        tenant,
                        ord::CreateOrderRequest {
                            request_id,
                            order: Some(order),
                        },
                    )
                    .await;
                match created {
                    Ok(created) => {
                        if mapped.cancelled {
                            self.cancel(tenant, &created.name, &channel.channel_id, &coid)
                                .await?;
                        }
                        (created.name, SubmissionOutcome::Created)
                    }
                    // Another version of this new channel order was created
                    // at the same moment (both found no channel order, both
                    // sent the same derived request id): this one is a
                    // later version of that order.
                    Err(e) if status::reason(&e) == REQUEST_ID_REUSED => {
                        let Some(name) = self.order_of(tenant, &channel.name, &coid).await? else {
                            return Err(e);
                        };
                        let later = Later {
                            channel_id: &channel.channel_id,
                            coid: &coid,
                            name: &name,
                            was_cancelled: false,
                            cancelled: mapped.cancelled,
                            left: &mapped.left,
                            paid: says_paid,
                            body_hash,
                        };
                        self.later_version(tenant, &later, changes).await?;
                        (name, SubmissionOutcome::Updated)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let seen = Seen {
            channel_order_id: coid,
            order: name.clone(),
            cancelled: mapped.cancelled,
        };
        Ok((
            SubmitChannelPayloadResponse {
                payload: String::new(),
                order: name,
                outcome: outcome as i32,
            },
            seen,
        ))
    }

    /// A later version of a channel order that is already an order: a
    /// cancellation cancels it, anything else brings its address,
    /// customer and what is left of its lines, while the order can still
    /// change.
    async fn later_version(
        &self,
        tenant: &Tenant,
        v: &Later<'_>,
        order: ord::Order,
    ) -> Result<(), Status> {
        if v.cancelled {
            if !v.was_cancelled {
                self.cancel(tenant, v.name, v.channel_id, v.coid).await?;
            }
            return Ok(());
        }
        // One client (one token) for every call the version makes.
        let mut orders = self.orders_of(tenant);
        let get = ord::GetOrderRequest {
            name: v.name.to_owned(),
        };
        let got = orders.get_order(get).await?.into_inner();
        let current = got.order.unwrap_or_default();
        // Only what changed: a shop sends the order again for changes the
        // OMS does not keep (tags, notes, its payment), which would fill
        // the order's history and feed with updates of nothing.
        if current.ship_to != order.ship_to || current.customer != order.customer {
            let update = ord::UpdateOrderRequest {
                request_id: later_request_id("ingest-update", v),
                order: Some(ord::Order {
                    name: v.name.to_owned(),
                    ..order
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["ship_to".into(), "customer".into()],
                }),
                reason: "updated in the channel".into(),
            };
            let updated = orders.update_order(update).await;
            not_applied_after_release(v, "update", updated.map(|_| ()))?;
        }
        follow_lines(&mut orders, v, &current).await?;
        if v.paid {
            paid(&mut orders, v, &current).await?;
        }
        Ok(())
    }

    /// The order a channel order became, asked of the orders service.
    async fn order_of(
        &self,
        tenant: &Tenant,
        channel: &str,
        coid: &str,
    ) -> Result<Option<String>, Status> {
        let found = self
            .orders_of(tenant)
            .list_orders(ord::ListOrdersRequest {
                page_size: 1,
                channel: channel.to_owned(),
                channel_order_id: coid.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(found.orders.into_iter().next().map(|o| o.name))
    }

    /// The orders service, called with a token of `tenant` (minted here:
    /// only updates and cancellations need it; new orders go through the
    /// batching [`OrderCreator`]).
    fn orders_of(&self, tenant: &Tenant) -> Orders {
        OrderServiceClient::with_interceptor(
            self.orders.clone(),
            Outbound::for_tenant(&self.issuer, tenant, SUBJECT),
        )
    }

    async fn cancel(
        &self,
        tenant: &Tenant,
        name: &str,
        channel: &str,
        coid: &str,
    ) -> Result<(), Status> {
        let req = ord::CancelOrderRequest {
            request_id: RequestId::derived(
                "ingest-cancel",
                format!("ingest-cancel:{channel}:{coid}"),
            ),
            name: name.to_owned(),
            reason: "cancelled in the channel".into(),
        };
        match self.orders_of(tenant).cancel_order(req).await {
            // Already cancelled or past cancellation: the order keeps its own truth.
            Ok(_) => Ok(()),
            Err(e) if e.code() == Code::FailedPrecondition => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The channel has been paid: the payment hold ingest placed when the
/// order came in unpaid is released, and placement starts. A payment
/// hold someone else placed stays.
async fn paid(orders: &mut Orders, v: &Later<'_>, order: &ord::Order) -> Result<(), Status> {
    let ours = |h: &ord::Hold| h.r#type == ord::HoldType::Payment as i32 && h.placed_by == SUBJECT;
    if !order.holds.iter().any(ours) {
        return Ok(());
    }
    let release = ord::ReleaseHoldRequest {
        request_id: later_request_id("ingest-paid", v),
        name: v.name.to_owned(),
        r#type: ord::HoldType::Payment as i32,
        reason: "paid in the channel".into(),
    };
    let released = orders.release_hold(release).await;
    not_applied_after_release(v, "payment", released.map(|_| ()))
}

/// Brings the order's lines down to what the channel says is left of
/// each (refunds and order edits there), while the order can still
/// change: a line left with nothing has its open units cancelled, one
/// with fewer is edited to them (the rest given back to stock). An edit
/// sets a total and a cancel is refused beyond what is open, so two
/// versions applied at once never take more than the channel says.
async fn follow_lines(
    orders: &mut Orders,
    v: &Later<'_>,
    order: &ord::Order,
) -> Result<(), Status> {
    let (edits, cancels) = crate::lines_left::changes(order, v.left);
    let key = |what: &str| later_request_id(what, v);
    let reason = "lines changed in the channel (refund or order edit)";
    if !edits.is_empty() {
        let edit = ord::EditOrderLinesRequest {
            request_id: key("ingest-edit"),
            name: v.name.to_owned(),
            lines: edits,
            reason: reason.into(),
        };
        let edited = orders.edit_order_lines(edit).await;
        not_applied_after_release(v, "line edit", edited.map(|_| ()))?;
    }
    if !cancels.is_empty() {
        let cancel = ord::CancelOrderLinesRequest {
            request_id: key("ingest-cancel-lines"),
            name: v.name.to_owned(),
            lines: cancels,
            reason: reason.into(),
        };
        let cancelled = orders.cancel_order_lines(cancel).await;
        not_applied_after_release(v, "line cancel", cancelled.map(|_| ()))?;
    }
    Ok(())
}

/// A payload's body as JSON.
fn json_body(body: &[u8]) -> Result<serde_json::Value, Status> {
    serde_json::from_slice(body)
        .map_err(|e| invalid(Violations::one("body", format!("not JSON: {e}"))))
}

/// The request id of a change `v` asks of its order (`what`), the same
/// for the same version sent again.
fn later_request_id(what: &str, v: &Later<'_>) -> String {
    let (channel, coid, hash) = (v.channel_id, v.coid, &v.body_hash[..16]);
    RequestId::derived(what, format!("{what}:{channel}:{coid}:{hash}"))
}

/// A change a later version asked of its order: refused because the order
/// has gone on (released to its warehouse, stock short for more units) is
/// told in the log and not applied; the channel order stays accepted.
fn not_applied_after_release(
    v: &Later<'_>,
    what: &str,
    answer: Result<(), Status>,
) -> Result<(), Status> {
    match answer {
        Err(e) if e.code() == Code::FailedPrecondition => {
            tracing::info!(order = %v.name, "channel {what} not applied: {}", e.message());
            Ok(())
        }
        other => other,
    }
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn create_channel(
        &self,
        req: Request<CreateChannelRequest>,
    ) -> Result<Response<CreateChannelResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.check("request_id", oms_kernel::RequestId::parse(&r.request_id));
        let Some(mut c) = r.channel.clone() else {
            v.add("channel", "is required");
            return Err(invalid(v));
        };
        v.check("channel.channel_id", check_id(&c.channel_id));
        let kind = ChannelKind::try_from(c.kind).unwrap_or_default();
        if kind == ChannelKind::Unspecified {
            v.add("channel.kind", "choose a channel kind");
        }
        check_channel(&mut v, &c, &c.webhook_secret);
        v.into_result(()).map_err(invalid)?;
        let secret = std::mem::take(&mut c.webhook_secret);
        c.has_webhook_secret = !secret.is_empty();
        c.name = format!("channels/{}", c.channel_id);
        let now = Some(oms_runtime::time::to_timestamp(chrono::Utc::now()));
        c.create_time = now;
        c.update_time = now;
        if !repo::insert_channel(&self.pool, &caller.tenant, &c, &secret)
            .await
            .map_err(db)?
        {
            let (existing, _) = repo::channel(&self.pool, &caller.tenant, &c.channel_id, false)
                .await
                .map_err(db)?
                .unwrap_or_default();
            // The same request again returns the channel; another is a conflict.
            if existing.kind == c.kind && existing.display_name == c.display_name {
                return Ok(Response::new(CreateChannelResponse {
                    channel: Some(existing),
                }));
            }
            return Err(status::already_exists(DOMAIN, "CHANNEL_EXISTS", &c.name));
        }
        // A submission may have found no such channel a moment ago.
        self.submissions
            .forget_channel(&caller.tenant, &c.channel_id);
        Ok(Response::new(CreateChannelResponse { channel: Some(c) }))
    }

    async fn update_channel(
        &self,
        req: Request<UpdateChannelRequest>,
    ) -> Result<Response<UpdateChannelResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let rid = v.check("request_id", RequestId::parse(&r.request_id));
        let patch = r.channel.clone().unwrap_or_default();
        let fields = ("channel.name", "channel.channel_id");
        let id = v.merge(oms_kernel::target_id(
            &patch.name,
            &patch.channel_id,
            "channels",
            fields,
        ));
        let paths = r.update_mask.clone().unwrap_or_default().paths;
        if paths.is_empty() {
            v.add("update_mask", "name at least one field");
        }
        let (Some(rid), Some(id), true) = (rid, id, v.is_empty()) else {
            return Err(invalid(v));
        };
        let mut tx = match oms_runtime::idempotency::begin(
            &self.pool,
            DOMAIN,
            &caller.tenant,
            &rid,
            "UpdateChannel",
            &r,
        )
        .await?
        {
            oms_runtime::idempotency::Begin::Replay(resp) => return Ok(Response::new(resp)),
            oms_runtime::idempotency::Begin::Tx(tx) => tx,
        };
        let (mut c, mut secret) = repo::channel(&mut *tx, &caller.tenant, &id, true)
            .await
            .map_err(db)?
            .ok_or_else(|| status::not_found(DOMAIN, "channel", &patch.name))?;
        for p in &paths {
            match p.as_str() {
                "display_name" => c.display_name = patch.display_name.clone(),
                "webhook_secret" => secret = patch.webhook_secret.clone(),
                "sku_mappings" => c.sku_mappings = patch.sku_mappings.clone(),
                "default_node_ids" => c.default_node_ids = patch.default_node_ids.clone(),
                "enabled" => c.enabled = patch.enabled,
                other => v.add("update_mask", format!("{other:?} cannot be updated")),
            }
        }
        check_channel(&mut v, &c, &secret);
        v.into_result(()).map_err(invalid)?;
        c.has_webhook_secret = !secret.is_empty();
        c.update_time = Some(oms_runtime::time::to_timestamp(chrono::Utc::now()));
        repo::save_channel(&mut *tx, &caller.tenant, &c, &secret)
            .await
            .map_err(db)?;
        let resp = UpdateChannelResponse { channel: Some(c) };
        let resp = oms_runtime::idempotency::finish(tx, DOMAIN, &caller.tenant, &rid, resp).await?;
        self.submissions.forget_channel(&caller.tenant, &id);
        Ok(Response::new(resp))
    }

    async fn get_channel(
        &self,
        req: Request<GetChannelRequest>,
    ) -> Result<Response<GetChannelResponse>, Status> {
        let caller = auth::caller(&req)?;
        let id = channel_id("name", &req.get_ref().name)?;
        match repo::channel(&self.pool, &caller.tenant, &id, false)
            .await
            .map_err(db)?
        {
            Some((c, _)) => Ok(Response::new(GetChannelResponse { channel: Some(c) })),
            None => Err(status::not_found(DOMAIN, "channel", &req.get_ref().name)),
        }
    }

    async fn list_channels(
        &self,
        req: Request<ListChannelsRequest>,
    ) -> Result<Response<ListChannelsResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let paging =
            oms_kernel::Paging::<String>::parse(&mut v, r.page_size, &r.page_token, (50, 500), 0);
        v.into_result(()).map_err(invalid)?;
        let after = paging.after.as_deref().unwrap_or("");
        let rows = repo::channels(&self.pool, &caller.tenant, after, paging.fetch())
            .await
            .map_err(db)?;
        let (channels, next_page_token) = paging.page(rows, |c| c.channel_id.clone());
        Ok(Response::new(ListChannelsResponse {
            channels,
            next_page_token,
        }))
    }

    async fn submit_channel_payload(
        &self,
        req: Request<SubmitChannelPayloadRequest>,
    ) -> Result<Response<SubmitChannelPayloadResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.check("request_id", oms_kernel::RequestId::parse(&r.request_id));
        if r.body.is_empty() {
            v.add("body", "is required");
        }
        if r.body.len() > MAX_BODY {
            v.add("body", "must be at most 1 MiB");
        }
        v.into_result(()).map_err(invalid)?;
        let headers = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let s = Submission {
            channel: &r.channel,
            body: r.body.clone(),
            headers,
            canonical: None,
        };
        self.submit(&caller, s).await.map(Response::new)
    }

    async fn submit_order(
        &self,
        req: Request<SubmitOrderRequest>,
    ) -> Result<Response<SubmitOrderResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        v.check("request_id", oms_kernel::RequestId::parse(&r.request_id));
        let Some(order) = r.order.clone() else {
            v.add("order", "is required");
            return Err(invalid(v));
        };
        v.into_result(()).map_err(invalid)?;
        let body = prost::Message::encode_to_vec(&order);
        let s = Submission {
            channel: &r.channel,
            body,
            headers: BTreeMap::new(),
            canonical: Some(order),
        };
        let resp = self.submit(&caller, s).await?;
        Ok(Response::new(SubmitOrderResponse {
            payload: resp.payload,
            order: resp.order,
            outcome: resp.outcome,
        }))
    }

    async fn get_payload(
        &self,
        req: Request<GetPayloadRequest>,
    ) -> Result<Response<GetPayloadResponse>, Status> {
        let caller = auth::caller(&req)?;
        let name = req.get_ref().name.clone();
        let id = parse_name(&name, "payloads")
            .ok()
            .and_then(|i| uuid::Uuid::parse_str(i).ok())
            .ok_or_else(|| invalid(Violations::one("name", "must look like payloads/{id}")))?;
        match repo::payload(&self.pool, &caller.tenant, id)
            .await
            .map_err(db)?
        {
            Some(p) => Ok(Response::new(GetPayloadResponse { payload: Some(p) })),
            None => Err(status::not_found(DOMAIN, "payload", &name)),
        }
    }

    async fn list_payloads(
        &self,
        req: Request<ListPayloadsRequest>,
    ) -> Result<Response<ListPayloadsResponse>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let channel = if r.channel.is_empty() {
            None
        } else {
            v.check("channel", parse_name(&r.channel, "channels"))
        };
        let status = match PayloadStatus::try_from(r.status) {
            Ok(PayloadStatus::Unspecified) => None,
            Ok(s) => Some(s.as_str_name()),
            Err(_) => {
                v.add("status", "unknown payload status");
                None
            }
        };
        let hash = oms_kernel::fingerprint(&ListPayloadsRequest {
            page_size: 0,
            page_token: String::new(),
            ..r.clone()
        });
        let paging = oms_kernel::Paging::<uuid::Uuid>::parse(
            &mut v,
            r.page_size,
            &r.page_token,
            (50, 500),
            hash,
        );
        v.into_result(()).map_err(invalid)?;
        let filter = repo::PayloadFilter {
            channel,
            status,
            before: paging.after,
        };
        let rows = repo::payloads(&self.pool, &caller.tenant, &filter, paging.fetch())
            .await
            .map_err(db)?;
        let (rows, next_page_token) = paging.page(rows, |(id, _)| *id);
        Ok(Response::new(ListPayloadsResponse {
            payloads: rows.into_iter().map(|(_, p)| p).collect(),
            next_page_token,
        }))
    }
    async fn watch_channel_availability(
        &self,
        req: Request<WatchChannelAvailabilityRequest>,
    ) -> Result<Response<BoxStream<WatchChannelAvailabilityResponse>>, Status> {
        let caller = auth::caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let id = v.check("channel", parse_name(&r.channel, "channels"));
        v.check(
            "after_cursor",
            oms_runtime::outbox::Cursor::parse(&r.after_cursor),
        );
        let id = v.into_result(id).map_err(invalid)?.unwrap_or_default();
        let Some((channel, _)) = repo::channel(&self.pool, &caller.tenant, id, false)
            .await
            .map_err(db)?
        else {
            return Err(status::not_found(DOMAIN, "channel", &r.channel));
        };
        if !channel.enabled {
            return Err(availability::disabled(&r.channel));
        }
        let watch = availability::Watch {
            submissions: self.submissions.clone(),
            inventory: InventoryServiceClient::with_interceptor(
                self.inventory.clone(),
                Outbound::for_tenant(&self.issuer, &caller.tenant, SUBJECT),
            ),
            tenant: caller.tenant.clone(),
            channel,
            shutdown: self.shutdown.clone(),
        };
        // A slow watcher holds the feed back rather than growing a buffer.
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(watch.run(r.after_cursor, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn import_orders(
        &self,
        req: Request<tonic::Streaming<ImportOrdersRequest>>,
    ) -> Result<Response<ImportOrdersResponse>, Status> {
        use import_orders_request::Item;
        let caller = auth::caller(&req)?;
        let mut stream = req.into_inner();
        let mut results = Vec::new();
        while let Some(msg) = stream.message().await? {
            if results.len() >= MAX_IMPORT_ITEMS {
                return Err(invalid(Violations::one(
                    "item",
                    format!("at most {MAX_IMPORT_ITEMS} items per import"),
                )));
            }
            let outcome = match msg.item {
                Some(Item::Payload(p)) => {
                    let headers = p
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect();
                    let s = Submission {
                        channel: &p.channel,
                        body: p.body.clone(),
                        headers,
                        canonical: None,
                    };
                    self.submit(&caller, s).await
                }
                Some(Item::Order(o)) => match o.order.clone() {
                    Some(order) => {
                        let s = Submission {
                            channel: &o.channel,
                            body: prost::Message::encode_to_vec(&order),
                            headers: BTreeMap::new(),
                            canonical: Some(order),
                        };
                        self.submit(&caller, s).await
                    }
                    None => Err(invalid(Violations::one("order.order", "is required"))),
                },
                None => Err(invalid(Violations::one(
                    "item",
                    "send a payload or an order",
                ))),
            };
            results.push(match outcome {
                Ok(r) => ImportResult {
                    item_id: msg.item_id,
                    status: Some(status::to_rpc(None)),
                    order: r.order,
                    outcome: r.outcome,
                },
                Err(e) => ImportResult {
                    item_id: msg.item_id,
                    status: Some(status::to_rpc(Some(&e))),
                    order: String::new(),
                    outcome: SubmissionOutcome::Unspecified as i32,
                },
            });
        }
        Ok(Response::new(ImportOrdersResponse { results }))
    }
}

const MAX_IMPORT_ITEMS: usize = 10_000;
