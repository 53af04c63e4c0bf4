//! Messages between the office and a warehouse, about a fulfillment order
//! or an ASN. A message goes to the subject's node as a command on the
//! adapter stream; it is delivered when the adapter acknowledges that
//! command and read when someone marks it so.
use crate::inbound::asn_id;
use crate::repo::{self as commands, inbound, messages as repo};
use crate::service::{DOMAIN, Fulfillment, db, invalid};
use crate::work::order_id;
use chrono::Utc;
use oms_kernel::{Paging, RequestId, Tenant, Violations, parse_name};
use oms_proto::fulfillment::{
    Command, ListMessagesRequest, ListMessagesResponse, MarkMessageReadRequest,
    MarkMessageReadResponse, SendMessageRequest, SendMessageResponse, command,
};
use oms_runtime::{
    idempotency::{self, Begin},
    status,
    time::to_timestamp,
};
use tonic::Status;
use uuid::Uuid;

const MAX_BODY: usize = 4000;

fn message_id(field: &str, name: &str) -> Result<Uuid, Violations> {
    let id = parse_name(name, "messages").map_err(|e| Violations::one(field, e))?;
    Uuid::parse_str(id)
        .map_err(|_| Violations::one(field, format!("{name:?} is not a message name")))
}

/// What a subject names: a fulfillment order or an ASN.
enum Subject {
    Order(Uuid),
    Asn(Uuid),
}

fn subject(field: &str, name: &str) -> Result<Subject, Violations> {
    if name.starts_with("asns/") {
        asn_id(field, name).map(Subject::Asn)
    } else if name.starts_with("fulfillmentOrders/") {
        order_id(field, name).map(Subject::Order)
    } else {
        Err(Violations::one(
            field,
            "`fulfillmentOrders/{id}` or `asns/{id}`",
        ))
    }
}

pub async fn send(
    r: &Fulfillment,
    tenant: &Tenant,
    author: &str,
    req: SendMessageRequest,
) -> Result<SendMessageResponse, Status> {
    let mut v = Violations::new();
    let rid = v.check("request_id", RequestId::parse(&req.request_id));
    let mut m = req.message.clone().unwrap_or_default();
    let about = if req.message.is_none() {
        v.add("message", "required");
        None
    } else {
        if m.body.trim().is_empty() || m.body.len() > MAX_BODY {
            v.add(
                "message.body",
                format!("required, at most {MAX_BODY} bytes"),
            );
        }
        match subject("message.subject", &m.subject) {
            Ok(s) => Some(s),
            Err(e) => {
                v.0.extend(e.0);
                None
            }
        }
    };
    let (Some(rid), Some(about), true) = (rid, about, v.is_empty()) else {
        return Err(invalid(v));
    };
    let mut tx =
        match idempotency::begin(&r.pool, DOMAIN, tenant, &rid, "SendMessage", &req).await? {
            Begin::Replay(resp) => return Ok(resp),
            Begin::Tx(tx) => tx,
        };
    let node = match about {
        Subject::Order(id) => commands::order(&mut *tx, tenant, id, false)
            .await
            .map_err(db)?
            .map(|fo| fo.node_id),
        Subject::Asn(id) => inbound::asn(&mut *tx, tenant, id)
            .await
            .map_err(db)?
            .map(|a| a.node_id),
    }
    .ok_or_else(|| status::not_found(DOMAIN, "subject", &m.subject))?;
    let now = Utc::now();
    let id = Uuid::now_v7();
    m.name = format!("messages/{id}");
    m.node_id = node;
    m.author = author.to_owned();
    m.create_time = Some(to_timestamp(now));
    m.deliver_time = None;
    m.read_time = None;
    let seq = commands::append_command(
        &mut tx,
        tenant,
        &Command {
            sequence: 0,
            command_id: Uuid::now_v7().to_string(),
            node_id: m.node_id.clone(),
            kind: Some(command::Kind::Message(m.clone())),
        },
        now,
    )
    .await
    .map_err(db)?;
    repo::insert(&mut tx, tenant, id, &m, seq)
        .await
        .map_err(db)?;
    let resp = SendMessageResponse { message: Some(m) };
    let done = idempotency::finish(tx, DOMAIN, tenant, &rid, resp).await;
    r.waker.wake();
    done
}

pub async fn list(
    r: &Fulfillment,
    tenant: &Tenant,
    req: ListMessagesRequest,
) -> Result<ListMessagesResponse, Status> {
    let mut v = Violations::new();
    if !req.subject.is_empty()
        && let Err(e) = subject("subject", &req.subject)
    {
        v.0.extend(e.0);
    }
    let hash = oms_kernel::fingerprint(&ListMessagesRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let paging = Paging::<Uuid>::parse(&mut v, req.page_size, &req.page_token, (50, 500), hash);
    if !v.is_empty() {
        return Err(invalid(v));
    }
    let rows = repo::list(
        &r.pool,
        tenant,
        &req.subject,
        req.unread_only,
        paging.after,
        paging.fetch(),
    )
    .await
    .map_err(db)?;
    let (rows, next_page_token) = paging.page(rows, |(id, _)| *id);
    Ok(ListMessagesResponse {
        messages: rows.into_iter().map(|(_, m)| m).collect(),
        next_page_token,
    })
}

pub async fn mark_read(
    r: &Fulfillment,
    tenant: &Tenant,
    req: MarkMessageReadRequest,
) -> Result<MarkMessageReadResponse, Status> {
    let mut v = Violations::new();
    let rid = v.check("request_id", RequestId::parse(&req.request_id));
    let id = message_id("name", &req.name)
        .map_err(|e| v.0.extend(e.0))
        .ok();
    let (Some(rid), Some(id)) = (rid, id) else {
        return Err(invalid(v));
    };
    let mut tx =
        match idempotency::begin(&r.pool, DOMAIN, tenant, &rid, "MarkMessageRead", &req).await? {
            Begin::Replay(resp) => return Ok(resp),
            Begin::Tx(tx) => tx,
        };
    if repo::get(&mut *tx, tenant, id, true)
        .await
        .map_err(db)?
        .is_none()
    {
        return Err(status::not_found(DOMAIN, "message", &req.name));
    }
    repo::mark_read(&mut *tx, tenant, id, Utc::now())
        .await
        .map_err(db)?;
    let m = repo::get(&mut *tx, tenant, id, false).await.map_err(db)?;
    let resp = MarkMessageReadResponse { message: m };
    idempotency::finish(tx, DOMAIN, tenant, &rid, resp).await
}
