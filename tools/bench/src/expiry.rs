//! Abandoned carts: N reservations of one unit of one SKU with a short
//! TTL, none confirmed, as a flash sale leaves them, all due at the same
//! moment. Reports how fast the expiry sweep gives their units back: from
//! that moment until the SKU's availability is whole again, and carts/s
//! over that time. Verifies that every unit came back and every cart
//! expired. With `--buyers`, clients reserve the same SKU meanwhile, and
//! their latency is reported while the carts wait and while they expire:
//! what an expiry wave costs the sale going on.
use crate::{load, stock};
use futures::StreamExt;
use hdrhistogram::Histogram;
use oms_proto::inventory::{inventory_service_client::InventoryServiceClient, *};
use oms_runtime::Service;
use oms_testkit::{TestDb, authed};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(clap::Args)]
pub struct Args {
    /// Carts (reservations of one unit each).
    #[arg(long, default_value_t = 20_000)]
    carts: usize,
    /// Clients reserving at once.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Clients reserving one unit of the same SKU each, one call at a
    /// time, from the moment every cart is made until they are all back.
    #[arg(long, default_value_t = 0)]
    buyers: usize,
}

const TENANT: &str = "bench";
/// When every cart is due, after the first is made: later than making all
/// of them takes, so that the sweep starts on a full backlog.
const TTL: Duration = Duration::from_secs(10);
/// How long the run waits for the carts to come back (about 100 times
/// what it takes) before it fails.
const GIVE_UP: Duration = Duration::from_secs(180);

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
    // Room for what the buyers take (well above what they can reserve in
    // the run), so that none is refused for want of stock.
    let stock = args.carts as i64 + if args.buyers > 0 { 2_000_000 } else { 0 };
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
                    ttl: Some(prost_types::Duration {
                        seconds: left.as_secs() as i64,
                        nanos: (left.subsec_millis() * 1_000_000) as i32,
                    }),
                    ..stock::one_unit("SALE", format!("cart-{i}"))
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
    let buyers = Buyers::start(svc.channel(), args.buyers);
    tokio::time::sleep_until(due.into()).await;
    buyers.phase.store(WAVE, Ordering::SeqCst);
    loop {
        anyhow::ensure!(
            due.elapsed() < GIVE_UP,
            "the carts were not back {} s after they were due",
            GIVE_UP.as_secs()
        );
        // What the buyers were granted is read first: a grant made after
        // it only lowers the availability read next, so the carts are
        // never taken as back too early.
        let taken = buyers.granted.load(Ordering::SeqCst);
        let a = stock::available(&mut client, TENANT, "SALE")
            .await?
            .available;
        if a + taken >= stock {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = due.elapsed().as_secs_f64();
    let bought = buyers.stop().await;
    // Nothing given back twice: the figure is whole but for what the
    // buyers hold, no more.
    let back = stock::available(&mut client, TENANT, "SALE")
        .await?
        .available;
    let released = released(&mut client, args.carts).await?;
    let verified = back == stock - bought.granted && released == args.carts && bought.failed == 0;
    println!(
        "{}",
        serde_json::json!({
            "carts": args.carts,
            "reserve_seconds": reserve_seconds,
            "expiry_seconds": seconds,
            "carts_per_s": args.carts as f64 / seconds,
            "buyers": (args.buyers > 0).then(|| bought.figures(args.buyers)),
            "verified": verified,
        })
    );
    anyhow::ensure!(
        verified,
        "availability {back} of {}; {released} of {} carts expired; {} buyers' calls failed",
        stock - bought.granted,
        args.carts,
        bought.failed
    );
    Ok(())
}

/// The buyers' windows: while the carts wait (made, not yet due), while
/// they expire, and after (not timed).
const WAITING: u8 = 0;
const WAVE: u8 = 1;
const DONE: u8 = 2;

/// Clients reserving one unit of the SALE SKU each, one call at a time,
/// each call timed in the window it started in.
struct Buyers {
    phase: Arc<AtomicU8>,
    granted: Arc<AtomicI64>,
    tasks: Vec<tokio::task::JoinHandle<Bought>>,
}

struct Bought {
    /// Latencies in µs, by window.
    waiting: Histogram<u64>,
    wave: Histogram<u64>,
    granted: i64,
    failed: u64,
}

impl Buyers {
    fn start(channel: Channel, clients: usize) -> Self {
        let phase = Arc::new(AtomicU8::new(WAITING));
        let granted = Arc::new(AtomicI64::new(0));
        let tasks = (0..clients)
            .map(|c| {
                let mut client = InventoryServiceClient::new(channel.clone());
                let (phase, granted) = (phase.clone(), granted.clone());
                tokio::spawn(async move {
                    let mut mine = Bought::new();
                    for n in 0.. {
                        let window = phase.load(Ordering::SeqCst);
                        if window == DONE {
                            break;
                        }
                        let req = stock::one_unit("SALE", format!("buyer-{c}-{n}"));
                        let t = Instant::now();
                        match client.create_reservation(authed(TENANT, req)).await {
                            Ok(_) => {
                                granted.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(_) => mine.failed += 1,
                        }
                        let h = if window == WAVE {
                            &mut mine.wave
                        } else {
                            &mut mine.waiting
                        };
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                    mine
                })
            })
            .collect();
        Buyers {
            phase,
            granted,
            tasks,
        }
    }

    /// Stops the buyers; what they were granted and how long it took.
    async fn stop(self) -> Bought {
        self.phase.store(DONE, Ordering::SeqCst);
        let mut all = Bought::new();
        for t in self.tasks {
            match t.await {
                Ok(b) => {
                    let _ = all.waiting.add(b.waiting);
                    let _ = all.wave.add(b.wave);
                    all.failed += b.failed;
                }
                Err(_) => all.failed += 1,
            }
        }
        all.granted = self.granted.load(Ordering::SeqCst);
        all
    }
}

impl Bought {
    fn new() -> Self {
        let histogram = || Histogram::new(3).expect("valid histogram bounds");
        Bought {
            waiting: histogram(),
            wave: histogram(),
            granted: 0,
            failed: 0,
        }
    }

    fn figures(&self, clients: usize) -> serde_json::Value {
        let window = |h: &Histogram<u64>| {
            serde_json::json!({
                "calls": h.len(),
                "p50_ms": h.value_at_quantile(0.50) as f64 / 1000.0,
                "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
                "max_ms": h.max() as f64 / 1000.0,
            })
        };
        serde_json::json!({
            "clients": clients,
            "granted": self.granted,
            "while_carts_wait": window(&self.waiting),
            "while_carts_expire": window(&self.wave),
        })
    }
}

/// Carts whose reservation ended expired (all of them, or the run is
/// wrong), counted page by page.
async fn released(
    client: &mut InventoryServiceClient<Channel>,
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
