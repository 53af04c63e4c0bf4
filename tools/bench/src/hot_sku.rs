//! Hot SKU: N clients reserve one unit each of a single SKU as fast as
//! they can, first by unary calls, then each over its own stream (the same
//! concurrency: one reservation at a time per client). Reports
//! reservations/s and latency of both, then verifies that no unit
//! was oversold: grants counted by the clients, the holds in Postgres and
//! the availability left must agree with the stock. Then measures the
//! ceiling of any unary call on this machine (a no-op through the same
//! server, clients and connections) to read the figure against.
use crate::load::{self, Outcome};
use crate::stock;
use oms_proto::inventory::{inventory_service_client::InventoryServiceClient, *};
use oms_runtime::Service;
use oms_testkit::{RedisServer, TestDb};
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, transport::Channel};

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
    /// Runs the service on a Redis of its own with this many replicas,
    /// every gate change waiting for all of them (`OMS_REDIS_MIN_REPLICAS`);
    /// unset, on the shared Redis without waiting. 0 and 1 in turn measure
    /// what the wait costs.
    #[arg(long)]
    redis_replicas: Option<u32>,
    /// Serves over mutual TLS (a test CA's certificates, every client
    /// showing one), as production does: run with and without it to read
    /// what TLS costs.
    #[arg(long)]
    tls: bool,
}

const TENANT: &str = "bench";

pub async fn run(args: Args) -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let mut env = vec![
        ("OMS_LOG", "warn".to_owned()),
        ("OMS_DATABASE_MAX_CONNECTIONS", "24".into()),
        ("OMS_SWEEP_INTERVAL_MS", "1000".into()),
    ];
    // Killed when the run ends.
    let mut redis = vec![];
    if let Some(n) = args.redis_replicas {
        let master = RedisServer::start();
        env.push(("OMS_REDIS_URL", master.url()));
        env.push(("OMS_REDIS_MIN_REPLICAS", n.to_string()));
        redis.extend((0..n).map(|_| master.replica()));
        redis.push(master);
    }
    // Kept until the run ends: its directory holds the certificates.
    let pki = args.tls.then(|| oms_testkit::pki::Pki::new("bench CA"));
    if let Some(pki) = &pki {
        env.extend(pki.service_env("inventory"));
    }
    let config = oms_testkit::config_with(Service::Inventory, &db, &[], &env);
    // The service gets its own runtime (threads), as it would in its own
    // process: the load generator's tasks do not queue in front of it.
    let server_rt = load::ServerRuntime::new(2, "oms-inventory")?;
    let svc = server_rt
        .spawn(oms_testkit::spawn(config, oms_inventory::run))
        .await?;
    let mut admin = InventoryServiceClient::new(svc.channel());
    stock::one_sku(&mut admin, TENANT, "HOT", args.stock).await?;

    let channels: Vec<_> = (0..args.connections.max(1))
        .map(|_| svc.channel())
        .collect();
    let token = format!("Bearer {}", oms_testkit::token(TENANT));
    let unary = unary_phase(&channels, &token, &args).await;
    let stream = stream_phase(
        &channels,
        &token,
        &args,
        Code::FailedPrecondition,
        |c, n| stock::one_unit("HOT", format!("s{c}-{n}")),
    )
    .await;
    let granted = unary.ok + stream.ok;
    let failed = unary.failed + stream.failed;

    // Verify: the record, the availability and the clients agree.
    let mut conn = db.connect("inventory").await;
    let held: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(held), 0)::bigint FROM holds WHERE tenant = $1 AND sku = 'HOT'",
    )
    .bind(TENANT)
    .fetch_one(&mut conn)
    .await?;
    // Timed: with every reservation of the run live, the read must not
    // grow with them.
    let read_started = std::time::Instant::now();
    let avail = stock::available(&mut admin, TENANT, "HOT").await?;
    let availability_read_ms = read_started.elapsed().as_secs_f64() * 1000.0;
    let oversold = (held - args.stock).max(0);
    let consistent = held == granted as i64 && avail.available == args.stock - held;
    let ceiling = noop_ceiling(&channels, args.clients, args.seconds).await;
    // The cheapest message a stream answers: one refused at validation (no
    // lines), nothing stored.
    let stream_ceiling = stream_phase(&channels, &token, &args, Code::InvalidArgument, |c, n| {
        CreateReservationRequest {
            reservation_id: format!("x{c}-{n}"),
            ..Default::default()
        }
    })
    .await;
    let figures = |r: &load::Report| {
        serde_json::json!({
            "reservations_per_s": (r.ok + r.refused) as f64 / r.seconds,
            "granted": r.ok,
            "refused": r.refused,
            "failed": r.failed,
            "p50_ms": r.ms(0.50),
            "p99_ms": r.ms(0.99),
            "cpu_us_per_reservation": r.cpu_us_per_call(),
            "host_steal_share": r.steal_share,
        })
    };
    println!(
        "{}",
        serde_json::json!({
            "scenario": "hot_sku_reserve",
            "redis_replicas": args.redis_replicas,
            "tls": args.tls,
            "clients": args.clients,
            "connections": args.connections,
            "seconds": args.seconds,
            "unary": figures(&unary),
            "stream": figures(&stream),
            "stock": args.stock,
            "held_in_record": held,
            "available_left": avail.available,
            "availability_read_ms": availability_read_ms,
            "oversold": oversold,
            "consistent": consistent,
            "grpc_noop_calls_per_s": ceiling,
            "stream_refused_at_validation_per_s": stream_ceiling.refused as f64 / stream_ceiling.seconds,
        })
    );
    drop(svc);
    anyhow::ensure!(
        oversold == 0 && consistent && failed == 0,
        "verification failed"
    );
    Ok(())
}

/// Each client calls CreateReservation, one call at a time.
async fn unary_phase(channels: &[Channel], token: &str, args: &Args) -> load::Report {
    load::drive(args.clients, args.seconds, |c| {
        let client = InventoryServiceClient::new(channels[c % channels.len()].clone());
        let token = token.to_owned();
        move |n| {
            let mut client = client.clone();
            let req = load::with_token(stock::one_unit("HOT", format!("u{c}-{n}")), &token);
            async move {
                match client.create_reservation(req).await {
                    Ok(_) => Outcome::Ok,
                    Err(e) if e.code() == Code::FailedPrecondition => Outcome::Refused,
                    Err(_) => Outcome::Failed,
                }
            }
        }
    })
    .await
}

/// Each client opens one StreamReservations stream and sends one
/// reservation at a time on it, waiting for each answer: the same
/// concurrency as the unary phase, without the per-call cost. Answers
/// with the `refusal` code count as refused, any other error as failed.
async fn stream_phase(
    channels: &[Channel],
    token: &str,
    args: &Args,
    refusal: Code,
    make: fn(usize, u64) -> CreateReservationRequest,
) -> load::Report {
    type Open = (
        tokio::sync::mpsc::Sender<StreamReservationsRequest>,
        tonic::Streaming<StreamReservationsResponse>,
    );
    load::drive(args.clients, args.seconds, |c| {
        let client = InventoryServiceClient::new(channels[c % channels.len()].clone());
        let token = token.to_owned();
        let open: Arc<Mutex<Option<Open>>> = Arc::default();
        move |n| {
            let (mut client, token, open) = (client.clone(), token.clone(), open.clone());
            async move {
                let mut open = open.lock().await;
                if open.is_none() {
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    let req = load::with_token(ReceiverStream::new(rx), &token);
                    match client.stream_reservations(req).await {
                        Ok(answers) => *open = Some((tx, answers.into_inner())),
                        Err(_) => return Outcome::Failed,
                    }
                }
                let Some((tx, answers)) = open.as_mut() else {
                    return Outcome::Failed;
                };
                let msg = StreamReservationsRequest {
                    reservation: Some(make(c, n)),
                    ..Default::default()
                };
                if tx.send(msg).await.is_err() {
                    return Outcome::Failed;
                }
                match answers.message().await {
                    Ok(Some(a)) => match a.status.map(|s| s.code).unwrap_or_default() {
                        0 => Outcome::Ok,
                        c if c == refusal as i32 => Outcome::Refused,
                        _ => Outcome::Failed,
                    },
                    _ => Outcome::Failed,
                }
            }
        }
    })
    .await
}

/// Calls/s of the cheapest unary call the same server answers (the health
/// check: no auth, no storage) from the same clients over the same
/// connections: what HTTP/2, tonic and the server's layers cost on this
/// machine with nothing behind them, the ceiling of any unary RPC here.
async fn noop_ceiling(channels: &[Channel], clients: usize, seconds: u64) -> f64 {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let report = load::drive(clients, seconds, |c| {
        let client = HealthClient::new(channels[c % channels.len()].clone());
        move |_| {
            let mut client = client.clone();
            async move {
                match client.check(HealthCheckRequest::default()).await {
                    Ok(_) => Outcome::Ok,
                    Err(_) => Outcome::Failed,
                }
            }
        }
    })
    .await;
    report.ok as f64 / report.seconds
}
