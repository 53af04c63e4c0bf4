//! Fulfillment: status events through one fulfillment process, and the
//! time from releasing work to the adapter acknowledging it.
//!
//! Events: released fulfillment orders are seeded straight into the
//! fulfillment schema; `adapters` adapter streams (each serving its own
//! nodes) walk every order accepted → picking → packed → shipped →
//! delivered, keeping up to `inflight` events unanswered per stream, orders
//! interleaved as a busy warehouse would report them. Every event is a
//! real state change (none is a repeat). Reports events/s and the time from
//! sending an event to its answer, then verifies in Postgres that every
//! order walked all the way.
//!
//! Release to acknowledge: an adapter connected to one node acknowledges
//! each command as it arrives while `release_clients` clients create and
//! release fulfillment orders through gRPC; the time runs from the start
//! of the Release call to the adapter's acknowledgement.
use crate::load::{self, Outcome};
use hdrhistogram::Histogram;
use oms_proto::fulfillment::{
    command::Kind as Cmd, connect_adapter_request::Message as In,
    connect_adapter_response::Message as Out, status_event::Kind as Ev,
};
use oms_proto::fulfillment::{fulfillment_service_client::FulfillmentServiceClient, *};
use oms_runtime::Service;
use oms_testkit::{TestDb, authed};
use prost::Message as _;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use uuid::Uuid;

#[derive(clap::Args)]
pub struct Args {
    /// Adapter streams reporting at once (each serves its own nodes).
    #[arg(long, default_value_t = 4)]
    adapters: usize,
    /// Events sent ahead of their answers, per stream.
    #[arg(long, default_value_t = 2000)]
    inflight: usize,
    /// Fulfillment orders seeded (five events each).
    #[arg(long, default_value_t = 60_000)]
    orders: usize,
    /// Orders reported on together (each step for all of them, then the next).
    #[arg(long, default_value_t = 1000)]
    chunk: usize,
    /// Seconds to measure each part, at most.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Clients releasing work in the latency part.
    #[arg(long, default_value_t = 4)]
    release_clients: usize,
}

const TENANT: &str = "bench";

pub async fn run(args: Args) -> anyhow::Result<()> {
    let db = TestDb::new().await;
    let config = oms_testkit::config_with(
        Service::Fulfillment,
        &db,
        &[],
        &[
            ("OMS_LOG", "warn".into()),
            ("OMS_DATABASE_MAX_CONNECTIONS", "24".into()),
        ],
    );
    // The service runs on its own threads, as in its own process.
    let server_rt = load::ServerRuntime::new(2, "oms-fulfillment")?;
    let svc = server_rt
        .spawn(oms_testkit::spawn(config, oms_fulfillment::run))
        .await?;
    let events = events(&args, &db, svc.channel()).await?;
    let release = release_to_ack(&args, svc.channel()).await?;
    println!(
        "{}",
        serde_json::json!({ "events": events, "release_to_ack": release })
    );
    server_rt.spawn(svc.stop()).await??;
    Ok(())
}

fn node(adapter: usize) -> String {
    format!("N{adapter}")
}

/// Seeds `n` released orders per adapter node, straight into the schema.
async fn seed(db: &TestDb, adapters: usize, n: usize) -> anyhow::Result<Vec<Vec<String>>> {
    let mut conn = db.connect("fulfillment").await;
    let now = chrono::Utc::now();
    let mut names = vec![Vec::new(); adapters];
    let per = n / adapters;
    for (a, names) in names.iter_mut().enumerate() {
        for start in (0..per).step_by(5000) {
            let count = (per - start).min(5000);
            let mut ids = Vec::with_capacity(count);
            let mut orders = Vec::with_capacity(count);
            let mut docs = Vec::with_capacity(count);
            for _ in 0..count {
                let id = Uuid::now_v7();
                let order = format!("orders/{}", Uuid::now_v7());
                let fo = FulfillmentOrder {
                    name: format!("fulfillmentOrders/{id}"),
                    fulfillment_order_id: id.to_string(),
                    order: order.clone(),
                    node_id: node(a),
                    state: FulfillmentState::Released as i32,
                    lines: (1..=3)
                        .map(|l| FulfillmentLine {
                            line_id: format!("L{l}"),
                            sku: format!("SKU-{l}"),
                            quantity: l,
                            ..Default::default()
                        })
                        .collect(),
                    carrier_service: "ups_ground".into(),
                    ..Default::default()
                };
                names.push(fo.name.clone());
                ids.push(id);
                orders.push(order);
                docs.push(fo.encode_to_vec());
            }
            sqlx::query(
                "INSERT INTO fulfillment_orders
                   (tenant, id, order_name, node_id, state, doc, create_time, update_time)
                 SELECT $1, id, o, $2, 'released', doc, $6, $6
                 FROM UNNEST($3::uuid[], $4::text[], $5::bytea[]) AS x(id, o, doc)",
            )
            .bind(TENANT)
            .bind(node(a))
            .bind(&ids)
            .bind(&orders)
            .bind(&docs)
            .bind(now)
            .execute(&mut conn)
            .await?;
        }
    }
    Ok(names)
}

/// The event of step `step` (0..5) for `fo` at `node`.
fn event(step: usize, node: &str, fo: &str) -> StatusEvent {
    let kind = match step {
        0 => Ev::Accepted(OrderAccepted {}),
        1 => Ev::Picking(PickingStarted {}),
        2 => Ev::Packed(OrderPacked {}),
        3 => Ev::Shipped(OrderShipped {
            shipment: Some(Shipment {
                carrier: "UPS".into(),
                tracking_number: format!("1Z{fo}"),
                lines: (1..=3)
                    .map(|l| ShippedLine {
                        line_id: format!("L{l}"),
                        sku: format!("SKU-{l}"),
                        quantity: l,
                        ..Default::default()
                    })
                    .collect(),
                ship_time: None,
            }),
        }),
        _ => Ev::Delivered(OrderDelivered {
            tracking_number: format!("1Z{fo}"),
        }),
    };
    StatusEvent {
        event_id: format!("{fo}/{step}"),
        node_id: node.to_owned(),
        fulfillment_order: fo.to_owned(),
        occur_time: None,
        kind: Some(kind),
    }
}

/// One adapter's stream: a sender for requests and the responses.
async fn open(
    channel: Channel,
    adapter: &str,
    nodes: &[String],
    last: i64,
) -> anyhow::Result<(
    mpsc::Sender<ConnectAdapterRequest>,
    tonic::Streaming<ConnectAdapterResponse>,
)> {
    let (tx, rx) = mpsc::channel(4096);
    tx.send(ConnectAdapterRequest {
        message: Some(In::Hello(AdapterHello {
            adapter_id: adapter.into(),
            node_ids: nodes.to_vec(),
            last_processed_sequence: last,
            software: "oms-bench".into(),
        })),
    })
    .await?;
    let mut client = FulfillmentServiceClient::new(channel);
    let mut responses = client
        .connect_adapter(authed(TENANT, ReceiverStream::new(rx)))
        .await?
        .into_inner();
    match responses.message().await? {
        Some(ConnectAdapterResponse {
            message: Some(Out::Welcome(_)),
        }) => Ok((tx, responses)),
        other => anyhow::bail!("expected a welcome, got {other:?}"),
    }
}

struct Walked {
    hist: Histogram<u64>,
    accepted: u64,
    refused: u64,
}

async fn events(args: &Args, db: &TestDb, channel: Channel) -> anyhow::Result<serde_json::Value> {
    let names = seed(db, args.adapters, args.orders).await?;
    // Seeded at once, unlike a table that grew: give the planner the
    // statistics autovacuum would have gathered by then.
    load::analyze(db).await?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (a, names) in names.into_iter().enumerate() {
        let (tx, mut responses) =
            open(channel.clone(), &format!("bench-{a}"), &[node(a)], 0).await?;
        let inflight = Arc::new(Semaphore::new(args.inflight));
        let sent_at = Arc::new(Mutex::new(VecDeque::<Instant>::new()));
        let (chunk, window) = (args.chunk, args.inflight as u32);
        // Sends until every order walked or the time is up.
        let sender = {
            let (inflight, sent_at) = (inflight.clone(), sent_at.clone());
            tokio::spawn(async move {
                let n = node(a);
                'all: for orders in names.chunks(chunk) {
                    for step in 0..5 {
                        for fo in orders {
                            if Instant::now() >= deadline {
                                break 'all;
                            }
                            let Ok(permit) = inflight.acquire().await else {
                                break 'all;
                            };
                            permit.forget();
                            sent_at.lock().unwrap().push_back(Instant::now());
                            let ev = event(step, &n, fo);
                            let msg = ConnectAdapterRequest {
                                message: Some(In::Status(ev)),
                            };
                            if tx.send(msg).await.is_err() {
                                break 'all;
                            }
                        }
                    }
                }
                // Keep the stream open until every answer came back.
                let _ = inflight.acquire_many(window).await;
                drop(tx);
            })
        };
        let receiver = tokio::spawn(async move {
            let mut w = Walked {
                hist: Histogram::new(3).expect("valid histogram bounds"),
                accepted: 0,
                refused: 0,
            };
            while let Ok(Some(m)) = responses.message().await {
                if let Some(Out::EventAck(ack)) = m.message {
                    if let Some(t) = sent_at.lock().unwrap().pop_front() {
                        let _ = w.hist.record(t.elapsed().as_micros() as u64);
                    }
                    if ack.accepted {
                        w.accepted += 1;
                    } else {
                        w.refused += 1;
                        if w.refused <= 3 {
                            eprintln!("refused: {}", ack.error);
                        }
                    }
                    inflight.add_permits(1);
                }
            }
            w
        });
        tasks.push((sender, receiver));
    }
    let mut total = Walked {
        hist: Histogram::new(3).expect("valid histogram bounds"),
        accepted: 0,
        refused: 0,
    };
    for (sender, receiver) in tasks {
        sender.await?;
        let w = receiver.await?;
        let _ = total.hist.add(w.hist);
        total.accepted += w.accepted;
        total.refused += w.refused;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Verify in Postgres: every accepted event is a state change recorded.
    let mut conn = db.connect("fulfillment").await;
    let delivered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM fulfillment_orders WHERE tenant = $1 AND state = 'delivered'",
    )
    .bind(TENANT)
    .fetch_one(&mut conn)
    .await?;
    let changes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE tenant = $1 AND event_type = 'FulfillmentStateChanged'",
    )
    .bind(TENANT)
    .fetch_one(&mut conn)
    .await?;
    let ms = |q: f64| total.hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "adapters": args.adapters,
        "inflight": args.inflight,
        "events_per_s": total.accepted as f64 / seconds,
        "events": total.accepted,
        "refused": total.refused,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "orders_delivered": delivered,
        "state_changes_in_feed": changes,
        "verified": changes == total.accepted as i64 && total.refused == 0,
        "seconds": seconds,
    }))
}

async fn release_to_ack(args: &Args, channel: Channel) -> anyhow::Result<serde_json::Value> {
    let node = "LAT".to_string();
    let client = FulfillmentServiceClient::new(channel.clone());
    let (tx, mut responses) = open(
        channel.clone(),
        "bench-latency",
        std::slice::from_ref(&node),
        0,
    )
    .await?;
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let acked = {
        let started = started.clone();
        tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("valid histogram bounds");
            loop {
                let m = tokio::select! {
                    m = responses.message() => m,
                    _ = &mut stopped => break,
                };
                let Ok(Some(m)) = m else { break };
                if let Some(Out::Command(c)) = m.message {
                    let ack = ConnectAdapterRequest {
                        message: Some(In::Ack(CommandAck {
                            sequence: c.sequence,
                        })),
                    };
                    if tx.send(ack).await.is_err() {
                        break;
                    }
                    if let Some(Cmd::Release(fo)) = c.kind
                        && let Some(t) = started.lock().unwrap().remove(&fo.name)
                    {
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                    }
                }
            }
            hist
        })
    };
    let report = load::drive(args.release_clients, args.seconds, |i| {
        let client = client.clone();
        let started = started.clone();
        let node = node.clone();
        move |n| {
            let mut client = client.clone();
            let started = started.clone();
            let node = node.clone();
            async move {
                let created = client
                    .create_fulfillment_order(authed(
                        TENANT,
                        CreateFulfillmentOrderRequest {
                            request_id: format!("c-{i}-{n}"),
                            fulfillment_order: Some(FulfillmentOrder {
                                order: format!("orders/{}", Uuid::now_v7()),
                                node_id: node,
                                lines: vec![FulfillmentLine {
                                    line_id: "L1".into(),
                                    sku: "SKU-1".into(),
                                    quantity: 1,
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }),
                        },
                    ))
                    .await;
                let Ok(created) = created else {
                    return Outcome::Failed;
                };
                let name = created
                    .into_inner()
                    .fulfillment_order
                    .unwrap_or_default()
                    .name;
                started.lock().unwrap().insert(name.clone(), Instant::now());
                let released = client
                    .release_fulfillment_order(authed(
                        TENANT,
                        ReleaseFulfillmentOrderRequest {
                            request_id: format!("r-{i}-{n}"),
                            name,
                        },
                    ))
                    .await;
                match released {
                    Ok(_) => Outcome::Ok,
                    Err(_) => Outcome::Failed,
                }
            }
        }
    })
    .await;
    // The last releases' commands arrive after the load stops: wait for
    // them (bounded), then close the stream.
    let wait = Instant::now();
    while !started.lock().unwrap().is_empty() && wait.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unacked = started.lock().unwrap().len();
    let _ = stop.send(());
    let hist = acked.await?;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "clients": args.release_clients,
        "releases": report.ok,
        "failed": report.failed,
        "releases_per_s": report.ok as f64 / report.seconds,
        "acknowledged": hist.len(),
        "not_acknowledged": unacked,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "release_rpc_p99_ms": report.ms(0.99),
    }))
}
