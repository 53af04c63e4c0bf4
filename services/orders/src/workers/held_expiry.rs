//! An order on hold while its stock is reserved, unconfirmed (awaiting
//! payment, or held by a person or for review): its reservation expires
//! after the saga's TTL and inventory takes its units back. A
//! `held-expiry` step watches for that: it reads the reservation's expiry
//! time and waits for it; once the reservation has expired, the order's
//! history says so at that moment, and the order, still on hold, is held
//! from CREATED under its next reservation name, so that it reserves again
//! when its holds go. Before 2026-12-04 nothing was said until the hold
//! went (the route step then found the expiry). An order not on hold needs
//! no watch: its route step finds the expiry itself, so releasing the hold
//! makes the watch due, and it ends.
use super::saga::{ACTOR, Saga, lock_for_step, next_reservation, reservation_name};
use crate::changes::{Happened, record};
use crate::domain::{OrderState, lifecycle};
use crate::repo::{self, saga::Step};
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::inventory::{GetReservationRequest, ReservationState};
use oms_proto::orders::{OrderUpdated, order_event};
use oms_runtime::time::from_timestamp;
use sqlx::PgConnection;
use tonic::Code;
use uuid::Uuid;

/// How long after its expiry time the reservation is looked at: inventory's
/// sweep gives the units back within seconds of it.
const AFTER_EXPIRY: chrono::Duration = chrono::Duration::seconds(30);

/// Watches the reservation of `order_id`, held from RESERVED, from `at`
/// (now, when its expiry is not known here). A watch already there stays.
pub(crate) async fn watch(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    repo::saga::schedule(tx, tenant, order_id, repo::saga::HELD_EXPIRY, &[], at).await
}

impl Saga {
    pub(crate) async fn held_expiry(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let Some((mut o, held_from)) = lock_for_step(tx, tenant, s).await? else {
            return Ok(());
        };
        let from = lifecycle::state(&o);
        if from != OrderState::OnHold || held_from != Some(OrderState::Reserved) {
            // Released (its route step confirms or finds the expiry),
            // cancelled, or no longer reserved.
            repo::saga::done(tx, s).await?;
            return Ok(());
        }
        let name = reservation_name(&o);
        let asked = GetReservationRequest { name: name.clone() };
        let r = match self.peers.inventory(tenant).get_reservation(asked).await {
            Ok(r) => r.into_inner().reservation.unwrap_or_default(),
            // Gone from the record (long finished): nothing to watch.
            Err(st) if st.code() == Code::NotFound => {
                repo::saga::done(tx, s).await?;
                return Ok(());
            }
            Err(st) => return self.retry_failed(tx, s, &st).await,
        };
        match r.state() {
            ReservationState::Active => {
                let expires = r.expire_time.as_ref().and_then(from_timestamp);
                let at = expires.unwrap_or_default().max(Utc::now()) + AFTER_EXPIRY;
                repo::saga::wait(tx, s, "reservation not expired yet", at).await?;
            }
            ReservationState::Expired => {
                let next = next_reservation(&o);
                o.reservation = next.clone();
                let why = format!(
                    "{name} expired unconfirmed while the order was on hold: its units went \
                     back to stock; it reserves again as {next} once its holds go"
                );
                let happened = Happened {
                    kind: order_event::Kind::Updated(OrderUpdated {
                        paths: vec!["reservation".into()],
                        reason: why.clone(),
                    }),
                    reason: why,
                };
                let held_from = Some(OrderState::Created);
                record(
                    tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                )
                .await?;
                repo::saga::done(tx, s).await?;
            }
            // Confirmed, released or consumed: it no longer expires.
            _ => repo::saga::done(tx, s).await?,
        }
        Ok(())
    }
}
