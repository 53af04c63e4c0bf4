//! Reservations: created through a group-commit writer (`create`: many
//! per Postgres transaction and one gate script per tenant, so a hot SKU
//! is not bound by commit latency), changed one at a time (`change`:
//! confirm, release, consume, extend, expire), their lines checked alike
//! either way (`lines`), expired and deleted by the sweep (`sweep`), and
//! read here.
mod change;
mod create;
mod lines;
mod sweep;

pub use change::{confirm, consume, extend, release};
pub use create::{STREAM_IN_FLIGHT, Writer, create};
pub use sweep::start_sweeper;

use super::Inventory;
use crate::domain::{check_node_id, check_sku};
use crate::error::{Error, Result};
use crate::repo;
use chrono::{DateTime, Utc};
use oms_kernel::{Paging, Tenant, Violations, parse_name};
use oms_proto::inventory::*;

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

/// Where units are held, for people: a hold not yet at a node is held in
/// the network.
fn place(node: &str) -> String {
    if node.is_empty() {
        "in the network (no node yet)".into()
    } else {
        format!("at nodes/{node}")
    }
}
