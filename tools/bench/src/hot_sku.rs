//! Hot SKU: N clients reserve one unit each of a single SKU as fast as
//! they can. Reports reservations/s and latency, then verifies that no unit
//! was oversold: grants counted by the clients, the holds in Postgres and
//! the availability left must agree with the stock.
use hdrhistogram::Histogram;
use oms_proto::common::NodeKind;
use oms_proto::inventory::{inventory_service_client::InventoryServiceClient, *};
use oms_runtime::Service;
use oms_testkit::{TestDb, authed};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::{Code, Request};

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Units on hand; smaller than what the clients ask to check sell-out.
    #[arg(long, default_value_t = 1_000_000)]
    stock: i64,
}

const TENANT: &str = "bench";

pub async fn run(args: Args) -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let config = oms_testkit::config_with(
        Service::Inventory,
        &db,
        &[],
        &[
            ("OMS_LOG", "warn".into()),
            ("OMS_DATABASE_MAX_CONNECTIONS", "24".into()),
            ("OMS_SWEEP_INTERVAL_MS", "1000".into()),
        ],
    );
    // The service gets its own runtime (threads), as it would in its own
    // process: the load generator's tasks do not queue in front of it.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("oms-inventory")
        .enable_all()
        .build()?;
    let svc = server_rt
        .spawn(oms_testkit::spawn(config, oms_inventory::run))
        .await?;
    let mut admin = InventoryServiceClient::new(svc.channel());
    admin
        .create_node(authed(
            TENANT,
            CreateNodeRequest {
                request_id: "n".into(),
                node: Some(Node {
                    node_id: "DC1".into(),
                    kind: NodeKind::Warehouse as i32,
                    enabled: true,
                    ..Default::default()
                }),
            },
        ))
        .await?;
    admin
        .create_item(authed(
            TENANT,
            CreateItemRequest {
                request_id: "i".into(),
                item: Some(Item {
                    sku: "HOT".into(),
                    ..Default::default()
                }),
            },
        ))
        .await?;
    admin
        .record_movement(authed(
            TENANT,
            RecordMovementRequest {
                request_id: "r".into(),
                movement: Some(StockMovement {
                    kind: MovementKind::Receipt as i32,
                    node_id: "DC1".into(),
                    sku: "HOT".into(),
                    quantity: args.stock,
                    ..Default::default()
                }),
            },
        ))
        .await?;

    let channels: Vec<_> = (0..args.connections.max(1))
        .map(|_| svc.channel())
        .collect();
    let token = format!("Bearer {}", oms_testkit::token(TENANT));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|c| {
            let mut client = InventoryServiceClient::new(channels[c % channels.len()].clone());
            let (stop, token) = (stop.clone(), token.clone());
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new(3).unwrap();
                let (mut granted, mut refused, mut failed) = (0u64, 0u64, 0u64);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let mut req = Request::new(CreateReservationRequest {
                        reservation_id: format!("c{c}-{n}"),
                        lines: vec![ReservationLine {
                            sku: "HOT".into(),
                            quantity: 1,
                            ..Default::default()
                        }],
                        ..Default::default()
                    });
                    req.metadata_mut()
                        .insert("authorization", token.parse().unwrap());
                    let t = Instant::now();
                    let r = client.create_reservation(req).await;
                    hist.record(t.elapsed().as_micros() as u64).unwrap();
                    match r {
                        Ok(_) => granted += 1,
                        Err(e) if e.code() == Code::FailedPrecondition => refused += 1,
                        Err(_) => failed += 1,
                    }
                }
                (hist, granted, refused, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let (mut granted, mut refused, mut failed) = (0u64, 0u64, 0u64);
    for t in tasks {
        let (h, g, r, f) = t.await?;
        hist.add(h).unwrap();
        granted += g;
        refused += r;
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Verify: the record, the availability and the clients agree.
    let mut conn = db.connect("inventory").await;
    let held: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(held), 0)::bigint FROM holds WHERE tenant = $1 AND sku = 'HOT'",
    )
    .bind(TENANT)
    .fetch_one(&mut conn)
    .await?;
    let avail = admin
        .get_availability(authed(
            TENANT,
            GetAvailabilityRequest {
                skus: vec!["HOT".into()],
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .availabilities
        .remove(0);
    let oversold = (held - args.stock).max(0);
    let consistent = held == granted as i64 && avail.available == args.stock - held;
    println!(
        "{}",
        serde_json::json!({
            "scenario": "hot_sku_reserve",
            "clients": args.clients,
            "connections": args.connections,
            "seconds": args.seconds,
            "reservations_per_s": (granted + refused) as f64 / elapsed,
            "granted": granted,
            "refused": refused,
            "failed": failed,
            "p50_ms": hist.value_at_quantile(0.50) as f64 / 1000.0,
            "p99_ms": hist.value_at_quantile(0.99) as f64 / 1000.0,
            "stock": args.stock,
            "held_in_record": held,
            "available_left": avail.available,
            "oversold": oversold,
            "consistent": consistent,
        })
    );
    drop(svc);
    server_rt.shutdown_background();
    anyhow::ensure!(
        oversold == 0 && consistent && failed == 0,
        "verification failed"
    );
    Ok(())
}
