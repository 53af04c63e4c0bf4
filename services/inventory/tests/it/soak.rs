//! Random work by concurrent callers of two tenants (receipts, damage,
//! reservations, confirmations, releases, shipments and repeats of each),
//! with Redis flushed and the gate reconciled on the way. Afterwards every
//! reservation is as its caller was last told, stock and availability
//! follow from what the callers were told, the gate agrees with the
//! record, and no unit is promised twice.
use crate::*;
use oms_testkit::{RedisServer, retried};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tonic::Code;

const SKUS: [&str; 3] = ["A", "B", "C"];
/// Each tenant's nodes: DC2 is acme's, shared with beta.
const TENANTS: [(&str, &[&str]); 2] = [("acme", &["DC1", "DC2"]), ("beta", &["BX", "DC2"])];
const WORKERS_PER_TENANT: usize = 4;
const OPS: usize = 120;
const ALL_OPS: usize = TENANTS.len() * WORKERS_PER_TENANT * OPS;

/// What one tenant's callers were told.
#[derive(Default)]
struct Told {
    /// Units received less units damaged or shipped, per node and SKU.
    stock: BTreeMap<(String, String), i64>,
    /// Nodes and SKUs where damage took units: reservations may hold more
    /// there than the stock left (what the damage answer says), and the
    /// network more than the nodes have left.
    damaged: std::collections::BTreeSet<(String, String)>,
    /// Each reservation as its last answer gave it.
    reservations: BTreeMap<String, Reservation>,
    /// Safety stock per node and SKU.
    safety: BTreeMap<(String, String), i64>,
}

/// A request answered OK, kept to be sent again.
enum Sent {
    Movement(Box<(RecordMovementRequest, RecordMovementResponse)>),
    Create(CreateReservationRequest),
    Confirm(ConfirmReservationRequest, Option<Reservation>),
    Release(ReleaseReservationRequest, Option<Reservation>),
    Extend(ExtendReservationRequest, Option<Reservation>),
    Safety(SetSafetyStockRequest, SetSafetyStockResponse),
    Consume(ConsumeAllocationsRequest, Option<Reservation>),
}

/// Units a reservation holds per SKU and node (empty: the network).
fn holding(r: &Reservation) -> BTreeMap<(String, String), i64> {
    let mut h: BTreeMap<(String, String), i64> = BTreeMap::new();
    match r.state() {
        ReservationState::Active => {
            for l in &r.lines {
                *h.entry((l.sku.clone(), l.node_id.clone())).or_default() +=
                    l.quantity - l.quantity_released;
            }
        }
        ReservationState::Confirmed => {
            for a in r.lines.iter().flat_map(|l| &l.allocations) {
                *h.entry((a.sku.clone(), a.node_id.clone())).or_default() +=
                    a.quantity - a.quantity_consumed;
            }
        }
        _ => {}
    }
    h.retain(|_, q| *q > 0);
    h
}

/// Reserves through a stream of one message, answered as the unary call.
async fn streamed(
    c: &mut Client,
    tenant: &str,
    req: &CreateReservationRequest,
) -> Result<tonic::Response<Reservation>, tonic::Status> {
    let msg = StreamReservationsRequest {
        reservation: Some(req.clone()),
        ..Default::default()
    };
    let mut answers = c
        .stream_reservations(authed(tenant, tokio_stream::iter([msg])))
        .await?
        .into_inner();
    let a = answers.message().await?.expect("one answer");
    assert_eq!(a.reservation_id, req.reservation_id);
    match oms_runtime::status::from_rpc(a.status.as_ref().unwrap()) {
        Some(e) => Err(e),
        None => Ok(tonic::Response::new(a.reservation.unwrap())),
    }
}

/// How far the workers are, in sixths of all their operations.
struct Progress {
    done: AtomicUsize,
    sixths: [Notify; 6],
}

impl Progress {
    fn step(&self) {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if done.is_multiple_of(ALL_OPS / 6) {
            self.sixths[done / (ALL_OPS / 6) - 1].notify_one();
        }
    }

    async fn reached(&self, sixths: usize) {
        self.sixths[sixths - 1].notified().await
    }
}

struct Worker {
    c: Client,
    tenant: &'static str,
    nodes: &'static [&'static str],
    name: String,
    /// Its place among its tenant's workers.
    index: usize,
    rng: StdRng,
    told: Arc<Mutex<Told>>,
    sent: Vec<Sent>,
    /// Its reservations made with a short TTL: they may expire meanwhile.
    short: std::collections::HashSet<String>,
}

impl Worker {
    fn node(&mut self) -> String {
        self.nodes.choose(&mut self.rng).unwrap().to_string()
    }

    /// One of this worker's reservations in one of `states`, if any.
    fn mine(&mut self, states: &[ReservationState]) -> Option<Reservation> {
        let told = self.told.lock().unwrap();
        let mine: Vec<&Reservation> = told
            .reservations
            .values()
            .filter(|r| {
                r.reservation_id.starts_with(&format!("{}-", self.name))
                    && states.contains(&r.state())
            })
            .collect();
        mine.choose(&mut self.rng).map(|r| (*r).clone())
    }

    /// Whether a change was refused because its short-lived reservation
    /// expired meanwhile; if so, what the caller knows of it is refreshed.
    async fn expired_meanwhile(&mut self, id: &str, e: &tonic::Status) -> bool {
        let why = reason(e);
        if !self.short.contains(id)
            || !matches!(
                why.as_str(),
                "RESERVATION_EXPIRED" | "RESERVATION_NOT_ACTIVE"
            )
        {
            return false;
        }
        let r = reservation(&mut self.c, self.tenant, id).await;
        assert_eq!(r.state(), ReservationState::Expired, "{e:?}");
        self.keep(&r);
        true
    }

    fn keep(&self, r: &Reservation) {
        let mut told = self.told.lock().unwrap();
        told.reservations
            .insert(r.reservation_id.clone(), r.clone());
    }

    /// Runs its operations; returns its short-lived reservations.
    async fn run(mut self, progress: &Progress) -> std::collections::HashSet<String> {
        for op in 0..OPS {
            match self.rng.random_range(0..100) {
                0..6 => self.movement(MovementKind::Receipt).await,
                6..8 => self.movement(MovementKind::Damage).await,
                8..10 => self.safety_stock().await,
                10..40 => self.create(op).await,
                40..45 => self.extend().await,
                45..60 => self.confirm().await,
                60..75 => self.release().await,
                75..90 => self.consume().await,
                _ => self.repeat().await,
            }
            progress.step();
        }
        self.short
    }

    /// A receipt of 1 to 4 units, or damage of 1 or 2 (refused when the
    /// node has fewer: a shipment may have taken them meanwhile).
    async fn movement(&mut self, kind: MovementKind) {
        let node = self.node();
        let sku = *SKUS.choose(&mut self.rng).unwrap();
        let quantity = match kind {
            MovementKind::Receipt => self.rng.random_range(1..=4),
            _ => -self.rng.random_range(1..=2),
        };
        let req = RecordMovementRequest {
            request_id: rid(),
            movement: Some(StockMovement {
                kind: kind as i32,
                node_id: node.clone(),
                sku: sku.into(),
                quantity,
                reason: "soak".into(),
                ..Default::default()
            }),
        };
        let answer = retried(&self.c, async |c| {
            c.record_movement(authed(self.tenant, req.clone())).await
        })
        .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) if quantity < 0 && reason(&e) == "INSUFFICIENT_ON_HAND" => return,
            Err(e) => panic!("{e:?}"),
        };
        let m = answer.movement.as_ref().unwrap();
        assert_eq!(m.quantity, quantity);
        {
            let mut told = self.told.lock().unwrap();
            let at = (node, sku.to_owned());
            *told.stock.entry(at.clone()).or_default() += m.quantity;
            if quantity < 0 {
                told.damaged.insert(at);
            } else {
                assert_eq!(answer.held_beyond_stock, 0, "a receipt takes nothing");
            }
        }
        self.sent.push(Sent::Movement(Box::new((req, answer))));
    }

    async fn create(&mut self, op: usize) {
        let n = self.rng.random_range(1..=2);
        let mut lines = Vec::new();
        for sku in SKUS.choose_multiple(&mut self.rng, n) {
            let node = if self.rng.random_bool(0.5) {
                self.node()
            } else {
                String::new()
            };
            lines.push(line(sku, &node, self.rng.random_range(1..=3)));
        }
        let id = format!("{}-{op}", self.name);
        // A quarter expire within the run (the sweep runs every 50 ms).
        let ttl = self.rng.random_bool(0.25).then(|| prost_types::Duration {
            seconds: 0,
            nanos: self.rng.random_range(300..1500) * 1_000_000,
        });
        let req = CreateReservationRequest {
            reservation_id: id,
            lines,
            ttl,
            reference: format!("orders/{}-{op}", self.name),
            ..Default::default()
        };
        // By the unary call or a stream of its own.
        let answer = if self.rng.random_bool(0.5) {
            retried(&self.c, async |c| {
                c.create_reservation(authed(self.tenant, req.clone())).await
            })
            .await
            .map(|r| r.reservation.unwrap())
        } else {
            retried(&self.c, async |c| streamed(c, self.tenant, &req).await).await
        };
        match answer {
            Ok(r) => {
                self.keep(&r);
                if req.ttl.is_some() {
                    self.short.insert(r.reservation_id);
                }
                self.sent.push(Sent::Create(req));
            }
            Err(e) => refused_as_it_may_be(&e),
        }
    }

    async fn confirm(&mut self) {
        let Some(r) = self.mine(&[ReservationState::Active]) else {
            return;
        };
        let mut allocations = Vec::new();
        for ((sku, node), q) in holding(&r) {
            let node = if node.is_empty() { self.node() } else { node };
            allocations.push(Allocation {
                sku,
                node_id: node,
                quantity: q,
                ..Default::default()
            });
        }
        let req = ConfirmReservationRequest {
            request_id: rid(),
            name: r.name.clone(),
            allocations,
        };
        match retried(&self.c, async |c| {
            c.confirm_reservation(authed(self.tenant, req.clone()))
                .await
        })
        .await
        {
            Ok(a) => {
                let r = a.reservation.unwrap();
                assert_eq!(r.state(), ReservationState::Confirmed);
                self.keep(&r);
                self.sent.push(Sent::Confirm(req, Some(r)));
            }
            Err(e) if self.expired_meanwhile(&r.reservation_id, &e).await => {}
            Err(e) => refused_as_it_may_be(&e),
        }
    }

    /// Safety stock for one of the node and SKU pairs this worker owns
    /// (each pair has one owner, so its last value is known).
    async fn safety_stock(&mut self) {
        let pairs: Vec<(String, String)> = self
            .nodes
            .iter()
            .flat_map(|n| SKUS.map(|s| (n.to_string(), s.to_string())))
            .enumerate()
            .filter(|(i, _)| i % WORKERS_PER_TENANT == self.index)
            .map(|(_, p)| p)
            .collect();
        let (node, sku) = pairs.choose(&mut self.rng).unwrap().clone();
        let req = SetSafetyStockRequest {
            request_id: rid(),
            node_id: node.clone(),
            sku: sku.clone(),
            quantity: self.rng.random_range(0..=2),
            ..Default::default()
        };
        let a = retried(&self.c, async |c| {
            c.set_safety_stock(authed(self.tenant, req.clone())).await
        })
        .await
        .unwrap();
        let mut told = self.told.lock().unwrap();
        told.safety.insert((node, sku), req.quantity);
        drop(told);
        self.sent.push(Sent::Safety(req, a));
    }

    /// More units of a SKU: anywhere (active) or at a node (confirmed).
    async fn extend(&mut self) {
        let live = [ReservationState::Active, ReservationState::Confirmed];
        let Some(r) = self.mine(&live) else {
            return;
        };
        let node = if r.state() == ReservationState::Confirmed || self.rng.random_bool(0.5) {
            self.node()
        } else {
            String::new()
        };
        // A short-lived one is renewed now and then, with or without more
        // units, to as short a time (a long-lived one would then expire
        // within the run, which the checks do not expect of it).
        let renew = r.state() == ReservationState::Active
            && self.short.contains(&r.reservation_id)
            && self.rng.random_bool(0.5);
        let ttl = renew.then(|| prost_types::Duration {
            seconds: 0,
            nanos: self.rng.random_range(300..1500) * 1_000_000,
        });
        let lines = if renew && self.rng.random_bool(0.5) {
            vec![]
        } else {
            vec![Allocation {
                sku: SKUS.choose(&mut self.rng).unwrap().to_string(),
                node_id: node,
                quantity: self.rng.random_range(1..=2),
                ..Default::default()
            }]
        };
        let req = ExtendReservationRequest {
            request_id: rid(),
            name: r.name.clone(),
            lines,
            reason: "one more".into(),
            ttl,
        };
        match retried(&self.c, async |c| {
            c.extend_reservation(authed(self.tenant, req.clone())).await
        })
        .await
        {
            Ok(a) => {
                let r = a.reservation.unwrap();
                self.keep(&r);
                self.sent.push(Sent::Extend(req, Some(r)));
            }
            Err(e) if self.expired_meanwhile(&r.reservation_id, &e).await => {}
            Err(e) => refused_as_it_may_be(&e),
        }
    }

    async fn release(&mut self) {
        let live = [ReservationState::Active, ReservationState::Confirmed];
        let Some(r) = self.mine(&live) else {
            return;
        };
        // Everything left, or some units of one SKU at one place.
        let lines = if self.rng.random_bool(0.2) {
            vec![]
        } else {
            let held: Vec<_> = holding(&r).into_iter().collect();
            let ((sku, node), q) = held.choose(&mut self.rng).unwrap().clone();
            vec![Allocation {
                sku,
                node_id: node,
                quantity: self.rng.random_range(1..=q),
                ..Default::default()
            }]
        };
        let req = ReleaseReservationRequest {
            request_id: rid(),
            name: r.name.clone(),
            lines,
            reason: "changed their mind".into(),
        };
        let answer = retried(&self.c, async |c| {
            c.release_reservation(authed(self.tenant, req.clone()))
                .await
        })
        .await;
        match answer {
            Ok(a) => {
                let r = a.reservation.unwrap();
                self.keep(&r);
                self.sent.push(Sent::Release(req, Some(r)));
            }
            Err(e) => assert!(self.expired_meanwhile(&r.reservation_id, &e).await, "{e:?}"),
        }
    }

    async fn consume(&mut self) {
        let Some(r) = self.mine(&[ReservationState::Confirmed]) else {
            return;
        };
        let held: Vec<_> = holding(&r).into_iter().collect();
        let ((sku, node), q) = held.choose(&mut self.rng).unwrap().clone();
        let shipped = Allocation {
            sku: sku.clone(),
            node_id: node.clone(),
            quantity: self.rng.random_range(1..=q),
            ..Default::default()
        };
        let req = ConsumeAllocationsRequest {
            request_id: rid(),
            name: r.name.clone(),
            shipped: vec![shipped.clone()],
            reference: format!("fulfillmentOrders/{}", r.reservation_id),
        };
        let answer = retried(&self.c, async |c| {
            c.consume_allocations(authed(self.tenant, req.clone()))
                .await
        })
        .await;
        let r = match answer {
            Ok(a) => a.reservation.unwrap(),
            // Damage took the allocated units from the shelf: nothing
            // ships (the final checks find the reservation unchanged).
            Err(e) if reason(&e) == "INSUFFICIENT_ON_HAND" => {
                let at = (node.clone(), sku.clone());
                assert!(self.told.lock().unwrap().damaged.contains(&at), "{e:?}");
                return;
            }
            Err(e) => panic!("{e:?}"),
        };
        self.keep(&r);
        *self
            .told
            .lock()
            .unwrap()
            .stock
            .entry((node, sku))
            .or_default() -= shipped.quantity;
        self.sent.push(Sent::Consume(req, Some(r)));
    }

    /// Sends one of its earlier requests again: same answer, nothing moved.
    async fn repeat(&mut self) {
        let Some(s) = self.sent.choose(&mut self.rng) else {
            return;
        };
        let (c, t) = (&self.c, self.tenant);
        // Sends `req` again through `method`.
        macro_rules! again {
            ($method:ident, $req:expr) => {
                retried(c, async |c| c.$method(authed(t, $req.clone())).await)
                    .await
                    .unwrap()
            };
        }
        match s {
            Sent::Movement(sent) => {
                let (req, first) = &**sent;
                assert_eq!(&again!(record_movement, req), first);
            }
            Sent::Create(req) => {
                let again = again!(create_reservation, req).reservation.unwrap();
                let id = &req.reservation_id;
                let now = self.told.lock().unwrap().reservations[id].clone();
                // Unless it expired since the caller last heard of it.
                if again != now {
                    assert!(self.short.contains(id), "{id}: {again:?} / {now:?}");
                    assert_eq!(
                        (again.state(), now.state()),
                        (ReservationState::Expired, ReservationState::Active)
                    );
                    self.keep(&again);
                }
            }
            // The change calls answer with the reservation as it was then.
            Sent::Confirm(req, first) => {
                assert_eq!(&again!(confirm_reservation, req).reservation, first)
            }
            Sent::Release(req, first) => {
                assert_eq!(&again!(release_reservation, req).reservation, first)
            }
            Sent::Extend(req, first) => {
                assert_eq!(&again!(extend_reservation, req).reservation, first)
            }
            Sent::Consume(req, first) => {
                assert_eq!(&again!(consume_allocations, req).reservation, first)
            }
            Sent::Safety(req, first) => assert_eq!(&again!(set_safety_stock, req), first),
        }
    }
}

/// A reservation, confirmation or extension may be refused for want of
/// stock, or for naming a node while it is disabled; nothing else.
fn refused_as_it_may_be(e: &tonic::Status) {
    let disabled = reason(e) == "NODE_DISABLED" && subjects(e) == ["nodes/DC2"];
    assert!(reason(e) == "INSUFFICIENT_STOCK" || disabled, "{e:?}");
}

/// acme enables or disables one of its nodes.
async fn enable(c: &mut Client, node: &str, enabled: bool) {
    let req = enabling(node, enabled);
    let n = retried(c, async |c| {
        c.update_node(authed("acme", req.clone())).await
    })
    .await
    .unwrap();
    assert_eq!(n.node.unwrap().enabled, enabled);
}

/// Checks one tenant against what its callers were told.
async fn agrees(h: &mut Harness, tenant: &str, nodes: &[&str], told: &Told) {
    for (id, r) in &told.reservations {
        let now = reservation(&mut h.client, tenant, id).await;
        assert_eq!(&now, r, "{tenant} {id} is as its caller was last told");
        // A line's quantity less what it released is what it holds
        // (active) or allocated (since confirmed).
        if r.state() != ReservationState::Active {
            for l in &r.lines {
                let allocated: i64 = l.allocations.iter().map(|a| a.quantity).sum();
                assert_eq!(l.quantity - l.quantity_released, allocated, "{tenant} {id}");
            }
        }
    }
    let mut held: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in told.reservations.values() {
        for (k, q) in holding(r) {
            *held.entry(k).or_default() += q;
        }
    }
    let at = |m: &BTreeMap<(String, String), i64>, a: &str, b: &str| {
        m.get(&(a.to_owned(), b.to_owned())).copied().unwrap_or(0)
    };
    for sku in SKUS {
        let per_node = h
            .client
            .get_availability(authed(
                tenant,
                GetAvailabilityRequest {
                    skus: vec![sku.into()],
                    node_ids: nodes.iter().map(|n| n.to_string()).collect(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .availabilities;
        let figures: Vec<(String, i64, i64, i64)> = per_node
            .iter()
            .map(|a| (a.node_id.clone(), a.on_hand, a.reserved, a.held_back))
            .collect();
        let mut want: Vec<(String, i64, i64, i64)> = nodes
            .iter()
            .map(|n| {
                let on_hand = at(&told.stock, n, sku);
                let reserved = at(&held, sku, n);
                let damaged = told.damaged.contains(&(n.to_string(), sku.to_owned()));
                assert!(
                    reserved <= on_hand || damaged,
                    "{tenant} {sku} oversold at {n}"
                );
                (n.to_string(), on_hand, reserved, at(&told.safety, n, sku))
            })
            .collect();
        want.sort();
        assert_eq!(
            figures, want,
            "{tenant} {sku}: (node, on hand, reserved, safety stock)"
        );
        // Stock the nodes have left covers what the network holds; what
        // they may still promise is that, less safety stock, per node.
        let network = at(&held, sku, "");
        let left: i64 = want.iter().map(|w| (w.1 - w.2).max(0)).sum();
        let damaged = told.damaged.iter().any(|(_, s)| s == sku);
        assert!(
            network <= left || damaged,
            "{tenant} {sku} oversold in the network"
        );
        let promisable: i64 = want.iter().map(|w| (w.1 - w.2 - w.3).max(0)).sum();
        let a = available(&mut h.client, tenant, sku).await;
        let reserved: i64 = want.iter().map(|w| w.2).sum::<i64>() + network;
        assert_eq!(
            (a.on_hand, a.reserved, a.held_back, a.available),
            (
                want.iter().map(|w| w.1).sum(),
                reserved,
                want.iter().map(|w| w.3).sum(),
                (promisable - network).max(0)
            ),
            "{tenant} {sku}: network (on hand, reserved, held back, available)"
        );
        assert_eq!(held_in_record(&h.db, tenant, sku).await, reserved);
    }
    let report = reconcile(&mut h.client, tenant, true).await;
    assert_clean(&report, tenant);
}

#[tokio::test]
async fn random_concurrent_work_keeps_record_gate_and_callers_in_agreement() {
    let redis = RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    node(&mut h.client, "acme", "DC1").await;
    node_with(&mut h.client, "acme", "DC2", |n| {
        n.shared_with_tenants = vec!["beta".into()]
    })
    .await;
    node(&mut h.client, "beta", "BX").await;
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("SOAK_SEED={seed}");
    let mut told = Vec::new();
    for (tenant, nodes) in TENANTS {
        for sku in SKUS {
            item(&mut h.client, tenant, sku).await;
        }
        let mut t = Told::default();
        for n in nodes {
            for sku in SKUS {
                receive(&mut h.client, tenant, n, sku, 5).await;
                t.stock.insert((n.to_string(), sku.into()), 5);
            }
        }
        told.push(Arc::new(Mutex::new(t)));
    }

    let progress = Progress {
        done: AtomicUsize::new(0),
        sixths: Default::default(),
    };
    let mut workers = Vec::new();
    for (t, (tenant, nodes)) in TENANTS.into_iter().enumerate() {
        for w in 0..WORKERS_PER_TENANT {
            let worker = Worker {
                c: h.client.clone(),
                tenant,
                nodes,
                name: format!("{tenant}-w{w}"),
                index: w,
                rng: StdRng::seed_from_u64(seed.wrapping_add((t * WORKERS_PER_TENANT + w) as u64)),
                told: told[t].clone(),
                sent: Vec::new(),
                short: Default::default(),
            };
            workers.push(worker.run(&progress));
        }
    }
    // While the callers go on: Redis loses everything at a third of the
    // way; acme disables its shared node at half way and enables it again
    // at five sixths; both gates are reconciled at two thirds.
    let faults = async {
        let mut c = h.client.clone();
        progress.reached(2).await;
        assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
        progress.reached(3).await;
        enable(&mut c, "DC2", false).await;
        progress.reached(4).await;
        for (tenant, _) in TENANTS {
            reconcile(&mut c, tenant, false).await;
        }
        progress.reached(5).await;
        enable(&mut c, "DC2", true).await;
    };
    let (short, ()) = tokio::join!(futures::future::join_all(workers), faults);

    // What expires does so in time, whatever happened to it meanwhile.
    for (w, short) in short.into_iter().enumerate() {
        let (tenant, _) = TENANTS[w / WORKERS_PER_TENANT];
        let told = &told[w / WORKERS_PER_TENANT];
        let active =
            |id: &String| told.lock().unwrap().reservations[id].state() == ReservationState::Active;
        let waiting: Vec<String> = short.into_iter().filter(active).collect();
        for id in waiting {
            let mut c = h.client.clone();
            let mut now = None;
            wait_until(async || {
                let r = reservation(&mut c, tenant, &id).await;
                let expired = r.state() == ReservationState::Expired;
                now = Some(r);
                expired
            })
            .await;
            told.lock().unwrap().reservations.insert(id, now.unwrap());
        }
    }

    for ((tenant, nodes), told) in TENANTS.into_iter().zip(&told) {
        let told = std::mem::take(&mut *told.lock().unwrap());
        let shipped = told.reservations.values().any(|r| {
            r.lines
                .iter()
                .flat_map(|l| &l.allocations)
                .any(|a| a.quantity_consumed > 0)
        });
        assert!(shipped, "{tenant}: some units shipped");
        assert!(!told.damaged.is_empty(), "{tenant}: some stock damaged");
        agrees(&mut h, tenant, nodes, &told).await;
        // The other tenant does not see them.
        let other = if tenant == "acme" { "beta" } else { "acme" };
        let name = format!("reservations/{}", told.reservations.keys().next().unwrap());
        let foreign = h
            .client
            .get_reservation(authed(other, GetReservationRequest { name }))
            .await
            .unwrap_err();
        assert_eq!(foreign.code(), Code::NotFound);
    }
}
