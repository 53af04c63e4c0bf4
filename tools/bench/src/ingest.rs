//! Ingest: N clients submit canonical orders of three lines through gRPC
//! (ingest → orders, each order committed before the answer). Reports
//! orders/s and latency (after a 2 s warm-up and ANALYZE), then checks
//! every accepted order is stored once.
use crate::load::{self, Outcome};
use oms_proto::common::{DeliveryMethod, Money};
use oms_proto::ingest::{ingest_service_client::IngestServiceClient, *};
use oms_proto::orders::{Order, OrderLine};
use oms_runtime::Service;
use oms_testkit::{TestDb, authed};
use tokio::net::TcpListener;

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

const TENANT: &str = "bench";

fn order(phase: &str, client: usize, n: u64) -> Order {
    let line = |sku: &str, q: i64| OrderLine {
        sku: sku.into(),
        quantity: q,
        unit_price: Some(Money {
            currency_code: "EUR".into(),
            amount_minor: 1299,
        }),
        ..Default::default()
    };
    Order {
        channel_order_id: format!("{phase}{client}-{n}"),
        currency_code: "EUR".into(),
        delivery_method: DeliveryMethod::Pickup as i32,
        pickup_node_id: "STORE-1".into(),
        lines: vec![line("A", 1), line("B", 2), line("C", 1)],
        ..Default::default()
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let orders_l = TcpListener::bind("127.0.0.1:0").await?;
    let ingest_l = TcpListener::bind("127.0.0.1:0").await?;
    let peers = [
        (Service::Orders, orders_l.local_addr()?),
        (Service::Ingest, ingest_l.local_addr()?),
    ];
    let settings = [
        ("OMS_LOG", "warn".to_string()),
        ("OMS_DATABASE_MAX_CONNECTIONS", "16".to_string()),
        // Placement would call an inventory that is not part of this scenario.
        ("OMS_SWEEP_INTERVAL_MS", "600000".to_string()),
    ];
    let orders_cfg = oms_testkit::config_with(Service::Orders, &db, &peers, &settings);
    let ingest_cfg = oms_testkit::config_with(Service::Ingest, &db, &peers, &settings);
    let orders = oms_testkit::spawn_isolated(orders_l, orders_cfg, oms_orders::run).await;
    let ingest = oms_testkit::spawn_isolated(ingest_l, ingest_cfg, oms_ingest::run).await;
    let mut admin = IngestServiceClient::new(ingest.channel());
    admin
        .create_channel(authed(
            TENANT,
            CreateChannelRequest {
                request_id: "pos".into(),
                channel: Some(Channel {
                    channel_id: "pos".into(),
                    kind: ChannelKind::Pos as i32,
                    display_name: "POS".into(),
                    enabled: true,
                    ..Default::default()
                }),
            },
        ))
        .await?;

    let channels: Vec<_> = (0..args.connections.max(1))
        .map(|_| ingest.channel())
        .collect();
    let token = format!("Bearer {}", oms_testkit::token(TENANT));
    let submit = |phase: &'static str, seconds| {
        let (channels, token) = (&channels, &token);
        load::drive(args.clients, seconds, move |c| {
            let client = IngestServiceClient::new(channels[c % channels.len()].clone());
            let token = token.clone();
            move |n| {
                let mut client = client.clone();
                let req = load::with_token(
                    SubmitOrderRequest {
                        request_id: format!("{phase}{c}-{n}"),
                        channel: "channels/pos".into(),
                        order: Some(order(phase, c, n)),
                    },
                    &token,
                );
                async move {
                    match client.submit_order(req).await {
                        Ok(_) => Outcome::Ok,
                        Err(_) => Outcome::Failed,
                    }
                }
            }
        })
    };
    let warm_up = submit("w", 2).await;
    load::analyze(&db).await?;
    let report = submit("r", args.seconds).await;
    let (ok, failed) = (report.ok, report.failed + warm_up.failed);
    let all = (ok + warm_up.ok) as i64;
    let mut conn = db.connect("orders").await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&mut conn)
        .await?;
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM order_history")
        .fetch_one(&mut conn)
        .await?;
    println!(
        "{}",
        serde_json::json!({
            "scenario": "ingest_orders",
            "clients": args.clients,
            "connections": args.connections,
            "seconds": args.seconds,
            "orders_per_s": ok as f64 / report.seconds,
            "accepted": ok,
            "failed": failed,
            "p50_ms": report.ms(0.50),
            "p99_ms": report.ms(0.99),
            "host_steal_share": report.steal_share,
            "stored": stored,
            "consistent": stored == all && lines == stored,
        })
    );
    orders.crash().await;
    ingest.crash().await;
    anyhow::ensure!(stored == all && failed == 0, "verification failed");
    Ok(())
}
