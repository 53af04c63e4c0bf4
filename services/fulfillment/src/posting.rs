//! Posts the good units of recorded receipts to the inventory ledger as
//! receipt movements. A receipt is stored first (applied once, answered to
//! the adapter) and posted after, so an inventory outage delays stock, never
//! loses it. Each line's movement carries a request id derived from the
//! receipt, so posting twice (a retry, two replicas) records it once.
//! Damaged units are not stock: they stay on the receipt and in its
//! discrepancies. The receipt of a notice that announces a transfer in
//! transit is that transfer's delivery: its lines are posted by
//! ReceiveTransfer (what left the sending node arrives), not as new stock.
use crate::inventory::Inventory;
use crate::repo::inbound as repo;
use chrono::Utc;
use oms_kernel::{RequestId, Tenant};
use oms_proto::fulfillment::{Receipt, ReceivedLine};
use oms_proto::inventory::{
    GetTransferRequest, MovementKind, ReceiveTransferRequest, RecordMovementRequest, StockMovement,
    TransferLine,
};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::Code;

pub(crate) const BATCH: i64 = 100;

pub struct Poster {
    pub pool: PgPool,
    pub inventory: Inventory,
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
                // Receipts first: a notice is told what it still brings
                // only once its receipts are posted (`expected_inbound`).
                let receipts = self.post_receipts().await;
                let more = self.post_expected_inbound().await || receipts;
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

    /// Posts a batch of receipts; true when a full batch moved (the next
    /// one is waiting).
    async fn post_receipts(&self) -> bool {
        match repo::to_post(&self.pool, BATCH).await {
            Ok(receipts) => {
                let full = receipts.len() as i64 == BATCH;
                let mut settled = false;
                for (tenant, rc) in receipts {
                    settled |= self.post_one(&tenant, &rc).await;
                }
                full && settled
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read receipts to post");
                false
            }
        }
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
        let mut inventory = self.inventory.client(tenant);
        let transfer = match self.transfer_of(tenant, rc).await {
            Ok(t) => t,
            Err(e) => return Posted::Later(e),
        };
        let reference = if rc.asn.is_empty() {
            format!("receipts/{}", rc.receipt_id)
        } else {
            rc.asn.clone()
        };
        // Each line on its own: a line inventory refuses (an unknown SKU)
        // must not keep the others' goods, which arrived, out of stock.
        let mut refused = Vec::new();
        // A transfer's damaged units arrived too (see `post_delivery`).
        let posts = |l: &ReceivedLine| l.quantity > 0 || (transfer.is_some() && l.damaged > 0);
        for (i, l) in rc.lines.iter().enumerate().filter(|(_, l)| posts(l)) {
            let request_id =
                RequestId::derived("receipt", format!("receipt:{}:{i}", rc.receipt_id));
            let posted = match &transfer {
                Some((name, back)) => {
                    let to = Delivery {
                        name: name.as_str(),
                        back: *back,
                    };
                    post_delivery(&mut inventory, request_id, &to, rc, i, &reference).await
                }
                None => inventory
                    .record_movement(RecordMovementRequest {
                        request_id,
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
                    })
                    .await
                    .map(drop),
            };
            match posted {
                Ok(()) => {}
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

    /// The transfer the receipt's notice announces, if any, and whether the
    /// receipt is of units come back to its sending node.
    async fn transfer_of(
        &self,
        tenant: &Tenant,
        rc: &Receipt,
    ) -> Result<Option<(String, bool)>, String> {
        let Ok(id) = crate::inbound::asn_id("asn", &rc.asn) else {
            return Ok(None); // no notice (it was checked when recorded)
        };
        let asn = repo::asn(&self.pool, tenant, id, false)
            .await
            .map_err(|e| e.to_string())?;
        let Some(name) = asn.map(|a| a.transfer).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let req = GetTransferRequest { name: name.clone() };
        let back = match self.inventory.client(tenant).get_transfer(req).await {
            Ok(got) => got
                .into_inner()
                .transfer
                .is_some_and(|t| t.from_node_id == rc.node_id && t.to_node_id != rc.node_id),
            // Gone: each line's delivery is refused, and says so.
            Err(s) if s.code() == Code::NotFound => false,
            Err(s) => return Err(s.message().to_owned()),
        };
        Ok(Some((name, back)))
    }
}

/// A transfer a receipt delivers: `transfers/{id}`, and whether its units
/// came back to the sending node.
struct Delivery<'a> {
    name: &'a str,
    back: bool,
}

/// Posts line `i` of a receipt as a delivery of the transfer `name` (its
/// lot's expiry date is the transfer's, whatever the label said). Damaged
/// units arrived too: they are received, so the transfer is not left
/// waiting for them, and written off at once as damage at the node. Not
/// for a line with serial numbers, which name only its good units: its
/// damaged units stay on the way until the transfer is closed.
async fn post_delivery(
    inventory: &mut crate::inventory::Client,
    request_id: String,
    to: &Delivery<'_>,
    rc: &Receipt,
    i: usize,
    reference: &str,
) -> Result<(), tonic::Status> {
    let name = to.name;
    let l = &rc.lines[i];
    let damaged = match l.serial_numbers.is_empty() {
        true => l.damaged,
        false => 0,
    };
    let arrived = l.quantity + damaged;
    if arrived == 0 {
        return Ok(());
    }
    let delivery = ReceiveTransferRequest {
        request_id,
        name: name.to_owned(),
        lines: vec![TransferLine {
            sku: l.sku.clone(),
            lot: l.lot.clone(),
            quantity: arrived,
            serial_numbers: l.serial_numbers.clone(),
            ..Default::default()
        }],
        occur_time: rc.receive_time,
        back_to_origin: to.back,
        ..Default::default()
    };
    let got = inventory.receive_transfer(delivery).await?.into_inner();
    if damaged == 0 {
        return Ok(());
    }
    // The lot as the transfer-in recorded it.
    let lot = got
        .transfer_ins
        .first()
        .map(|m| m.lot.clone())
        .unwrap_or_default();
    let key = format!("receipt-damage:{}:{i}", rc.receipt_id);
    let write_off = RecordMovementRequest {
        request_id: RequestId::derived("receipt-damage", key),
        movement: Some(StockMovement {
            kind: MovementKind::Damage as i32,
            node_id: rc.node_id.clone(),
            sku: l.sku.clone(),
            lot,
            quantity: -damaged,
            reason: format!("damaged on arrival ({name})"),
            reference: reference.to_owned(),
            occur_time: rc.receive_time,
            ..Default::default()
        }),
    };
    inventory.record_movement(write_off).await.map(drop)
}
