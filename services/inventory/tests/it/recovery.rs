//! Redis losing its data: the gate is rebuilt from the record with nothing
//! oversold and nothing confirmed lost; Reconcile reports drift.
use crate::*;
use futures::future::join_all;
use oms_testkit::RedisServer;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

#[tokio::test]
async fn flushall_in_a_reservation_storm_oversells_nothing_and_loses_nothing() {
    let redis = RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    node(&mut h.client, "acme", "DC1").await;
    item(&mut h.client, "acme", "HOT").await;
    receive(&mut h.client, "acme", "DC1", "HOT", 110).await;
    // A confirmed reservation made before the loss.
    reserve(&mut h.client, "acme", "keeper", vec![line("HOT", "", 10)])
        .await
        .unwrap();
    h.client
        .confirm_reservation(authed(
            "acme",
            ConfirmReservationRequest {
                request_id: rid(),
                name: "reservations/keeper".into(),
                allocations: vec![Allocation {
                    sku: "HOT".into(),
                    node_id: "DC1".into(),
                    quantity: 10,
                    ..Default::default()
                }],
            },
        ))
        .await
        .unwrap();

    let done = Arc::new(AtomicUsize::new(0));
    let flush_now = Arc::new(Notify::new());
    let storm = (0..300).map(|i| {
        let mut c = h.client.clone();
        let (done, flush_now) = (done.clone(), flush_now.clone());
        async move {
            let r = reserve(&mut c, "acme", &format!("s{i}"), vec![line("HOT", "", 1)]).await;
            if done.fetch_add(1, Ordering::SeqCst) + 1 == 60 {
                flush_now.notify_one();
            }
            r
        }
    });
    let flusher = {
        let flush_now = flush_now.clone();
        let port = redis.port;
        tokio::spawn(async move {
            flush_now.notified().await;
            let out = tokio::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "FLUSHALL"])
                .output()
                .await
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
        })
    };
    let results = join_all(storm).await;
    flusher.await.unwrap();
    let granted = results.iter().filter(|r| r.is_ok()).count();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(e), "INSUFFICIENT_STOCK", "{e:?}");
    }
    assert_eq!(granted, 100, "every unit sold once, none twice");
    assert_eq!(held_in_record(&h.db, "acme", "HOT").await, 110);
    assert_eq!(available(&mut h.client, "acme", "HOT").await.available, 0);
    let more = reserve(&mut h.client, "acme", "one-more", vec![line("HOT", "", 1)])
        .await
        .unwrap_err();
    assert_eq!(reason(&more), "INSUFFICIENT_STOCK");

    // The confirmed reservation survived: it ships.
    h.client
        .consume_allocations(authed(
            "acme",
            ConsumeAllocationsRequest {
                request_id: rid(),
                name: "reservations/keeper".into(),
                shipped: vec![Allocation {
                    sku: "HOT".into(),
                    node_id: "DC1".into(),
                    quantity: 10,
                    ..Default::default()
                }],
                reference: "fulfillmentOrders/k".into(),
            },
        ))
        .await
        .unwrap();
    let a = available(&mut h.client, "acme", "HOT").await;
    assert_eq!((a.on_hand, a.reserved, a.available), (100, 100, 0));

    // Gate and record agree.
    let report = reconcile(&mut h.client, "acme", true).await;
    assert_clean(&report, "acme");
}

#[tokio::test]
async fn reconcile_reports_drift_and_repairs_it() {
    let redis = RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    node(&mut h.client, "acme", "DC1").await;
    item(&mut h.client, "acme", "S").await;
    receive(&mut h.client, "acme", "DC1", "S", 5).await;
    let keys = redis.cli(&["--scan", "--pattern", "*avail:S"]);
    let key = keys
        .lines()
        .next()
        .expect("the gate has a key for S")
        .to_owned();
    redis.cli(&["HSET", &key, "n:DC1", "999"]);

    let dry = reconcile(&mut h.client, "acme", true).await;
    assert_eq!(dry.keys_rebuilt, 0);
    assert_eq!(dry.drifts.len(), 1);
    assert_eq!((dry.drift_count, dry.skus_checked), (1, 1));
    let d = &dry.drifts[0];
    assert_eq!(
        (
            d.sku.as_str(),
            d.node_id.as_str(),
            d.gate_value,
            d.record_value,
            d.gate_missing
        ),
        ("S", "DC1", 999, 5, false)
    );
    // A figure the gate lost is told apart from a wrong one.
    redis.cli(&["HDEL", &key, "n:DC1"]);
    let d = reconcile(&mut h.client, "acme", true).await.drifts;
    assert_eq!(
        d.iter()
            .map(|d| (
                d.node_id.as_str(),
                d.gate_value,
                d.record_value,
                d.gate_missing
            ))
            .collect::<Vec<_>>(),
        [("DC1", -1, 5, true)]
    );
    redis.cli(&["HSET", &key, "n:DC1", "999"]);

    let repair = ReconcileRequest {
        request_id: rid(),
        dry_run: false,
    };
    let fixed = h
        .client
        .reconcile(authed("acme", repair.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fixed.drifts.len(), 1);
    assert_eq!(redis.cli(&["HGET", &key, "n:DC1"]).trim(), "5");
    // A repeat (a caller retrying after a lost answer) is told what the
    // first run found, not that the repaired gate has no drift.
    let again = h
        .client
        .reconcile(authed("acme", repair))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, fixed);
    // The repaired gate refuses what the record cannot give.
    let err = reserve(&mut h.client, "acme", "big", vec![line("S", "", 6)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");

    // Held totals that drifted from the holds (what availability reads)
    // are rewritten from the holds too.
    reserve(&mut h.client, "acme", "two", vec![line("S", "", 2)])
        .await
        .unwrap();
    let mut c = h.db.connect("inventory").await;
    sqlx::query("UPDATE held_totals SET held = held + 3 WHERE tenant = 'acme' AND sku = 'S'")
        .execute(&mut c)
        .await
        .unwrap();
    assert!(available(&mut h.client, "acme", "S").await.available < 3);
    let said: i64 = sqlx::query_scalar(
        "SELECT SUM(held)::bigint FROM held_totals WHERE tenant = 'acme' AND sku = 'S'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    // Reported, by a dry run too, with what the totals said and what the
    // holds add up to.
    for dry_run in [true, false] {
        let r = reconcile(&mut h.client, "acme", dry_run).await;
        let d: Vec<_> = (r.held_total_drifts.iter())
            .map(|d| (d.sku.as_str(), d.node_id.as_str(), d.total, d.holds))
            .collect();
        assert_eq!(d, [("S", "", said, 2)], "dry run {dry_run}");
        assert_eq!((r.held_total_drift_count, r.reservations_checked), (1, 1));
    }
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 3);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 2);
    let r = reconcile(&mut h.client, "acme", true).await;
    assert_eq!(r.held_total_drift_count, 0, "{r:?}");
}

/// The gate's record of each live reservation (what its changes and
/// repeats are checked against) and its expiry schedule are compared with
/// the record too: each kind of difference is named, and Reconcile
/// rewrites them.
#[tokio::test]
async fn reconcile_reports_reservation_records_that_drifted() {
    let redis = RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    stocked(&mut h, &[("S", 10)]).await;
    let c = &mut h.client;
    for id in ["a", "c"] {
        reserve(c, "acme", id, vec![line("S", "", 1)])
            .await
            .unwrap();
    }
    confirmed_at_dc1(c, "b", "S", 2).await;
    let key = |pattern: &str| {
        let keys = redis.cli(&["--scan", "--pattern", pattern]);
        keys.lines()
            .next()
            .expect("the gate has the key")
            .to_owned()
    };
    // a: its record lost; b: holds it does not have; c: expires at
    // another time; and a reservation the record never had is scheduled.
    redis.cli(&["DEL", &key("*res:a")]);
    let b = key("*res:b");
    let mut rec: serde_json::Value = serde_json::from_str(redis.cli(&["GET", &b]).trim()).unwrap();
    rec["holds"] = serde_json::json!({"S\tDC1": 5});
    redis.cli(&["SET", &b, &rec.to_string()]);
    // (Far off, so that the sweep never finds them due.)
    let expiry = key("*expiry");
    redis.cli(&["ZADD", &expiry, "XX", "99999999999999", "c"]);
    redis.cli(&["ZADD", &expiry, "99999999999999", "ghost"]);

    let want = [
        ("a", "active", "", vec!["missing"]),
        ("b", "confirmed", "confirmed", vec!["holds"]),
        ("c", "active", "active", vec!["expiry_schedule"]),
        ("ghost", "", "", vec!["expiry_schedule"]),
    ];
    for dry_run in [true, false] {
        let r = reconcile(c, "acme", dry_run).await;
        let got: Vec<_> = (r.reservation_drifts.iter())
            .map(|d| {
                let what: Vec<&str> = d.differences.iter().map(String::as_str).collect();
                (
                    d.reservation_id.as_str(),
                    d.record_state.as_str(),
                    d.gate_state.as_str(),
                    what,
                )
            })
            .collect();
        assert_eq!(got, want, "dry run {dry_run}");
        assert_eq!((r.reservation_drift_count, r.reservations_checked), (4, 3));
    }
    assert_clean(&reconcile(c, "acme", true).await, "after the repair");
    // The rewritten records serve changes: a's release gives its unit back.
    release_all(c, "a").await.unwrap();
    assert_eq!(available(c, "acme", "S").await.available, 10 - 1 - 2);
}

/// Fails the reservation batch that writes the row of reservation `id`,
/// before its commit (the gate has granted it by then).
async fn fail_reservation_row(db: &TestDb, id: &str) {
    let when = format!("NEW.reservation_id = '{id}'");
    let body = "RAISE EXCEPTION 'injected failure';";
    injected(db, "INSERT ON reservations", &when, body).await;
}

/// Fails the inventory record's transaction that writes an outbox event of
/// `event_type` about `subject`, after its gate change: at once, or (with
/// `block`) once the test lets go of advisory lock 4242, which it waits on.
async fn fail_events(db: &TestDb, event_type: &str, subject: &str, block: bool) {
    let wait = if block { WAIT } else { "" };
    on_events(
        db,
        event_type,
        subject,
        &format!("{wait} RAISE EXCEPTION 'injected failure';"),
    )
    .await
}

/// Holds the transaction that writes such an event until the test lets go
/// of advisory lock 4242; it then goes on.
async fn pause_events(db: &TestDb, event_type: &str, subject: &str) {
    on_events(db, event_type, subject, WAIT).await
}

pub(crate) const WAIT: &str = "PERFORM pg_advisory_xact_lock_shared(4242);";

/// Runs `body` (PL/pgSQL) in the transaction that writes an outbox event
/// of `event_type` about `subject`.
async fn on_events(db: &TestDb, event_type: &str, subject: &str, body: &str) {
    let when = format!("NEW.event_type = '{event_type}' AND NEW.subject = '{subject}'");
    injected(db, "INSERT ON outbox", &when, body).await
}

/// Runs `body` (PL/pgSQL) in a transaction that writes (`on`: "INSERT ON
/// outbox", "UPDATE ON idempotency"...) a row for which `when` holds,
/// until [`heal`].
pub(crate) async fn injected(db: &TestDb, on: &str, when: &str, body: &str) {
    let mut c = db.connect("inventory").await;
    oms_testkit::trigger(&mut c, "injected", on, when, body).await;
}

/// Holds advisory lock 4242 until dropped (unlocked): a blocked
/// `fail_events` or `pause_events` transaction waits on it.
pub(crate) struct Held(sqlx::PgConnection);

impl Held {
    pub(crate) async fn new(db: &TestDb) -> Held {
        let mut c = db.connect("inventory").await;
        sqlx::query("SELECT pg_advisory_lock(4242)")
            .execute(&mut c)
            .await
            .unwrap();
        Held(c)
    }

    /// Until one transaction waits on the lock.
    pub(crate) async fn awaited(&mut self, db: &TestDb) {
        self.awaited_by(db, 1).await
    }

    /// Until `n` transactions wait on the lock.
    pub(crate) async fn awaited_by(&mut self, db: &TestDb, n: i64) {
        let mut watch = db.connect("inventory").await;
        let waiting = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
            WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted AND a.datname = current_database()";
        wait_until(async || {
            sqlx::query_scalar::<_, i64>(waiting)
                .fetch_one(&mut watch)
                .await
                .unwrap()
                == n
        })
        .await;
    }

    pub(crate) async fn release(mut self) {
        sqlx::query("SELECT pg_advisory_unlock(4242)")
            .execute(&mut self.0)
            .await
            .unwrap();
    }
}

/// Until `task` has finished or waits for a lock (any but the test's
/// advisory lock 4242: one the code under test takes).
pub(crate) async fn done_or_waiting<T>(db: &TestDb, task: &tokio::task::JoinHandle<T>) {
    let mut watch = db.connect("inventory").await;
    // In this test's database: tests running beside it wait on theirs.
    let waiting = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE NOT granted AND NOT (locktype = 'advisory' AND objid = 4242) AND a.datname = current_database()";
    wait_until(async || {
        task.is_finished()
            || sqlx::query_scalar::<_, i64>(waiting)
                .fetch_one(&mut watch)
                .await
                .unwrap()
                > 0
    })
    .await;
}

/// Drops what [`injected`] put in.
pub(crate) async fn heal(db: &TestDb) {
    let mut c = db.connect("inventory").await;
    sqlx::raw_sql("DROP FUNCTION injected() CASCADE")
        .execute(&mut c)
        .await
        .unwrap();
}

async fn receipt(c: &mut Client, sku: &str, q: i64) -> Result<(), tonic::Status> {
    moved(c, MovementKind::Receipt, sku, q).await
}

async fn moved(c: &mut Client, kind: MovementKind, sku: &str, q: i64) -> Result<(), tonic::Status> {
    movement(c, &rid(), kind, "DC1", sku, |m| {
        m.quantity = q;
        m.reason = "test".into();
    })
    .await
    .map(|_| ())
}

/// A receipt whose transaction fails after its gate change must not leave
/// the gate promising stock the record never got.
#[tokio::test]
async fn a_receipt_the_record_did_not_keep_is_not_promised() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 2)]).await;
    fail_events(&h.db, "StockMoved", "nodes/DC1/items/S", false).await;
    receipt(&mut h.client, "S", 5).await.unwrap_err();
    heal(&h.db).await;

    let err = reserve(&mut h.client, "acme", "r", vec![line("S", "", 3)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    reserve(&mut h.client, "acme", "r", vec![line("S", "", 2)])
        .await
        .unwrap();
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 2);
    let a = available(&mut h.client, "acme", "S").await;
    assert_eq!((a.on_hand, a.available), (2, 0));
}

/// A release whose transaction fails after the gate released: the record
/// still holds the units, and a retry of the release must work (the gate
/// said "released" forever before).
#[tokio::test]
async fn a_release_the_record_did_not_keep_can_be_retried() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 3)]).await;
    reserve(&mut h.client, "acme", "r", vec![line("S", "", 2)])
        .await
        .unwrap();
    fail_events(&h.db, "ReservationReleased", "reservations/r", false).await;
    release_all(&mut h.client, "r").await.unwrap_err();
    heal(&h.db).await;
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 2);

    let r = release_all(&mut h.client, "r").await.unwrap();
    assert_eq!(r.state, ReservationState::Released as i32);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 0);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 3);
}

/// A reservation batch whose record fails after the gate granted it, in
/// its rows or in its commit: the units are not left held by a
/// reservation nobody has, and the id can be reserved again.
#[tokio::test]
async fn a_reservation_the_record_did_not_keep_holds_nothing() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 3)]).await;
    // Failing the reservation's row: the batch fails before its commit.
    fail_reservation_row(&h.db, "r1").await;
    let err = reserve(&mut h.client, "acme", "r1", vec![line("S", "", 3)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    heal(&h.db).await;
    // Failing its event: the batch fails in its commit.
    fail_events(&h.db, "StockReserved", "reservations/r2", false).await;
    let err = reserve(&mut h.client, "acme", "r2", vec![line("S", "", 3)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    heal(&h.db).await;

    reserve(&mut h.client, "acme", "r3", vec![line("S", "", 2)])
        .await
        .unwrap();
    reserve(&mut h.client, "acme", "r1", vec![line("S", "", 1)])
        .await
        .unwrap();
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 3);
    let a = available(&mut h.client, "acme", "S").await;
    assert_eq!((a.on_hand, a.available), (3, 0));
}

/// A failed batch of many gives back every grant the gate made it, all at
/// once: the stock its reservations did not get is promised again.
#[tokio::test]
async fn a_failed_batch_of_many_gives_back_every_grant_it_made() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 50)]).await;
    fail_reservation_row(&h.db, "b7").await;
    let codes = burst(&mut h.client, "b", 50, "S").await;
    let granted = codes.iter().filter(|c| **c == 0).count() as i64;
    let failed = codes
        .iter()
        .filter(|c| **c == tonic::Code::Unavailable as i32)
        .count() as i64;
    assert_eq!(granted + failed, 50, "{codes:?}");
    assert!(failed > 1, "b7's batch failed with others in it: {failed}");
    heal(&h.db).await;
    assert_eq!(held_in_record(&h.db, "acme", "S").await, granted);
    // The gate agrees: every unit not recorded as held is promised again.
    reserve(&mut h.client, "acme", "rest", vec![line("S", "", failed)])
        .await
        .unwrap();
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 0);
}

/// Stock a receipt has not recorded yet is not promised: the gate gets it
/// after the commit, so a receipt that then fails gave nothing away.
#[tokio::test]
async fn a_receipt_is_promised_only_once_recorded() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 2)]).await;
    fail_events(&h.db, "StockMoved", "nodes/DC1/items/S", true).await;
    let mut held = Held::new(&h.db).await;
    let call = tokio::spawn({
        let mut c = h.client.clone();
        async move { receipt(&mut c, "S", 5).await }
    });
    held.awaited(&h.db).await;
    // The receipt's transaction is open, past where it adjusts the gate.
    let err = reserve(&mut h.client, "acme", "r", vec![line("S", "", 3)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    held.release().await;
    call.await.unwrap().unwrap_err();
    let a = available(&mut h.client, "acme", "S").await;
    assert_eq!((a.on_hand, a.available), (2, 2));
    // A receipt that commits is promised.
    heal(&h.db).await;
    receipt(&mut h.client, "S", 5).await.unwrap();
    reserve(&mut h.client, "acme", "r", vec![line("S", "", 7)])
        .await
        .unwrap();
}

/// Units a release frees are promised only once the release is recorded:
/// a release that then fails gave nothing away, and can be retried.
#[tokio::test]
async fn units_a_release_frees_are_promised_only_once_recorded() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 2)]).await;
    reserve(&mut h.client, "acme", "r", vec![line("S", "", 2)])
        .await
        .unwrap();
    fail_events(&h.db, "ReservationReleased", "reservations/r", true).await;
    let mut held = Held::new(&h.db).await;
    let call = tokio::spawn({
        let mut c = h.client.clone();
        async move { release_all(&mut c, "r").await }
    });
    held.awaited(&h.db).await;
    // The release's transaction is open, past its gate script.
    let err = reserve(&mut h.client, "acme", "x", vec![line("S", "", 2)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    held.release().await;
    call.await.unwrap().unwrap_err();
    heal(&h.db).await;
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 2);
    let err = reserve(&mut h.client, "acme", "x", vec![line("S", "", 2)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    release_all(&mut h.client, "r").await.unwrap();
    reserve(&mut h.client, "acme", "x", vec![line("S", "", 2)])
        .await
        .unwrap();
}

/// A caller that goes away while its shipment's transaction is open after
/// the gate took the units: the transaction never commits, and the gate
/// must give them back.
#[tokio::test]
async fn a_shipment_abandoned_by_its_caller_is_not_kept_by_the_gate() {
    let prefix = oms_testkit::redis_prefix();
    let mut h = start_with(&[("OMS_REDIS_KEY_PREFIX", prefix.clone())]).await;
    stocked(&mut h, &[("S", 2)]).await;
    fail_events(&h.db, "StockMoved", "nodes/DC1/items/S", true).await;
    let mut held = Held::new(&h.db).await;
    let call = tokio::spawn({
        let mut c = h.client.clone();
        async move { moved(&mut c, MovementKind::Shipment, "S", -1).await }
    });
    held.awaited(&h.db).await;
    call.abort();
    let mut redis = redis::Client::open(oms_testkit::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ready = format!("{prefix}oms:inventory:{{acme}}:ready");
    wait_until(async || {
        redis::cmd("EXISTS")
            .arg(&ready)
            .query_async::<i64>(&mut redis)
            .await
            .unwrap()
            == 0
    })
    .await;
    held.release().await;
    heal(&h.db).await;

    reserve(&mut h.client, "acme", "r", vec![line("S", "", 2)])
        .await
        .unwrap();
    let a = available(&mut h.client, "acme", "S").await;
    assert_eq!((a.on_hand, a.available), (2, 0));
}

/// A release commits, then its replica cannot reach Redis (here: every
/// command refused by an ACL) before the units it freed reach the gate,
/// nor drop the gate: the units are recorded free but not promised. The
/// sweep finds the give-back's row that never went away and drops the
/// gate, which the next reservation rebuilds from the record.
#[tokio::test]
async fn units_a_lost_give_back_kept_from_the_gate_come_back() {
    let redis = RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    stocked(&mut h, &[("S", 3)]).await;
    reserve(&mut h.client, "acme", "r", vec![line("S", "", 2)])
        .await
        .unwrap();
    pause_events(&h.db, "ReservationReleased", "reservations/r").await;
    let mut held = Held::new(&h.db).await;
    let call = tokio::spawn({
        let mut c = h.client.clone();
        async move { release_all(&mut c, "r").await }
    });
    held.awaited(&h.db).await;
    // Past its gate script, before its commit: Redis goes out of reach.
    let reach = out_of_reach(&redis);
    held.release().await;
    let released = call.await.unwrap().unwrap();
    assert_eq!(released.state, ReservationState::Released as i32);
    reach.back();
    heal(&h.db).await;

    // Recorded free, not promised: the give-back's row says so.
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 0);
    let err = reserve(&mut h.client, "acme", "x", vec![line("S", "", 3)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    swept(&h.db).await;

    reserve(&mut h.client, "acme", "x", vec![line("S", "", 3)])
        .await
        .unwrap();
    let a = available(&mut h.client, "acme", "S").await;
    assert_eq!((a.on_hand, a.available), (3, 0));
}

/// A damage report whose record fails after its gate script, when Redis
/// cannot then be told to drop the gate either: the gate would promise
/// less than the record has until `Reconcile`. A row has the sweep drop it.
#[tokio::test]
async fn a_change_not_recorded_when_redis_is_out_of_reach_is_swept() {
    let redis = RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    stocked(&mut h, &[("S", 3)]).await;
    fail_events(&h.db, "StockMoved", "nodes/DC1/items/S", true).await;
    let mut held = Held::new(&h.db).await;
    let call = tokio::spawn({
        let mut c = h.client.clone();
        async move { moved(&mut c, MovementKind::Damage, "S", -2).await }
    });
    held.awaited(&h.db).await;
    let reach = out_of_reach(&redis);
    held.release().await;
    call.await.unwrap().unwrap_err();
    reach.back();
    heal(&h.db).await;

    // Recorded on hand, not promised, until the sweep drops the gate.
    let err = reserve(&mut h.client, "acme", "x", vec![line("S", "", 3)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    swept(&h.db).await;

    reserve(&mut h.client, "acme", "x", vec![line("S", "", 3)])
        .await
        .unwrap();
    let a = available(&mut h.client, "acme", "S").await;
    assert_eq!((a.on_hand, a.available), (3, 0));
}

/// Redis refusing every command of the service (its default user, by an
/// ACL) until [`OutOfReach::back`]: out of reach, as far as it can tell.
struct OutOfReach<'a>(&'a RedisServer);

fn out_of_reach(redis: &RedisServer) -> OutOfReach<'_> {
    let admin = [
        "ACL", "SETUSER", "admin", "on", "nopass", "+@all", "~*", "&*",
    ];
    assert_eq!(redis.cli(&admin).trim(), "OK");
    let reach = OutOfReach(redis);
    reach.acl("-@all");
    reach
}

impl OutOfReach<'_> {
    fn acl(&self, rule: &str) {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &self.0.port.to_string(),
                "--user",
                "admin",
                "--pass",
                "x",
            ])
            .args(["ACL", "SETUSER", "default", rule])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{out:?}");
    }

    fn back(self) {
        self.acl("+@all");
    }
}

/// Until the sweep has dropped the gate for the one give-back row there
/// is (aged: the sweep counts a give-back as lost after a minute).
async fn swept(db: &TestDb) {
    let mut c = db.connect("inventory").await;
    assert_eq!(give_backs_on_their_way(&mut c).await, 1);
    sqlx::query("UPDATE gate_give_backs SET create_time = now() - interval '1 hour'")
        .execute(&mut c)
        .await
        .unwrap();
    wait_until(async || give_backs_on_their_way(&mut c).await == 0).await;
}

async fn give_backs_on_their_way(c: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM gate_give_backs")
        .fetch_one(c)
        .await
        .unwrap()
}

/// A give-back that arrives, and a rebuild, leave no row behind.
#[tokio::test]
async fn give_backs_that_arrive_leave_no_row() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 3)]).await;
    reserve(&mut h.client, "acme", "r", vec![line("S", "", 2)])
        .await
        .unwrap();
    release_all(&mut h.client, "r").await.unwrap();
    receipt(&mut h.client, "S", 4).await.unwrap();
    let mut c = h.db.connect("inventory").await;
    assert_eq!(give_backs_on_their_way(&mut c).await, 0);
    sqlx::query(
        "INSERT INTO gate_give_backs (tenant, give_back_id) VALUES ('acme', gen_random_uuid())",
    )
    .execute(&mut c)
    .await
    .unwrap();
    reconcile(&mut h.client, "acme", false).await;
    assert_eq!(
        give_backs_on_their_way(&mut c).await,
        0,
        "a rebuild counts every give-back on its way"
    );
    reserve(&mut h.client, "acme", "x", vec![line("S", "", 7)])
        .await
        .unwrap();
}

/// Two safety stock changes at one node at once, the node's default and a
/// SKU's own figure: each gives the gate the difference it makes, so the
/// second must see the first (before, it read the default from before the
/// first committed and the gate took both differences: drift).
#[tokio::test]
async fn concurrent_safety_stock_changes_at_a_node_keep_the_gate_right() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 20)]).await;
    let safety = |request_id: &str, sku: &str, quantity: i64| SetSafetyStockRequest {
        request_id: request_id.into(),
        node_id: "DC1".into(),
        sku: sku.into(),
        quantity,
        ..Default::default()
    };
    h.client
        .set_safety_stock(authed("acme", safety(&rid(), "", 5)))
        .await
        .unwrap();
    let first = rid();
    on_events(
        &h.db,
        "SafetyStockSet",
        "nodes/DC1",
        &format!("IF NEW.request_id = '{first}' THEN {WAIT} END IF;"),
    )
    .await;
    let mut held = Held::new(&h.db).await;
    let default = tokio::spawn({
        let mut c = h.client.clone();
        let req = safety(&first, "", 10);
        async move { c.set_safety_stock(authed("acme", req)).await }
    });
    held.awaited(&h.db).await;
    let own = tokio::spawn({
        let mut c = h.client.clone();
        let req = safety(&rid(), "S", 7);
        async move { c.set_safety_stock(authed("acme", req)).await }
    });
    // The SKU's change either waits for the default's or (as before) runs
    // past it.
    done_or_waiting(&h.db, &own).await;
    held.release().await;
    default.await.unwrap().unwrap();
    own.await.unwrap().unwrap();
    heal(&h.db).await;

    let drifts = reconcile(&mut h.client, "acme", true).await.drifts;
    assert!(drifts.is_empty(), "{drifts:?}");
    let a = available(&mut h.client, "acme", "S").await;
    assert_eq!((a.held_back, a.available), (7, 13));
    reserve(&mut h.client, "acme", "r", vec![line("S", "", 13)])
        .await
        .unwrap();
}

/// The owner of a shared node disables it: the gate of another tenant
/// with stock there must not be rebuilt from the node as it was while the
/// change is not committed yet (it was: only the owner's gate lock was
/// held, and the other tenant's rebuild read the node still enabled and
/// kept promising its stock).
#[tokio::test]
async fn disabling_a_shared_node_reaches_every_tenant_gate_there() {
    let mut h = start().await;
    shared_node(&mut h).await;
    receive(&mut h.client, "acme", "3PL-1", "S", 5).await;
    reserve(&mut h.client, "acme", "r1", vec![line("S", "", 1)])
        .await
        .unwrap();
    let (held, disable) = paused_disable(&h).await;
    let during = tokio::spawn({
        let mut c = h.client.clone();
        async move { reserve(&mut c, "acme", "r2", vec![line("S", "", 1)]).await }
    });
    // It either waits for the change (its gate lock) or, as before, is
    // answered from a gate rebuilt from the node as it was.
    done_or_waiting(&h.db, &during).await;
    held.release().await;
    disable.await.unwrap().unwrap();
    let err = during.await.unwrap().unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    let drifts = reconcile(&mut h.client, "acme", true).await.drifts;
    assert!(drifts.is_empty(), "{drifts:?}");
}

/// The same for a tenant whose first stock at the node arrives while the
/// node is being disabled: it has no stock there yet to be found by, and
/// its receipt read the node still enabled (it was then promised from the
/// disabled node).
#[tokio::test]
async fn a_first_receipt_at_a_node_being_disabled_is_not_promised() {
    let mut h = start().await;
    shared_node(&mut h).await;
    node(&mut h.client, "acme", "DC1").await;
    receive(&mut h.client, "acme", "DC1", "S", 1).await;
    reserve(&mut h.client, "acme", "r1", vec![line("S", "", 1)])
        .await
        .unwrap();
    let (held, disable) = paused_disable(&h).await;
    let during = tokio::spawn({
        let mut c = h.client.clone();
        async move {
            movement(&mut c, &rid(), MovementKind::Receipt, "3PL-1", "S", |m| {
                m.quantity = 5
            })
            .await
        }
    });
    done_or_waiting(&h.db, &during).await;
    held.release().await;
    disable.await.unwrap().unwrap();
    during.await.unwrap().unwrap();
    let err = reserve(&mut h.client, "acme", "r2", vec![line("S", "", 1)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    let drifts = reconcile(&mut h.client, "acme", true).await.drifts;
    assert!(drifts.is_empty(), "{drifts:?}");
}

/// Node 3PL-1 of tenant threepl, shared with acme, and acme's item S.
async fn shared_node(h: &mut Harness) {
    node_with(&mut h.client, "threepl", "3PL-1", |n| {
        n.kind = NodeKind::ThirdPartyWarehouse as i32;
        n.shared_with_tenants = vec!["acme".into()];
    })
    .await;
    item(&mut h.client, "acme", "S").await;
}

/// threepl disables 3PL-1; returned once that change is past the gates
/// and waits, before its commit, for the returned lock to go.
async fn paused_disable(
    h: &Harness,
) -> (
    Held,
    tokio::task::JoinHandle<Result<tonic::Response<UpdateNodeResponse>, tonic::Status>>,
) {
    // Its answer is stored with its request id just before its commit.
    injected(
        &h.db,
        "UPDATE ON idempotency",
        "NEW.method LIKE '%UpdateNode'",
        WAIT,
    )
    .await;
    let mut held = Held::new(&h.db).await;
    let disable = tokio::spawn({
        let mut c = h.client.clone();
        async move {
            let req = enabling("3PL-1", false);
            c.update_node(authed("threepl", req)).await
        }
    });
    held.awaited(&h.db).await;
    (held, disable)
}

/// With `OMS_REDIS_MIN_REPLICAS=1` a gate change counts only once a
/// replica has it, so a failover to that replica loses no hold: without
/// one, a reservation is refused `UNAVAILABLE` and holds nothing, in the
/// record or (once a replica is back and the gate rebuilt) in the gate.
#[tokio::test]
async fn with_a_replica_required_a_change_no_replica_has_is_not_made() {
    let redis = RedisServer::start();
    let replica = redis.replica();
    let mut h = start_with(&[
        ("OMS_REDIS_URL", redis.url()),
        ("OMS_REDIS_MIN_REPLICAS", "1".into()),
        // Generous: a loaded test machine answers WAIT late.
        ("OMS_REDIS_REPLICA_TIMEOUT_MS", "2000".into()),
    ])
    .await;
    stocked(&mut h, &[("A", 5)]).await;
    let c = &mut h.client;
    reserve(c, "acme", "r1", vec![line("A", "", 2)])
        .await
        .unwrap();
    drop(replica);

    let err = reserve(c, "acme", "r2", vec![line("A", "", 1)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(
        held_in_record(&h.db, "acme", "A").await,
        2,
        "r2 not recorded"
    );

    // A replica again: the gate is rebuilt from the record, without the
    // unit the refused r2 had taken on the node alone, so r3 gets all 3.
    let _replica = redis.replica();
    reserve(c, "acme", "r3", vec![line("A", "", 3)])
        .await
        .unwrap();
    let a = available(c, "acme", "A").await;
    assert_eq!((a.reserved, a.available), (5, 0));
    assert!(reconcile(c, "acme", true).await.drifts.is_empty());
}

/// Redis comes back without the last changes it answered, its `ready`
/// marker still there and the service's connection to it open: as after
/// a failover to a replica that lagged (Redis replicates asynchronously;
/// a cluster client follows the failover without an error) or a restart
/// from an older snapshot; here a reload of a `SAVE` made between two
/// reservations. The gate then
/// holds 4 of the 10 units the record holds, and would promise the other
/// 6 again. The replica that made the lost change finds it gone (the
/// count of its changes in the gate is behind what it was answered), so
/// the gate is rebuilt from the record before anything is promised.
#[tokio::test]
async fn a_gate_that_lost_changes_it_answered_is_rebuilt_before_it_promises() {
    let redis = RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    stocked(&mut h, &[("S", 10)]).await;
    let c = &mut h.client;
    reserve(c, "acme", "r1", vec![line("S", "", 4)])
        .await
        .unwrap();
    assert_eq!(redis.cli(&["SAVE"]).trim(), "OK");
    reserve(c, "acme", "r2", vec![line("S", "", 6)])
        .await
        .unwrap();
    redis.back_to_save();
    let held: i64 = redis
        .cli(&["EVAL", "local t = 0 for _, k in ipairs(redis.call('KEYS', '*avail:S')) do t = t + tonumber(redis.call('HGET', k, 'nh') or 0) end return t", "0"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(held, 4, "the gate came back without r2");

    let err = reserve(c, "acme", "r3", vec![line("S", "", 1)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 10);
    let report = reconcile(c, "acme", true).await;
    assert_clean(&report, "acme");
    // r2 is whole in the gate again: released, its units are promised.
    release_all(c, "r2").await.unwrap();
    reserve(c, "acme", "r4", vec![line("S", "", 6)])
        .await
        .unwrap();
}

/// The same loss when the replica that made the lost change makes no more
/// changes of the tenant while another replica sells: the first finds the
/// loss in its sweep and rebuilds the gate, so the other is refused too.
#[tokio::test]
async fn a_replica_that_changes_nothing_more_finds_its_lost_changes_in_its_sweep() {
    let redis = RedisServer::start();
    let overrides = [("OMS_REDIS_URL", redis.url())];
    let mut a = start_with(&overrides).await;
    stocked(&mut a, &[("S", 10)]).await;
    reserve(&mut a.client, "acme", "r1", vec![line("S", "", 4)])
        .await
        .unwrap();
    assert_eq!(redis.cli(&["SAVE"]).trim(), "OK");
    reserve(&mut a.client, "acme", "r2", vec![line("S", "", 6)])
        .await
        .unwrap();
    let config = oms_testkit::config_with(Service::Inventory, &a.db, &[], &overrides);
    let b = oms_testkit::spawn(config, oms_inventory::run).await;
    let ready = redis.cli(&["KEYS", "*ready"]).trim().to_owned();
    let epoch = redis.cli(&["GET", &ready]);
    redis.back_to_save();
    assert_eq!(
        redis.cli(&["GET", &ready]),
        epoch,
        "the old gate, as it was"
    );
    // A's sweep drops the gate and rebuilds it: a new epoch.
    wait_until(async || {
        let now = redis.cli(&["GET", &ready]);
        !now.trim().is_empty() && now != epoch
    })
    .await;
    let mut other = Client::new(b.channel());
    let err = reserve(&mut other, "acme", "r3", vec![line("S", "", 1)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    let report = reconcile(&mut other, "acme", true).await;
    assert_clean(&report, "acme");
}

/// A repeat of a recorded reservation in a batch that fails: the gate took
/// the reservation over (EXISTS) for the batch, but its record is the
/// first batch's, so its hold stays (given back, the units were promised
/// twice).
#[tokio::test]
async fn a_failed_repeat_of_a_reservation_leaves_its_hold() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 3)]).await;
    reserve(&mut h.client, "acme", "r1", vec![line("S", "", 2)])
        .await
        .unwrap();
    fail_reservation_row(&h.db, "r1").await;
    let err = reserve(&mut h.client, "acme", "r1", vec![line("S", "", 2)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    heal(&h.db).await;

    let err = reserve(&mut h.client, "acme", "r2", vec![line("S", "", 3)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    reserve(&mut h.client, "acme", "r2", vec![line("S", "", 1)])
        .await
        .unwrap();
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 3);
    assert!(
        reconcile(&mut h.client, "acme", true)
            .await
            .drifts
            .is_empty()
    );
}

/// Two batches of the same new reservation fail together: the first was
/// granted it, the second took the grant over (EXISTS) before the first
/// could give it back, so the first may not; nor may the second (the
/// record could have been the first's). Nobody records it: the second
/// drops the gate, and the units are promised again.
#[tokio::test]
async fn a_grant_taken_over_by_a_batch_that_fails_too_holds_nothing() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 3)]).await;
    let body = format!("{WAIT} RAISE EXCEPTION 'injected failure';");
    injected(
        &h.db,
        "INSERT ON reservations",
        "NEW.reservation_id = 'r1'",
        &body,
    )
    .await;
    let mut held = Held::new(&h.db).await;
    let attempt = || {
        let mut c = h.client.clone();
        tokio::spawn(async move { reserve(&mut c, "acme", "r1", vec![line("S", "", 2)]).await })
    };
    let first = attempt();
    held.awaited(&h.db).await;
    let second = attempt();
    held.awaited_by(&h.db, 2).await;
    held.release().await;
    for call in [first, second] {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    }
    heal(&h.db).await;

    reserve(&mut h.client, "acme", "r2", vec![line("S", "", 3)])
        .await
        .unwrap();
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 3);
    let report = reconcile(&mut h.client, "acme", true).await;
    assert_clean(&report, "acme");
}

/// A reservation whose gate answer is lost (Redis stalled past the
/// client's 500 ms; the script runs later) holds nothing once Redis goes
/// on: the failed batch's give-back follows its script on the connection.
#[tokio::test]
async fn a_reservation_whose_gate_answer_was_lost_holds_nothing() {
    let redis = RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    stocked(&mut h, &[("S", 4)]).await;
    // Loads the script: a script Redis does not know yet is not sent
    // again once its caller has given up.
    reserve(&mut h.client, "acme", "r0", vec![line("S", "", 1)])
        .await
        .unwrap();
    // Scripts wait, unanswered, until the test lets Redis go on; each then
    // runs in the order it came.
    assert_eq!(
        redis.cli(&["CLIENT", "PAUSE", "60000", "WRITE"]).trim(),
        "OK"
    );
    let err = reserve(&mut h.client, "acme", "r1", vec![line("S", "", 3)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(redis.cli(&["CLIENT", "UNPAUSE"]).trim(), "OK");

    let c = &mut h.client;
    reserve(c, "acme", "r2", vec![line("S", "", 3)])
        .await
        .unwrap();
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 4);
    assert!(reconcile(c, "acme", true).await.drifts.is_empty());
}

/// An inventory replica on a runtime of its own (so it can crash) over
/// `db` and the Redis keys under `prefix`.
async fn replica(db: TestDb, prefix: &str) -> Harness {
    let overrides = [("OMS_REDIS_KEY_PREFIX", prefix.to_string())];
    let config = oms_testkit::config_with(Service::Inventory, &db, &[], &overrides);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let svc = oms_testkit::spawn_isolated(listener, config, oms_inventory::run).await;
    let client = Client::new(svc.channel());
    Harness { db, svc, client }
}

/// With a wait injected in `call`'s transaction (past its gate change):
/// runs `call`, kills the replica while the transaction waits there, and
/// starts another over the same database and Redis keys.
async fn killed_inside<T: Send + 'static>(
    h: Harness,
    prefix: &str,
    call: impl Future<Output = Result<T, tonic::Status>> + Send + 'static,
) -> Harness {
    let mut held = Held::new(&h.db).await;
    let call = tokio::spawn(call);
    held.awaited(&h.db).await;
    let Harness { db, svc, .. } = h;
    svc.crash().await;
    assert!(
        call.await.unwrap().is_err(),
        "the call died with its replica"
    );
    held.release().await;
    heal(&db).await;
    replica(db, prefix).await
}

/// A replica dies while a confirmation's transaction is open, after the
/// gate confirmed: Redis (which outlives the replica) has the reservation
/// confirmed, the record has it active. The caller's retry, with the same
/// request id, reaches another replica and confirms it: it is not refused
/// as already confirmed (an order would wait on hold for good), and the
/// gate agrees with the record after.
#[tokio::test]
async fn a_confirmation_cut_short_by_a_crash_is_confirmed_by_its_retry() {
    let prefix = oms_testkit::redis_prefix();
    let mut h = replica(TestDb::new().await, &prefix).await;
    stocked(&mut h, &[("S", 3)]).await;
    reserve(&mut h.client, "acme", "r", vec![line("S", "", 2)])
        .await
        .unwrap();
    let confirm = ConfirmReservationRequest {
        request_id: "confirm-r".into(),
        name: "reservations/r".into(),
        allocations: vec![Allocation {
            sku: "S".into(),
            node_id: "DC1".into(),
            quantity: 2,
            ..Default::default()
        }],
    };
    pause_events(&h.db, "ReservationConfirmed", "reservations/r").await;
    let (mut c, req) = (h.client.clone(), confirm.clone());
    let call = async move { c.confirm_reservation(authed("acme", req)).await };
    let mut h = killed_inside(h, &prefix, call).await;
    let r = h
        .client
        .confirm_reservation(authed("acme", confirm))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(r.state(), ReservationState::Confirmed);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 2);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 1);
    let report = reconcile(&mut h.client, "acme", true).await;
    assert_clean(&report, "acme");
}

/// The value of acme's ready marker under `prefix` (the gate's epoch: a
/// rebuild gives it a new one), if there is one.
pub(crate) async fn epoch(prefix: &str) -> Option<String> {
    let mut redis = redis::Client::open(oms_testkit::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("GET")
        .arg(format!("{prefix}oms:inventory:{{acme}}:ready"))
        .query_async(&mut redis)
        .await
        .unwrap()
}

/// Changes the gate refuses (a release of more than is held, allocations
/// that do not cover the holds, a confirmation of a confirmed
/// reservation) change nothing there: the gate stays as it is, not
/// dropped and rebuilt from the record for each of them.
#[tokio::test]
async fn a_refused_change_keeps_the_gate() {
    let prefix = oms_testkit::redis_prefix();
    let mut h = start_with(&[("OMS_REDIS_KEY_PREFIX", prefix.clone())]).await;
    stocked(&mut h, &[("S", 3)]).await;
    reserve(&mut h.client, "acme", "r", vec![line("S", "", 2)])
        .await
        .unwrap();
    let before = epoch(&prefix).await;
    assert!(before.is_some());
    let at_dc1 = |q: i64| {
        vec![Allocation {
            sku: "S".into(),
            node_id: "DC1".into(),
            quantity: q,
            ..Default::default()
        }]
    };
    let release = ReleaseReservationRequest {
        request_id: rid(),
        name: "reservations/r".into(),
        lines: at_dc1(5),
        reason: "too many".into(),
    };
    let err = h
        .client
        .release_reservation(authed("acme", release))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let confirm = |q: i64| ConfirmReservationRequest {
        request_id: rid(),
        name: "reservations/r".into(),
        allocations: at_dc1(q),
    };
    let err = h
        .client
        .confirm_reservation(authed("acme", confirm(1)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    h.client
        .confirm_reservation(authed("acme", confirm(2)))
        .await
        .unwrap();
    let err = h
        .client
        .confirm_reservation(authed("acme", confirm(2)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(epoch(&prefix).await, before);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 1);
}

/// Replicas that said they are alive and were not found dead.
async fn replicas(db: &TestDb) -> i64 {
    let mut c = db.connect("inventory").await;
    sqlx::query_scalar("SELECT count(*) FROM gate_replicas")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// A replica dies while a new reservation's batch is open, after the gate
/// granted it: Redis keeps the grant, the record has no reservation, and
/// no caller retries it. The units would be promised to no one. Another
/// replica finds the dead one silent, and rebuilds the gate from the
/// record: the units are promised again, and the dead grant is gone (a
/// late repeat of it is a new reservation, checked against the stock).
#[tokio::test]
async fn units_a_dead_replica_took_come_back() {
    let prefix = oms_testkit::redis_prefix();
    let mut h = replica(TestDb::new().await, &prefix).await;
    stocked(&mut h, &[("S", 3)]).await;
    injected(
        &h.db,
        "INSERT ON reservations",
        "NEW.reservation_id = 'r1'",
        WAIT,
    )
    .await;
    let mut c = h.client.clone();
    let call = async move { reserve(&mut c, "acme", "r1", vec![line("S", "", 3)]).await };
    let mut h = killed_inside(h, &prefix, call).await;
    wait_until(async || replicas(&h.db).await == 1).await;
    reserve(&mut h.client, "acme", "r2", vec![line("S", "", 2)])
        .await
        .unwrap();
    let err = reserve(&mut h.client, "acme", "r1", vec![line("S", "", 3)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 2);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 1);
    let report = reconcile(&mut h.client, "acme", true).await;
    assert_clean(&report, "acme");
}

/// A replica dies inside a shipment's transaction (one of two allocated
/// units), after the gate consumed it: the gate holds one unit, the record
/// two. The retry, on another replica, ships one unit (not the gate's
/// last, which would end the reservation consumed with a unit still to
/// ship and free in the record), and the second shipment ships the other.
#[tokio::test]
async fn a_shipment_cut_short_by_a_crash_ships_once_by_its_retry() {
    let prefix = oms_testkit::redis_prefix();
    let mut h = replica(TestDb::new().await, &prefix).await;
    stocked(&mut h, &[("S", 3)]).await;
    confirmed_at_dc1(&mut h.client, "r", "S", 2).await;
    let shipment = |request_id: &str| ConsumeAllocationsRequest {
        request_id: request_id.into(),
        name: "reservations/r".into(),
        shipped: vec![shipped("S", 1, "", &[])],
        reference: "fulfillmentOrders/f1".into(),
    };
    pause_events(&h.db, "AllocationsConsumed", "reservations/r").await;
    let (mut c, req) = (h.client.clone(), shipment("ship-1"));
    let call = async move { c.consume_allocations(authed("acme", req)).await };
    let mut h = killed_inside(h, &prefix, call).await;
    let mut ship = async |request_id: &str| {
        h.client
            .consume_allocations(authed("acme", shipment(request_id)))
            .await
            .unwrap()
            .into_inner()
            .reservation
            .unwrap()
    };
    assert_eq!(ship("ship-1").await.state(), ReservationState::Confirmed);
    assert_eq!(ship("ship-2").await.state(), ReservationState::Consumed);
    let a = available(&mut h.client, "acme", "S").await;
    assert_eq!((a.on_hand, a.available), (1, 1));
    let report = reconcile(&mut h.client, "acme", true).await;
    assert_clean(&report, "acme");
}
