//! Stock snapshot import: the counts a WMS or ERP sends, through gRPC
//! into one inventory process. Three counts of every SKU at every node,
//! each one `ImportStockSnapshot` call, timed:
//! - the first (the initial load: every row a new lot);
//! - the same count again (a periodic count that finds nothing changed);
//! - a count that lowers every figure, with reservations holding units
//!   at one node, so that rows take promised units away and the answer
//!   reports what those reservations hold beyond the stock.
//!
//! With `--lots`, items tracked by lot and expiry date, each row naming a
//! lot and its date.
//!
//! Then verifies the outcome: the on-hand the levels add up to, each
//! SKU's network availability, and one shortfall per SKU.
use crate::stock;
use oms_proto::inventory::{inventory_service_client::InventoryServiceClient, *};
use oms_testkit::{TestDb, authed};
use std::time::Instant;
use tonic::transport::Channel;

#[derive(clap::Args)]
pub struct Args {
    /// Nodes (stores) counted.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// SKUs counted at every node.
    #[arg(long, default_value_t = 200)]
    skus: usize,
    /// Items tracked by lot and expiry date: each row names a lot and
    /// its date.
    #[arg(long)]
    lots: bool,
}

const TENANT: &str = "bench";
/// Units of each SKU at each node by the first count, and by the last.
const FIRST: i64 = 100;
const LOWERED: i64 = 10;
/// Units a reservation holds of each SKU at the first node: more than the
/// lowered count leaves there.
const HELD: i64 = 30;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let inv = stock::inventory(&db, &[("OMS_LOG", "warn".to_owned())]).await?;
    let mut client = InventoryServiceClient::new(inv.channel.clone());
    let (nodes, skus) = stock::names(args.nodes, args.skus);
    stock::catalog(&mut client, TENANT, &nodes, &skus, args.lots).await?;
    let lots = args.lots;

    let first = count(&mut client, "first", &nodes, &skus, FIRST, lots).await?;
    let unchanged = count(&mut client, "unchanged", &nodes, &skus, FIRST, lots).await?;
    for sku in &skus {
        reserve(&mut client, sku, &nodes[0]).await?;
    }
    let lowered = count(&mut client, "lowered", &nodes, &skus, LOWERED, lots).await?;

    let rows = (nodes.len() * skus.len()) as i64;
    let on_hand = on_hand(&mut client).await?;
    let available = stock::network_available(&mut client, TENANT, &skus).await?;
    // Each SKU: the lowered count at every node, less what the reservation
    // holds at the first node, where it holds more than the count left (the
    // node promises none, and the shortfall holds no other node's units).
    let expected_available = (nodes.len() as i64 - 1) * LOWERED;
    let verified = first.applied == rows
        && unchanged.applied == rows
        && lowered.applied == rows
        && on_hand == rows * LOWERED
        && available.iter().all(|&a| a == expected_available)
        && lowered.shortfalls == skus.len()
        && lowered.held_beyond.iter().all(|&h| h == HELD - LOWERED);
    println!(
        "{}",
        serde_json::json!({
            "nodes": nodes.len(),
            "skus": skus.len(),
            "rows": rows,
            "lots": lots,
            "first": first.json(),
            "unchanged": unchanged.json(),
            "lowered": lowered.json(),
            "verified": verified,
        })
    );
    anyhow::ensure!(
        verified,
        "import outcome wrong: applied {}/{}/{} of {rows}, on hand {on_hand} (expected {}), \
         availability {:?} (expected {expected_available} each), shortfalls {}",
        first.applied,
        unchanged.applied,
        lowered.applied,
        rows * LOWERED,
        available.iter().take(5).collect::<Vec<_>>(),
        lowered.shortfalls
    );
    Ok(())
}

/// One import's outcome and time.
struct Counted {
    applied: i64,
    seconds: f64,
    rows: usize,
    shortfalls: usize,
    held_beyond: Vec<i64>,
}

impl Counted {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "seconds": self.seconds,
            "rows_per_s": self.rows as f64 / self.seconds,
        })
    }
}

/// Counts `units` of every SKU at every node in one import (of one lot
/// each, with `lots`).
async fn count(
    client: &mut InventoryServiceClient<Channel>,
    name: &str,
    nodes: &[String],
    skus: &[String],
    units: i64,
    lots: bool,
) -> anyhow::Result<Counted> {
    let (lot, expiry_date) = match lots {
        true => ("LOT-1", "2099-12-31"),
        false => ("", ""),
    };
    let msgs = stock::count_messages(
        &format!("count-{name}"),
        nodes,
        skus,
        units,
        lot,
        expiry_date,
    );
    let started = Instant::now();
    let resp = client
        .import_stock_snapshot(authed(TENANT, futures::stream::iter(msgs)))
        .await?
        .into_inner();
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        resp.errors.is_empty(),
        "{name} count refused rows: {:?}",
        resp.errors.iter().take(3).collect::<Vec<_>>()
    );
    Ok(Counted {
        applied: resp.rows_applied,
        seconds,
        rows: nodes.len() * skus.len(),
        shortfalls: resp.shortfalls.len(),
        held_beyond: resp
            .shortfalls
            .iter()
            .map(|s| s.held_beyond_stock)
            .collect(),
    })
}

async fn reserve(
    client: &mut InventoryServiceClient<Channel>,
    sku: &str,
    node: &str,
) -> anyhow::Result<()> {
    let req = CreateReservationRequest {
        reservation_id: format!("hold-{sku}"),
        lines: vec![ReservationLine {
            sku: sku.into(),
            quantity: HELD,
            node_id: node.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    client.create_reservation(authed(TENANT, req)).await?;
    Ok(())
}

/// The on-hand every level adds up to.
async fn on_hand(client: &mut InventoryServiceClient<Channel>) -> anyhow::Result<i64> {
    let mut total = 0;
    let mut page_token = String::new();
    loop {
        let req = ListStockLevelsRequest {
            page_size: 1000,
            page_token,
            ..Default::default()
        };
        let resp = client.list_stock_levels(authed(TENANT, req)).await?;
        let resp = resp.into_inner();
        total += resp.levels.iter().map(|l| l.on_hand).sum::<i64>();
        if resp.next_page_token.is_empty() {
            return Ok(total);
        }
        page_token = resp.next_page_token;
    }
}
