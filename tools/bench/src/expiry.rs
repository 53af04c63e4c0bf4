//! Abandoned carts: N reservations of one unit of one SKU with a short
//! TTL, none confirmed, as a flash sale leaves them, all due at the same
//! moment. Reports how fast the expiry sweep gives their units back: from
//! that moment until the SKU's availability is whole again, and carts/s
//! over that time. Verifies that every unit came back and every cart
//! expired.
use crate::{load, stock};
use futures::StreamExt;
use oms_proto::inventory::{inventory_service_client::InventoryServiceClient, *};
use oms_runtime::Service;
use oms_testkit::{TestDb, authed};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Carts (reservations of one unit each).
    #[arg(long, default_value_t = 20_000)]
    carts: usize,
    /// Clients reserving at once.
    #[arg(long, default_value_t = 64)]
    clients: usize,
}

const TENANT: &str = "bench";
/// When every cart is due, after the first is made: later than making all
/// of them takes, so that the sweep starts on a full backlog.
const TTL: Duration = Duration::from_secs(10);

pub async fn run(args: Args) -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let env = [
        ("OMS_LOG", "warn".to_owned()),
        // Expiry batches run on half the pool's connections, at most 4.
        ("OMS_DATABASE_MAX_CONNECTIONS", "32".into()),
        ("OMS_SWEEP_INTERVAL_MS", "100".into()),
    ];
    let config = oms_testkit::config_with(Service::Inventory, &db, &[], &env);
    let server_rt = load::ServerRuntime::new(2, "oms-inventory")?;
    let svc = server_rt
        .spawn(oms_testkit::spawn(config, oms_inventory::run))
        .await?;
    let mut client = InventoryServiceClient::new(svc.channel());
    let stock = args.carts as i64;
    stock::one_sku(&mut client, TENANT, "SALE", stock).await?;

    let started = Instant::now();
    // Every cart is due at this moment (each TTL is what is left until
    // it, to the millisecond): the sweep faces the whole backlog at once,
    // so what is timed is how fast it expires carts, not how fast they
    // were made (carts due one TTL after each was made came due only as
    // fast as they were made).
    let due = started + TTL;
    let made: Vec<bool> = futures::stream::iter(0..args.carts)
        .map(|i| {
            let mut c = client.clone();
            async move {
                let left = due.saturating_duration_since(Instant::now());
                if left < Duration::from_millis(100) {
                    return false; // reported below: making them took too long
                }
                let req = CreateReservationRequest {
                    reservation_id: format!("cart-{i}"),
                    lines: vec![ReservationLine {
                        sku: "SALE".into(),
                        quantity: 1,
                        ..Default::default()
                    }],
                    ttl: Some(prost_types::Duration {
                        seconds: left.as_secs() as i64,
                        nanos: (left.subsec_millis() * 1_000_000) as i32,
                    }),
                    ..Default::default()
                };
                c.create_reservation(authed(TENANT, req)).await.is_ok()
            }
        })
        .buffer_unordered(args.clients)
        .collect()
        .await;
    let reserve_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        reserve_seconds < (TTL - Duration::from_millis(100)).as_secs_f64(),
        "making the carts took {reserve_seconds:.1} s, longer than their TTL"
    );
    let granted = made.iter().filter(|ok| **ok).count();
    anyhow::ensure!(
        granted == args.carts,
        "{granted} of {} carts reserved",
        args.carts
    );
    tokio::time::sleep_until(due.into()).await;
    let back = loop {
        let a = stock::available(&mut client, TENANT, "SALE")
            .await?
            .available;
        if a >= stock {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = due.elapsed().as_secs_f64();
    // Nothing given back twice: the figure stays whole, no more.
    let released = released(&mut client, args.carts).await?;
    let verified = back == stock && released == args.carts;
    println!(
        "{}",
        serde_json::json!({
            "carts": args.carts,
            "reserve_seconds": reserve_seconds,
            "expiry_seconds": seconds,
            "carts_per_s": args.carts as f64 / seconds,
            "verified": verified,
        })
    );
    anyhow::ensure!(
        verified,
        "availability {back} of {stock}; {released} of {} carts expired",
        args.carts
    );
    Ok(())
}

/// Carts whose reservation ended expired (all of them, or the run is
/// wrong), counted page by page.
async fn released(
    client: &mut InventoryServiceClient<tonic::transport::Channel>,
    carts: usize,
) -> anyhow::Result<usize> {
    let mut n = 0;
    let mut page_token = String::new();
    loop {
        let req = ListReservationsRequest {
            states: vec![ReservationState::Expired as i32],
            page_size: 1000,
            page_token,
            ..Default::default()
        };
        let resp = client.list_reservations(authed(TENANT, req)).await?;
        let resp = resp.into_inner();
        n += resp.reservations.len();
        if resp.next_page_token.is_empty() || n > carts {
            return Ok(n);
        }
        page_token = resp.next_page_token;
    }
}
