//! Messages between the office and a warehouse, about a fulfillment order,
//! an ASN or a receipt. The office's message goes to the subject's node as
//! a command on the adapter stream and is delivered when the adapter
//! acknowledges that command; the warehouse's comes from its adapter as a
//! note on the stream, stored once by its event id. Either is read when
//! someone marks it so.
use crate::events::{self, Once};
use crate::repo::{self as commands, inbound, messages as repo};
use crate::service::{DOMAIN, Fulfillment, db, invalid};
use chrono::Utc;
use oms_kernel::{Paging, RequestId, Tenant, Violations, parse_name, parse_uuid_name};
use oms_proto::fulfillment::{
    AdapterNote, EventAck, ListMessagesRequest, ListMessagesResponse, MarkMessageReadRequest,
    MarkMessageReadResponse, SendMessageRequest, SendMessageResponse, command,
};
use oms_runtime::{
    idempotency::{self, Begin},
    status,
    time::to_timestamp,
};
use sqlx::PgConnection;
use tonic::Status;
use uuid::Uuid;

const MAX_BODY: usize = 4000;

/// What a subject names: a fulfillment order, an ASN or a receipt.
enum Subject {
    Order(Uuid),
    Asn(Uuid),
    Receipt(String),
}

fn subject(name: &str) -> Result<Subject, String> {
    if name.starts_with("asns/") {
        parse_uuid_name(name, "asns", "an ASN").map(Subject::Asn)
    } else if name.starts_with("fulfillmentOrders/") {
        parse_uuid_name(name, "fulfillmentOrders", "a fulfillment order").map(Subject::Order)
    } else if name.starts_with("receipts/") {
        parse_name(name, "receipts").map(|id| Subject::Receipt(id.to_owned()))
    } else {
        // Before 2026-12-05 the error was the list alone, which read as
        // nothing a caller could act on.
        Err(format!(
            "names what the message is about, and so the node it goes to: `fulfillmentOrders/{{id}}`, `asns/{{id}}` or `receipts/{{id}}`; got {name:?}"
        ))
    }
}

/// The node the subject is at, if it exists for the tenant.
async fn node_of(
    tx: &mut PgConnection,
    tenant: &Tenant,
    about: &Subject,
) -> Result<Option<String>, Status> {
    Ok(match about {
        Subject::Order(id) => commands::order(&mut *tx, tenant, *id, false)
            .await
            .map_err(db)?
            .map(|fo| fo.node_id),
        Subject::Asn(id) => inbound::asn(&mut *tx, tenant, *id, false)
            .await
            .map_err(db)?
            .map(|a| a.node_id),
        Subject::Receipt(id) => inbound::receipt_node(&mut *tx, tenant, id)
            .await
            .map_err(db)?,
    })
}

fn check_body(v: &mut Violations, field: &str, body: &str) {
    if body.trim().is_empty() || body.len() > MAX_BODY {
        v.add(field, format!("required, at most {MAX_BODY} bytes"));
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
        check_body(&mut v, "message.body", &m.body);
        v.check("message.subject", subject(&m.subject))
    };
    let (Some(rid), Some(about), true) = (rid, about, v.is_empty()) else {
        return Err(invalid(v));
    };
    let mut tx =
        match idempotency::begin(&r.pool, DOMAIN, tenant, &rid, "SendMessage", &req).await? {
            Begin::Replay(resp) => return Ok(resp),
            Begin::Tx(tx) => tx,
        };
    let node = node_of(&mut tx, tenant, &about)
        .await?
        .ok_or_else(|| status::not_found(DOMAIN, "subject", &m.subject))?;
    let now = Utc::now();
    let id = Uuid::now_v7();
    m.name = format!("messages/{id}");
    m.node_id = node;
    m.author = author.to_owned();
    m.create_time = Some(to_timestamp(now));
    m.deliver_time = None;
    m.read_time = None;
    m.from_node = false;
    let note = command::Kind::Message(m.clone());
    let seq = commands::append_command(&mut tx, tenant, &m.node_id, note, now)
        .await
        .map_err(db)?;
    repo::insert(&mut tx, tenant, id, &m, seq, None)
        .await
        .map_err(db)?;
    let resp = SendMessageResponse { message: Some(m) };
    r.finish(tx, tenant, &rid, resp).await
}

/// Stores a note from the warehouse, once per event id, and answers it.
/// Err only when the database fails.
pub async fn from_node(
    r: &Fulfillment,
    tenant: &Tenant,
    nodes: &[String],
    adapter: &str,
    note: AdapterNote,
) -> Result<EventAck, Status> {
    let mut tx = match events::once(r, tenant, &note.event_id).await? {
        Once::Answered(ack) => return Ok(ack),
        Once::Apply(tx) => tx,
    };
    let mut m = note.message.unwrap_or_default();
    let mut v = Violations::new();
    check_body(&mut v, "message.body", &m.body);
    let about = v.check("message.subject", subject(&m.subject));
    let outcome = match about {
        Some(about) if v.is_empty() => match node_of(&mut tx, tenant, &about).await? {
            Some(node) if nodes.contains(&node) => {
                let now = Utc::now();
                let id = Uuid::now_v7();
                m.name = format!("messages/{id}");
                m.node_id = node;
                m.author = format!("adapter:{adapter}");
                m.create_time = Some(to_timestamp(now));
                m.deliver_time = None;
                m.read_time = None;
                m.from_node = true;
                repo::insert(&mut tx, tenant, id, &m, 0, Some(now))
                    .await
                    .map_err(db)?;
                Ok(())
            }
            Some(node) => Err(format!(
                "{} is at node {node}, not served by this adapter",
                m.subject
            )),
            None => Err(format!("unknown subject {:?}", m.subject)),
        },
        _ => Err(v
            .0
            .iter()
            .map(|f| format!("{}: {}", f.field, f.description))
            .collect::<Vec<_>>()
            .join("; ")),
    };
    events::answer(tx, tenant, events::answer_of(&note.event_id, outcome)).await
}

pub async fn list(
    r: &Fulfillment,
    tenant: &Tenant,
    req: ListMessagesRequest,
) -> Result<ListMessagesResponse, Status> {
    let mut v = Violations::new();
    if !req.subject.is_empty() {
        v.check("subject", subject(&req.subject));
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
    let id = v.check("name", parse_uuid_name(&req.name, "messages", "a message"));
    let (Some(rid), Some(id)) = (rid, id) else {
        return Err(invalid(v));
    };
    let mut tx =
        match idempotency::begin(&r.pool, DOMAIN, tenant, &rid, "MarkMessageRead", &req).await? {
            Begin::Replay(resp) => return Ok(resp),
            Begin::Tx(tx) => tx,
        };
    let m = repo::mark_read(&mut *tx, tenant, id, Utc::now())
        .await
        .map_err(db)?
        .ok_or_else(|| status::not_found(DOMAIN, "message", &req.name))?;
    let resp = MarkMessageReadResponse { message: Some(m) };
    idempotency::finish(tx, DOMAIN, tenant, &rid, resp).await
}
