//! Recovery of the reservation gate: a tenant with every SKU stocked at
//! every node (one snapshot import) and many live reservations, on a
//! Redis of the run's own. Timed:
//! - `Reconcile` with `dry_run` while the gate is whole (the comparison
//!   alone: what an SRE's check costs);
//! - the first reservation after Redis lost its data (`FLUSHALL`): it
//!   waits for the rebuild on demand, as every change of the tenant does;
//! - `Reconcile` (rebuild and compare) on the rebuilt gate.
//!
//! Beside a raw floor measured in the same run: reading the tenant's
//! stock rows and live reservations with plain queries and writing as
//! many hash fields and records to Redis in one pipeline, the least any
//! rebuild from this record does. Verifies that the rebuilt gate has no
//! drift and every SKU's availability is its stock less what is held.
use crate::stock;
use oms_proto::inventory::{inventory_service_client::InventoryServiceClient, *};
use oms_testkit::{RedisServer, TestDb, authed};
use std::collections::BTreeMap;
use std::time::Instant;
use tonic::transport::Channel;

#[derive(clap::Args)]
pub struct Args {
    /// Nodes stocking every SKU.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// SKUs.
    #[arg(long, default_value_t = 2_000)]
    skus: usize,
    /// Live reservations (one unit each, SKUs in turn).
    #[arg(long, default_value_t = 20_000)]
    reservations: usize,
}

const TENANT: &str = "bench";
/// Units of each SKU at each node.
const UNITS: i64 = 100;
/// Clients making the reservations.
const CLIENTS: usize = 64;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let redis = RedisServer::start();
    let env = [
        ("OMS_LOG", "warn".to_owned()),
        ("OMS_REDIS_URL", redis.url()),
        ("OMS_DATABASE_MAX_CONNECTIONS", "16".into()),
    ];
    let inv = stock::inventory(&db, &env).await?;
    let channel = inv.channel.clone();
    let mut client = InventoryServiceClient::new(channel.clone());
    let (nodes, skus) = stock::names(args.nodes, args.skus);
    stocked(&mut client, &nodes, &skus).await?;
    let held = reserve(&channel, &skus, args.reservations).await?;

    let (dry_run_s, dry) = timed(reconcile(&mut client, "dry", true)).await?;
    anyhow::ensure!(dry.drifts.is_empty(), "drift before any loss: {dry:?}");
    redis.cli(&["FLUSHALL"]);
    let (first_after_loss_s, ()) = timed(async {
        let req = CreateReservationRequest {
            reservation_id: "after-loss".into(),
            lines: vec![line(&skus[0])],
            ..Default::default()
        };
        client.create_reservation(authed(TENANT, req)).await?;
        anyhow::Ok(())
    })
    .await?;
    let (reconcile_s, rebuilt) = timed(reconcile(&mut client, "full", false)).await?;
    let floor_s = raw_floor(&db, &redis).await?;

    let check = reconcile(&mut client, "check", true).await?;
    let available = stock::network_available(&mut client, TENANT, &skus).await?;
    let stocked = nodes.len() as i64 * UNITS;
    let mut want: Vec<i64> = skus.iter().map(|s| stocked - held[s]).collect();
    want[0] -= 1; // the reservation made after the loss
    let verified = check.drift_count == 0
        && check.held_total_drift_count == 0
        && check.skus_checked == skus.len() as i64
        && check.reservations_checked == args.reservations as i64 + 1
        && available == want;
    println!(
        "{}",
        serde_json::json!({
            "nodes": nodes.len(),
            "skus": skus.len(),
            "stock_rows": nodes.len() * skus.len(),
            "reservations": args.reservations,
            "reconcile_dry_run_seconds": dry_run_s,
            "first_reservation_after_loss_seconds": first_after_loss_s,
            "reconcile_seconds": reconcile_s,
            "keys_rebuilt": rebuilt.keys_rebuilt,
            "raw_floor_seconds": floor_s,
            "verified": verified,
        })
    );
    anyhow::ensure!(
        verified,
        "after the rebuild: {check:?} (drifts, SKUs and reservations checked), \
         availability {:?}… (expected {:?}…)",
        &available[..available.len().min(3)],
        &want[..want.len().min(3)]
    );
    Ok(())
}

async fn timed<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<(f64, T)> {
    let started = Instant::now();
    let out = f.await?;
    Ok((started.elapsed().as_secs_f64(), out))
}

fn line(sku: &str) -> ReservationLine {
    ReservationLine {
        sku: sku.into(),
        quantity: 1,
        ..Default::default()
    }
}

/// The nodes, the items, and `UNITS` of every SKU at every node.
async fn stocked(
    client: &mut InventoryServiceClient<Channel>,
    nodes: &[String],
    skus: &[String],
) -> anyhow::Result<()> {
    stock::catalog(client, TENANT, nodes, skus, false).await?;
    let msgs = stock::count_messages("count", nodes, skus, UNITS, "", "");
    let resp = client
        .import_stock_snapshot(authed(TENANT, futures::stream::iter(msgs)))
        .await?
        .into_inner();
    anyhow::ensure!(resp.errors.is_empty(), "count refused: {:?}", resp.errors);
    Ok(())
}

/// `n` live reservations of one unit, SKUs in turn; the units held per SKU.
async fn reserve(
    channel: &Channel,
    skus: &[String],
    n: usize,
) -> anyhow::Result<BTreeMap<String, i64>> {
    use futures::StreamExt;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let mut c = InventoryServiceClient::new(channel.clone());
            let req = CreateReservationRequest {
                reservation_id: format!("r-{i}"),
                lines: vec![line(&skus[i % skus.len()])],
                ttl: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                ..Default::default()
            };
            async move {
                c.create_reservation(authed(TENANT, req)).await?;
                Ok(())
            }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    let mut held: BTreeMap<String, i64> = skus.iter().map(|s| (s.clone(), 0)).collect();
    for i in 0..n {
        *held.entry(skus[i % skus.len()].clone()).or_default() += 1;
    }
    Ok(held)
}

async fn reconcile(
    client: &mut InventoryServiceClient<Channel>,
    id: &str,
    dry_run: bool,
) -> anyhow::Result<ReconcileResponse> {
    let req = ReconcileRequest {
        request_id: format!("reconcile-{id}"),
        dry_run,
    };
    Ok(client.reconcile(authed(TENANT, req)).await?.into_inner())
}

/// The least a rebuild from this record does, timed: the tenant's stock
/// rows and live reservations read with plain queries, and a hash field
/// per node and SKU and a record per reservation written to Redis in one
/// pipeline (under keys of its own).
async fn raw_floor(db: &TestDb, redis: &RedisServer) -> anyhow::Result<f64> {
    let mut pg = db.connect("inventory").await;
    let client = redis::Client::open(redis.url())?;
    let mut r = client.get_multiplexed_async_connection().await?;
    let started = Instant::now();
    let stock: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT node_id, sku, on_hand FROM stock WHERE tenant = $1")
            .bind(TENANT)
            .fetch_all(&mut pg)
            .await?;
    // id, SKUs, nodes, units.
    type Live = (String, Vec<String>, Vec<String>, Vec<i64>);
    let live: Vec<Live> = sqlx::query_as(
        "SELECT reservation_id, hold_skus, hold_nodes, hold_units FROM reservations
         WHERE tenant = $1 AND state IN ('active', 'confirmed')",
    )
    .bind(TENANT)
    .fetch_all(&mut pg)
    .await?;
    let mut by_sku: BTreeMap<&str, Vec<(String, i64)>> = BTreeMap::new();
    for (node, sku, units) in &stock {
        by_sku
            .entry(sku)
            .or_default()
            .push((format!("n:{node}"), *units));
    }
    let mut p = redis::pipe();
    p.atomic();
    for (sku, fields) in &by_sku {
        p.hset_multiple(format!("floor:{{bench}}:{sku}"), fields)
            .ignore();
    }
    for (id, skus, nodes, units) in &live {
        let rec = serde_json::json!({"skus": skus, "nodes": nodes, "units": units});
        p.set(format!("floor:{{bench}}:r:{id}"), rec.to_string())
            .ignore();
    }
    p.query_async::<()>(&mut r).await?;
    Ok(started.elapsed().as_secs_f64())
}
