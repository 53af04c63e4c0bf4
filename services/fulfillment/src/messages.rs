//! Messages between the office and a warehouse, about a fulfillment order,
//! an ASN or a receipt. The office's message goes to the subject's node as
//! a command on the adapter stream and is delivered when the adapter
//! acknowledges that command; the warehouse's comes from its adapter as a
//! note on the stream, stored once by its event id. Either is read when
//! someone marks it so.
use crate::inbound::asn_id;
use crate::repo::{self as commands, inbound, messages as repo};
use crate::service::{DOMAIN, Fulfillment, db, invalid};
use crate::work::order_id;
use chrono::Utc;
use oms_kernel::{Paging, RequestId, Tenant, Violations, parse_name};
use oms_proto::fulfillment::{
    AdapterNote, Command, EventAck, ListMessagesRequest, ListMessagesResponse,
    MarkMessageReadRequest, MarkMessageReadResponse, SendMessageRequest, SendMessageResponse,
    command,
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

fn message_id(field: &str, name: &str) -> Result<Uuid, Violations> {
    let id = parse_name(name, "messages").map_err(|e| Violations::one(field, e))?;
    Uuid::parse_str(id)
        .map_err(|_| Violations::one(field, format!("{name:?} is not a message name")))
}

/// What a subject names: a fulfillment order, an ASN or a receipt.
enum Subject {
    Order(Uuid),
    Asn(Uuid),
    Receipt(String),
}

fn subject(field: &str, name: &str) -> Result<Subject, Violations> {
    if name.starts_with("asns/") {
        asn_id(field, name).map(Subject::Asn)
    } else if name.starts_with("fulfillmentOrders/") {
        order_id(field, name).map(Subject::Order)
    } else if name.starts_with("receipts/") {
        parse_name(name, "receipts")
            .map(|id| Subject::Receipt(id.to_owned()))
            .map_err(|e| Violations::one(field, e))
    } else {
        Err(Violations::one(
            field,
            "`fulfillmentOrders/{id}`, `asns/{id}` or `receipts/{id}`",
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
        Subject::Asn(id) => inbound::asn(&mut *tx, tenant, *id)
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
    repo::insert(&mut tx, tenant, id, &m, seq, None)
        .await
        .map_err(db)?;
    let resp = SendMessageResponse { message: Some(m) };
    let done = idempotency::finish(tx, DOMAIN, tenant, &rid, resp).await;
    r.waker.wake();
    done
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
    let eid = note.event_id.clone();
    let answer = |error: String| EventAck {
        event_id: eid.clone(),
        accepted: error.is_empty(),
        error,
    };
    if eid.trim().is_empty() || eid.len() > 200 {
        return Ok(answer(
            "event_id is required (at most 200 characters)".into(),
        ));
    }
    let mut tx = r.pool.begin().await.map_err(db)?;
    if let Some(ack) = commands::event_acks(&mut *tx, tenant, &[eid.as_str()])
        .await
        .map_err(db)?
        .remove(&eid)
    {
        return Ok(ack);
    }
    let mut m = note.message.unwrap_or_default();
    let mut v = Violations::new();
    check_body(&mut v, "message.body", &m.body);
    let about = match subject("message.subject", &m.subject) {
        Ok(s) => Some(s),
        Err(e) => {
            v.0.extend(e.0);
            None
        }
    };
    let now = Utc::now();
    let error = match about {
        _ if !v.is_empty() => {
            v.0.iter()
                .map(|f| format!("{}: {}", f.field, f.description))
                .collect::<Vec<_>>()
                .join("; ")
        }
        None => String::new(),
        Some(about) => match node_of(&mut tx, tenant, &about).await? {
            Some(node) if nodes.contains(&node) => {
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
                String::new()
            }
            Some(node) => format!(
                "{} is at node {node}, not served by this adapter",
                m.subject
            ),
            None => format!("unknown subject {:?}", m.subject),
        },
    };
    let ack = answer(error);
    commands::insert_event_acks(&mut tx, tenant, std::slice::from_ref(&ack), now)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(ack)
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
