//! Posts the good units of recorded receipts to the inventory ledger as
//! receipt movements. A receipt is stored first (applied once, answered to
//! the adapter) and posted after, so an inventory outage delays stock, never
//! loses it. Each line's movement carries a request id derived from the
//! receipt, so posting twice (a retry, two replicas) records it once.
//! Damaged units are not stock: they stay on the receipt and in its
//! discrepancies.
use crate::repo::inbound as repo;
use chrono::Utc;
use oms_kernel::{RequestId, Tenant};
use oms_proto::fulfillment::Receipt;
use oms_proto::inventory::{
    MovementKind, RecordMovementRequest, StockMovement,
    inventory_service_client::InventoryServiceClient,
};
use oms_runtime::{auth::TokenIssuer, client::Outbound};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

const ACTOR: &str = "service:fulfillment";
const BATCH: i64 = 100;

pub struct Poster {
    pub pool: PgPool,
    pub inventory: Channel,
    pub issuer: TokenIssuer,
    /// Signalled when a receipt was recorded.
    pub wake: Arc<Notify>,
}

/// How posting one receipt ended.
enum Posted {
    Done,
    /// Inventory will never take these lines (unknown SKU or node), each
    /// with why; the others are posted. Recorded on the receipt for people
    /// to see.
    Never(String),
    /// Try again later (inventory unreachable or failing).
    Later(String),
}

impl Poster {
    /// Posts until `shutdown`: when woken, and every `every` for what
    /// failed before.
    pub fn start(self, every: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            loop {
                let more = match repo::to_post(&self.pool, BATCH).await {
                    Ok(receipts) => {
                        let full = receipts.len() as i64 == BATCH;
                        let mut settled = false;
                        for (tenant, rc) in receipts {
                            settled |= self.post_one(&tenant, &rc).await;
                        }
                        // A full batch that moved: the next one is waiting.
                        full && settled
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read receipts to post");
                        false
                    }
                };
                if more {
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    /// Posts one receipt; true when it is settled (posted or never
    /// postable) and leaves the queue.
    async fn post_one(&self, tenant: &str, rc: &Receipt) -> bool {
        let Ok(t) = Tenant::parse(tenant) else {
            return false;
        };
        let error = match self.post(&t, rc).await {
            Posted::Done => None,
            Posted::Never(why) => {
                tracing::warn!(receipt = %rc.receipt_id, %why, "receipt cannot be posted to inventory");
                Some(why)
            }
            Posted::Later(why) => {
                tracing::info!(receipt = %rc.receipt_id, %why, "receipt posting retried later");
                return false;
            }
        };
        match repo::mark_posted(&self.pool, &t, &rc.receipt_id, error.as_deref(), Utc::now()).await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not mark a receipt posted; it is posted again (once)");
                false
            }
        }
    }

    async fn post(&self, tenant: &Tenant, rc: &Receipt) -> Posted {
        let mut inventory = InventoryServiceClient::with_interceptor(
            self.inventory.clone(),
            Outbound::for_tenant(&self.issuer, tenant, ACTOR),
        );
        let reference = if rc.asn.is_empty() {
            format!("receipts/{}", rc.receipt_id)
        } else {
            rc.asn.clone()
        };
        // Each line on its own: a line inventory refuses (an unknown SKU)
        // must not keep the others' goods, which arrived, out of stock.
        let mut refused = Vec::new();
        for (i, l) in rc.lines.iter().enumerate().filter(|(_, l)| l.quantity > 0) {
            let req = RecordMovementRequest {
                request_id: RequestId::derived("receipt", format!("receipt:{}:{i}", rc.receipt_id)),
                movement: Some(StockMovement {
                    kind: MovementKind::Receipt as i32,
                    node_id: rc.node_id.clone(),
                    sku: l.sku.clone(),
                    lot: l.lot.clone(),
                    expiry_date: l.expiry_date.clone(),
                    serial_numbers: l.serial_numbers.clone(),
                    quantity: l.quantity,
                    reason: "received".into(),
                    reference: reference.clone(),
                    occur_time: rc.receive_time,
                    ..Default::default()
                }),
            };
            match inventory.record_movement(req).await {
                Ok(_) => {}
                Err(s)
                    if matches!(
                        s.code(),
                        Code::InvalidArgument
                            | Code::NotFound
                            | Code::FailedPrecondition
                            | Code::PermissionDenied
                    ) =>
                {
                    refused.push(format!("line {i} ({}): {}", l.sku, s.message()));
                }
                Err(s) => return Posted::Later(s.message().to_owned()),
            }
        }
        if refused.is_empty() {
            Posted::Done
        } else {
            Posted::Never(refused.join("; "))
        }
    }
}
