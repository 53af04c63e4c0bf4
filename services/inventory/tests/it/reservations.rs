use crate::*;
use futures::StreamExt as _;
use futures::future::join_all;
use tonic::Code;

#[tokio::test]
async fn five_hundred_concurrent_reservations_for_a_hundred_units_grant_exactly_a_hundred() {
    let mut h = start().await;
    stocked(&mut h, &[("HOT", 100)]).await;
    let calls = (0..500).map(|i| {
        let mut c = h.client.clone();
        async move { reserve(&mut c, "acme", &format!("r{i}"), vec![line("HOT", "", 1)]).await }
    });
    let results = join_all(calls).await;
    let granted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(granted, 100);
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(
            (r.code(), reason(r)),
            (Code::FailedPrecondition, "INSUFFICIENT_STOCK".into()),
            "{r:?}"
        );
    }
    let a = available(&mut h.client, "acme", "HOT").await;
    assert_eq!((a.available, a.reserved), (0, 100));
    assert_eq!(held_in_record(&h.db, "acme", "HOT").await, 100);
}

#[tokio::test]
async fn multi_line_reservations_are_all_or_nothing_under_contention() {
    let mut h = start().await;
    stocked(&mut h, &[("A", 30), ("B", 10)]).await;
    // 60 reservations want one A and one B; 40 want two A only.
    let calls = (0..100).map(|i| {
        let mut c = h.client.clone();
        let lines = if i % 5 < 3 {
            vec![line("A", "", 1), line("B", "", 1)]
        } else {
            vec![line("A", "", 2)]
        };
        async move { (i, reserve(&mut c, "acme", &format!("m{i}"), lines).await) }
    });
    let results = join_all(calls).await;
    let mut db = h.db.connect("inventory").await;
    let (mut a_used, mut b_used) = (0, 0);
    for (i, r) in &results {
        let holds: Vec<(String, i64)> =
            sqlx::query_as("SELECT sku, held FROM holds WHERE reservation_id = $1 ORDER BY sku")
                .bind(format!("m{i}"))
                .fetch_all(&mut db)
                .await
                .unwrap();
        match r {
            Ok(_) if i % 5 < 3 => {
                assert_eq!(holds, [("A".to_string(), 1), ("B".to_string(), 1)]);
                a_used += 1;
                b_used += 1;
            }
            Ok(_) => {
                assert_eq!(holds, [("A".to_string(), 2)]);
                a_used += 2;
            }
            Err(e) => {
                assert_eq!(reason(e), "INSUFFICIENT_STOCK");
                assert!(holds.is_empty(), "a refused reservation holds nothing");
            }
        }
    }
    assert!(
        a_used <= 30 && b_used <= 10,
        "oversold: A {a_used}, B {b_used}"
    );
    assert_eq!(b_used, 10, "B sells out");
    assert_eq!(
        available(&mut h.client, "acme", "A").await.available,
        30 - a_used
    );
    assert_eq!(available(&mut h.client, "acme", "B").await.available, 0);
}

#[tokio::test]
async fn repeating_a_reservation_id_returns_the_first_result() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 5)]).await;
    let first = reserve(&mut h.client, "acme", "same", vec![line("S", "", 2)])
        .await
        .unwrap();
    let calls = (0..10).map(|_| {
        let mut c = h.client.clone();
        async move {
            reserve(&mut c, "acme", "same", vec![line("S", "", 2)])
                .await
                .unwrap()
        }
    });
    for again in join_all(calls).await {
        assert_eq!(again, first);
    }
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 3);
    let err = reserve(&mut h.client, "acme", "same", vec![line("S", "", 3)])
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (Code::InvalidArgument, vec!["reservation_id".to_string()])
    );
    // Another tenant's id space is its own.
    let err = reserve(&mut h.client, "globex", "same", vec![line("S", "", 2)])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "globex has no item S: {err:?}"
    );
}

#[tokio::test]
async fn repeating_a_finished_reservation_returns_it_and_takes_nothing() {
    let redis = oms_testkit::RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    stocked(&mut h, &[("S", 2)]).await;
    let first = reserve(&mut h.client, "acme", "done", vec![line("S", "", 2)])
        .await
        .unwrap();
    let released = h
        .client
        .release_reservation(authed(
            "acme",
            ReleaseReservationRequest {
                request_id: "rel".into(),
                name: "reservations/done".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(released.state(), ReservationState::Released);
    let again = reserve(&mut h.client, "acme", "done", vec![line("S", "", 2)])
        .await
        .unwrap();
    assert_eq!(again, released, "the record as it is now");
    assert_eq!(again.create_time, first.create_time);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 2);
    // The gate rebuilt from the record holds live reservations only: a
    // repeat of a finished one is granted there, then answered from the
    // record, and the grant goes back.
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "FLUSHALL"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let again = reserve(&mut h.client, "acme", "done", vec![line("S", "", 2)])
        .await
        .unwrap();
    assert_eq!(again, released);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 2);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 0);
    // Whatever the stock is now: with every unit taken, a repeat still
    // returns the first result, not a refusal.
    reserve(&mut h.client, "acme", "all", vec![line("S", "", 2)])
        .await
        .unwrap();
    let again = reserve(&mut h.client, "acme", "done", vec![line("S", "", 2)])
        .await
        .unwrap();
    assert_eq!(again, released);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 0);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 2);
    let err = reserve(&mut h.client, "acme", "done", vec![line("S", "", 1)])
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (Code::InvalidArgument, vec!["reservation_id".to_string()])
    );
}

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn a_stream_answers_each_reservation_in_order_as_the_unary_call_would() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 3)]).await;
    let msg = |id: &str, lines: Vec<ReservationLine>| StreamReservationsRequest {
        reservation: Some(CreateReservationRequest {
            reservation_id: id.into(),
            lines,
            ..Default::default()
        }),
        ..Default::default()
    };
    let sent = vec![
        msg("a", vec![line("S", "", 2)]),
        msg("bad", vec![line("S", "", 0)]),
        msg("b", vec![line("S", "", 2)]),
        msg("a", vec![line("S", "", 2)]),
        // Its own trace (its order's), not the stream's.
        StreamReservationsRequest {
            traceparent: TRACE.into(),
            ..msg("c", vec![line("S", "", 1)])
        },
        StreamReservationsRequest {
            traceparent: "00-not-a-trace-01".into(),
            ..msg("d", vec![line("S", "", 1)])
        },
    ];
    // The stream itself continues the caller's trace.
    let stream_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut open = authed("acme", tokio_stream::iter(sent));
    open.metadata_mut()
        .insert("traceparent", stream_trace.parse().unwrap());
    let answers: Vec<StreamReservationsResponse> = h
        .client
        .stream_reservations(open)
        .await
        .unwrap()
        .into_inner()
        .map(|a| a.unwrap())
        .collect()
        .await;
    let seen: Vec<(&str, i32)> = answers
        .iter()
        .map(|a| (a.reservation_id.as_str(), a.status.as_ref().unwrap().code))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a", Code::Ok as i32),
            ("bad", Code::InvalidArgument as i32),
            ("b", Code::FailedPrecondition as i32),
            ("a", Code::Ok as i32),
            ("c", Code::Ok as i32),
            ("d", Code::InvalidArgument as i32),
        ]
    );
    // The errors carry the details the unary call gives.
    let bad = oms_runtime::status::from_rpc(answers[1].status.as_ref().unwrap()).unwrap();
    assert_eq!(fields(&bad), vec!["lines[0].quantity".to_string()]);
    let short = oms_runtime::status::from_rpc(answers[2].status.as_ref().unwrap()).unwrap();
    assert_eq!(reason(&short), "INSUFFICIENT_STOCK");
    let untraced = oms_runtime::status::from_rpc(answers[5].status.as_ref().unwrap()).unwrap();
    assert_eq!(fields(&untraced), vec!["traceparent".to_string()]);
    assert_eq!(answers[0].reservation, answers[3].reservation);
    assert!(answers[1].reservation.is_none());
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 0);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 3);
    // Each event carries its reservation's trace: c's the one it named, a's
    // the stream's (the trace id the caller sent, the server's span).
    let mut conn = h.db.connect("inventory").await;
    let traces: Vec<(String, String)> = sqlx::query_as(
        "SELECT subject, traceparent FROM outbox WHERE event_type = 'StockReserved' ORDER BY subject",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let trace_id = |tp: &str| tp.split('-').nth(1).unwrap_or_default().to_string();
    let seen: Vec<(&str, String)> = traces
        .iter()
        .map(|(s, tp)| (s.as_str(), trace_id(tp)))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("reservations/a", trace_id(stream_trace)),
            ("reservations/c", trace_id(TRACE))
        ]
    );
    assert_eq!(traces[1].1, TRACE);
    // A stream authenticates when it opens.
    let err = h
        .client
        .stream_reservations(tokio_stream::iter(vec![msg("d", vec![line("S", "", 1)])]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

/// A caller that sends a burst of reservations, each message in a DATA
/// frame of its own (as grpc-go and grpcurl send them), faster than they
/// are answered, is slowed by flow control: not cut off. Before, HTTP/2's
/// guard against floods of small frames (h2 0.4.16 and later) closed the
/// whole connection (`GOAWAY ENHANCE_YOUR_CALM`) once a few thousand of
/// them waited to be read.
#[tokio::test]
async fn a_burst_of_small_messages_on_a_stream_is_slowed_not_cut_off() {
    const BURST: usize = 6000;
    let mut h = start().await;
    stocked(&mut h, &[("S", BURST as i64)]).await;
    // Each message is made ready on its own, so each goes in its own frame.
    let sent = futures::stream::unfold(0, |i| async move {
        if i == BURST {
            return None;
        }
        tokio::task::yield_now().await;
        let msg = StreamReservationsRequest {
            reservation: Some(CreateReservationRequest {
                reservation_id: format!("b{i}"),
                lines: vec![line("S", "", 1)],
                ..Default::default()
            }),
            ..Default::default()
        };
        Some((msg, i + 1))
    });
    let answers: Vec<_> = h
        .client
        .stream_reservations(authed("acme", sent))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    let ok = answers
        .iter()
        .filter(|a| matches!(a, Ok(a) if a.status.as_ref().is_some_and(|s| s.code == 0)))
        .count();
    let failed = answers
        .iter()
        .find_map(|a| a.as_ref().err().map(|e| e.to_string()));
    assert_eq!((ok, failed), (BURST, None));
    assert_eq!(held_in_record(&h.db, "acme", "S").await, BURST as i64);
}

#[tokio::test]
async fn a_stream_open_at_shutdown_ends_unavailable() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 3)]).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = h
        .client
        .stream_reservations(authed(
            "acme",
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .unwrap()
        .into_inner();
    tx.send(StreamReservationsRequest {
        reservation: Some(CreateReservationRequest {
            reservation_id: "a".into(),
            lines: vec![line("S", "", 1)],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let first = answers.message().await.unwrap().unwrap();
    assert_eq!(first.status.unwrap().code, Code::Ok as i32);
    // The caller keeps the stream open; the server stops.
    let stopping = tokio::spawn(h.svc.stop());
    let err = answers.message().await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::Unavailable, "SHUTTING_DOWN".to_string())
    );
    stopping.await.unwrap().unwrap();
    drop(tx);
}

#[tokio::test]
async fn a_new_reservation_sent_many_times_at_once_is_granted_once() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 10), ("T", 10)]).await;
    // Sent together, the copies share batches (the gate sees the id twice
    // in one script) or follow one another: either way one grant.
    let calls = (0..20).map(|_| {
        let mut c = h.client.clone();
        async move {
            reserve(
                &mut c,
                "acme",
                "twin",
                vec![line("S", "", 3), line("T", "", 1)],
            )
            .await
        }
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(results.iter().all(|r| *r == results[0]), "{results:?}");
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 7);
    assert_eq!(available(&mut h.client, "acme", "T").await.available, 9);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 3);
    assert_eq!(held_in_record(&h.db, "acme", "T").await, 1);
    // One grant, one event: the copies that found it granted say so.
    let mut c = h.db.connect("inventory").await;
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE tenant = 'acme' AND event_type = 'StockReserved'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(events, 1);
}

#[tokio::test]
async fn bad_reservations_change_nothing() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 5)]).await;
    let err = reserve(&mut h.client, "acme", "x1", vec![line("S", "", 0)])
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["lines[0].quantity"]);
    let err = reserve(
        &mut h.client,
        "acme",
        "x2",
        vec![line("S", "", 1), line("NOPE", "", 1)],
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["lines[1].sku"]);
    let err = reserve(&mut h.client, "acme", "x3", vec![line("S", "DC9", 1)])
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["lines[0].node_id"]);
    let err = reserve(&mut h.client, "acme", "x4", vec![line("S", "", 6)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 5);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 0);
}

async fn confirm(
    c: &mut Client,
    tenant: &str,
    request_id: &str,
    id: &str,
    allocs: &[(&str, &str, i64)],
) -> Result<Reservation, tonic::Status> {
    c.confirm_reservation(authed(
        tenant,
        ConfirmReservationRequest {
            request_id: request_id.into(),
            name: format!("reservations/{id}"),
            allocations: allocations(allocs),
        },
    ))
    .await
    .map(|r| r.into_inner().reservation.unwrap())
}

#[tokio::test]
async fn reservations_confirms_and_releases_at_once_keep_the_held_totals() {
    let mut h = start().await;
    stocked(&mut h, &[("HOT", 1000), ("B", 1000)]).await;
    let first = (0..100).map(|i| {
        let mut c = h.client.clone();
        let lines = vec![line("HOT", "", 2), line("B", "", 1)];
        async move { reserve(&mut c, "acme", &format!("a{i}"), lines).await }
    });
    for r in join_all(first).await {
        r.unwrap();
    }
    // New reservations of the same SKUs while the first ones are confirmed
    // (units move to DC1) or released, all at once: every write adds to the
    // same totals, none may fail (a deadlock would) or leave them off.
    let new = (0..200).map(|i| {
        let mut c = h.client.clone();
        let lines = vec![line("HOT", "", 1), line("B", "", 1)];
        async move {
            reserve(&mut c, "acme", &format!("b{i}"), lines)
                .await
                .map(|_| ())
        }
    });
    let changes = (0..100).map(|i| {
        let mut c = h.client.clone();
        async move {
            let id = format!("a{i}");
            if i % 2 == 0 {
                let allocs = [("B", "DC1", 1), ("HOT", "DC1", 2)];
                confirm(&mut c, "acme", &format!("c{i}"), &id, &allocs)
                    .await
                    .map(|_| ())
            } else {
                c.release_reservation(authed(
                    "acme",
                    ReleaseReservationRequest {
                        request_id: format!("r{i}"),
                        name: format!("reservations/{id}"),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ())
            }
        }
    });
    let (new, changes) = tokio::join!(join_all(new), join_all(changes));
    for r in new.into_iter().chain(changes) {
        r.unwrap();
    }
    // 50 confirmed (2 HOT and 1 B each) and 200 new (1 of each) remain held.
    assert_eq!(held_in_record(&h.db, "acme", "HOT").await, 50 * 2 + 200);
    assert_eq!(held_in_record(&h.db, "acme", "B").await, 50 + 200);
    let a = available(&mut h.client, "acme", "HOT").await;
    assert_eq!((a.reserved, a.available), (300, 700));
}

/// Releases units of an acme reservation: per SKU and node.
async fn release_some(c: &mut Client, id: &str, sku: &str, node: &str, q: i64) -> Reservation {
    c.release_reservation(authed(
        "acme",
        ReleaseReservationRequest {
            request_id: rid(),
            name: format!("reservations/{id}"),
            lines: vec![Allocation {
                sku: sku.into(),
                node_id: node.into(),
                quantity: q,
                ..Default::default()
            }],
            reason: "partial".into(),
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .reservation
    .unwrap()
}

/// A line as (node reserved at, quantity, released, allocations as node
/// and units).
type LineView<'a> = (&'a str, i64, i64, Vec<(&'a str, i64)>);

fn lines_of(r: &Reservation) -> Vec<LineView<'_>> {
    r.lines
        .iter()
        .map(|l| {
            let a = l
                .allocations
                .iter()
                .map(|a| (a.node_id.as_str(), a.quantity))
                .collect();
            (l.node_id.as_str(), l.quantity, l.quantity_released, a)
        })
        .collect()
}

#[tokio::test]
async fn each_line_tells_what_it_holds_when_a_sku_is_reserved_twice() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 10)]).await;
    node(&mut h.client, "acme", "DC2").await;
    receive(&mut h.client, "acme", "DC2", "S", 10).await;
    let c = &mut h.client;
    let lines = vec![line("S", "", 2), line("S", "DC1", 1)];
    reserve(c, "acme", "twice", lines.clone()).await.unwrap();

    // Units released at DC1 are the DC1 line's, not the first line's.
    let r = release_some(c, "twice", "S", "DC1", 1).await;
    assert_eq!(lines_of(&r), [("", 2, 0, vec![]), ("DC1", 1, 1, vec![])]);
    // So allocations built from the lines fit what is held.
    let r = confirm(c, "acme", &rid(), "twice", &[("S", "DC2", 2)])
        .await
        .unwrap();
    assert_eq!(
        lines_of(&r),
        [("", 2, 0, vec![("DC2", 2)]), ("DC1", 1, 1, vec![])]
    );
    // A confirmed line counts what its allocations released.
    let r = release_some(c, "twice", "S", "DC2", 1).await;
    assert_eq!(
        lines_of(&r),
        [("", 2, 1, vec![("DC2", 1)]), ("DC1", 1, 1, vec![])]
    );

    // Each line's units are allocated on it: the DC1 line's at DC1 first.
    reserve(c, "acme", "both", lines).await.unwrap();
    let r = confirm(c, "acme", &rid(), "both", &[("S", "DC1", 3)])
        .await
        .unwrap();
    assert_eq!(
        lines_of(&r),
        [
            ("", 2, 0, vec![("DC1", 2)]),
            ("DC1", 1, 0, vec![("DC1", 1)])
        ]
    );
    let dc = |a: &Availability| (a.node_id.clone(), a.reserved);
    let per_node: Vec<_> = c
        .get_availability(authed(
            "acme",
            GetAvailabilityRequest {
                skus: vec!["S".into()],
                node_ids: vec!["DC1".into(), "DC2".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .availabilities
        .iter()
        .map(dc)
        .collect();
    assert_eq!(per_node, [("DC1".into(), 3), ("DC2".into(), 1)]);
}

#[tokio::test]
async fn confirm_release_and_ship_keep_stock_in_step() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 10)]).await;
    node(&mut h.client, "acme", "DC2").await;
    receive(&mut h.client, "acme", "DC2", "S", 2).await;
    reserve(&mut h.client, "acme", "r1", vec![line("S", "", 6)])
        .await
        .unwrap();

    let err = confirm(&mut h.client, "acme", "c0", "r1", &[("S", "DC1", 5)])
        .await
        .unwrap_err();
    assert_eq!(
        fields(&err),
        ["allocations"],
        "allocations must cover the reservation"
    );
    assert!(
        err.message()
            .contains("6 of items/S held in the network (no node yet), allocations give 5"),
        "{}",
        err.message()
    );
    let err = confirm(&mut h.client, "acme", "c0b", "r1", &[("S", "DC2", 6)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "DC2 has only 2");
    let err = confirm(&mut h.client, "globex", "c0c", "r1", &[("S", "DC1", 6)])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "a foreign reservation does not exist for you"
    );
    // A lot belongs to shipped units only: a confirmation naming one is
    // refused, not taken silently as if it pinned the lot.
    let pinned = ConfirmReservationRequest {
        request_id: rid(),
        name: "reservations/r1".into(),
        allocations: vec![Allocation {
            lot: "L1".into(),
            ..shipped("S", 6, "", &[])
        }],
    };
    let err = h
        .client
        .confirm_reservation(authed("acme", pinned))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["allocations[0].lot"]);
    // Nothing ships before it is confirmed.
    let early = ConsumeAllocationsRequest {
        request_id: rid(),
        name: "reservations/r1".into(),
        shipped: vec![shipped("S", 1, "", &[])],
        reference: "fulfillmentOrders/f0".into(),
    };
    let err = (h.client.consume_allocations(authed("acme", early)).await).unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, "RESERVATION_NOT_CONFIRMED".into())
    );

    let r = confirm(
        &mut h.client,
        "acme",
        "c1",
        "r1",
        &[("S", "DC1", 4), ("S", "DC2", 2)],
    )
    .await
    .unwrap();
    assert_eq!(r.state, ReservationState::Confirmed as i32);
    assert_eq!(
        r.expire_time, None,
        "a confirmed reservation does not expire"
    );
    let replay = confirm(
        &mut h.client,
        "acme",
        "c1",
        "r1",
        &[("S", "DC1", 4), ("S", "DC2", 2)],
    )
    .await
    .unwrap();
    assert_eq!(replay, r);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 6);

    // Release more than held: refused, nothing changes.
    let release = |request_id: &str, q: i64| ReleaseReservationRequest {
        request_id: request_id.into(),
        name: "reservations/r1".into(),
        lines: vec![Allocation {
            sku: "S".into(),
            node_id: "DC2".into(),
            quantity: q,
            ..Default::default()
        }],
        reason: "customer changed mind".into(),
    };
    let err = h
        .client
        .release_reservation(authed("acme", release("rel0", 3)))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RELEASE_EXCEEDS_HELD");
    assert_eq!(err.message(), "2 of items/S held at nodes/DC2; 3 asked");
    let long = ReleaseReservationRequest {
        reason: "x".repeat(501),
        ..release("rel0b", 1)
    };
    let err = h
        .client
        .release_reservation(authed("acme", long))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["reason"]);
    h.client
        .release_reservation(authed("acme", release("rel1", 1)))
        .await
        .unwrap();
    h.client
        .release_reservation(authed("acme", release("rel1", 1)))
        .await
        .unwrap();
    assert_eq!(
        available(&mut h.client, "acme", "S").await.available,
        7,
        "a replayed release frees once"
    );

    let ship = ConsumeAllocationsRequest {
        request_id: "ship1".into(),
        name: "reservations/r1".into(),
        shipped: vec![Allocation {
            sku: "S".into(),
            node_id: "DC1".into(),
            quantity: 4,
            ..Default::default()
        }],
        reference: "fulfillmentOrders/f1".into(),
    };
    let long = ConsumeAllocationsRequest {
        reference: "x".repeat(201),
        ..ship.clone()
    };
    let err = h
        .client
        .consume_allocations(authed("acme", long))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["reference"]);
    h.client
        .consume_allocations(authed("acme", ship.clone()))
        .await
        .unwrap();
    h.client
        .consume_allocations(authed("acme", ship))
        .await
        .unwrap();
    let a = available(&mut h.client, "acme", "S").await;
    assert_eq!(
        (a.on_hand, a.reserved, a.available),
        (8, 1, 7),
        "shipping leaves availability as it was"
    );
    // What is left held, at DC2, in the holds and in the totals alike.
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 1);

    let rest = ConsumeAllocationsRequest {
        request_id: "ship2".into(),
        name: "reservations/r1".into(),
        shipped: vec![Allocation {
            sku: "S".into(),
            node_id: "DC2".into(),
            quantity: 1,
            ..Default::default()
        }],
        reference: "fulfillmentOrders/f2".into(),
    };
    let done = h
        .client
        .consume_allocations(authed("acme", rest))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(done.state, ReservationState::Consumed as i32);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 0);
    let err = h
        .client
        .release_reservation(authed("acme", release("rel9", 1)))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RESERVATION_NOT_ACTIVE");
}

/// A reservation of `units` of S that expires 300 ms after it is made
/// (the sweeper runs every 50 ms in tests).
fn short_lived(id: &str, units: i64) -> CreateReservationRequest {
    CreateReservationRequest {
        reservation_id: id.into(),
        lines: vec![line("S", "", units)],
        ttl: Some(prost_types::Duration {
            seconds: 0,
            nanos: 300_000_000,
        }),
        ..Default::default()
    }
}

/// Follows the inventory feed to the next reservation released because it
/// expired; that reservation.
async fn until_expired(feed: &mut tonic::Streaming<WatchInventoryEventsResponse>) -> Reservation {
    until_expiry(feed).await.reservation.unwrap()
}

/// Follows the inventory feed to the next expiry's event.
async fn until_expiry(
    feed: &mut tonic::Streaming<WatchInventoryEventsResponse>,
) -> ReservationReleased {
    loop {
        let ev = feed.message().await.unwrap().unwrap().event.unwrap();
        if let Some(inventory_event::Kind::ReservationReleased(r)) = ev.kind
            && r.reason == "expired"
        {
            return r;
        }
    }
}

#[tokio::test]
async fn an_unconfirmed_reservation_expires_and_its_stock_returns() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 3)]).await;
    let mut feed = acme_events(&mut h.client).await;
    h.client
        .create_reservation(authed("acme", short_lived("short-lived", 3)))
        .await
        .unwrap();
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 0);
    let event = until_expiry(&mut feed).await;
    // It says what came back (before 2026-12-05 `released` was empty).
    let released: Vec<(&str, &str, i64)> = (event.released.iter())
        .map(|a| (a.sku.as_str(), a.node_id.as_str(), a.quantity))
        .collect();
    assert_eq!(released, [("S", "", 3)]);
    let expired = event.reservation.unwrap();
    assert_eq!(expired.reservation_id, "short-lived");
    assert_eq!(expired.state, ReservationState::Expired as i32);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 3);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 0);
    let err = confirm(
        &mut h.client,
        "acme",
        "late",
        "short-lived",
        &[("S", "DC1", 3)],
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "RESERVATION_EXPIRED");
}

/// A renewal (`ExtendReservation` with a `ttl`, no lines): an active
/// reservation then expires `ttl` from now, later or sooner, in the record
/// and the gate alike; a confirmed one refuses it.
#[tokio::test]
async fn an_active_reservation_is_renewed_by_a_ttl() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 3)]).await;
    let mut feed = acme_events(&mut h.client).await;
    reserve(&mut h.client, "acme", "cart", vec![line("S", "", 2)])
        .await
        .unwrap();
    let made = reservation(&mut h.client, "acme", "cart").await;
    let renew = |rid: &str, ttl: std::time::Duration| ExtendReservationRequest {
        ttl: prost_types::Duration::try_from(ttl).ok(),
        ..extend_request(rid, "cart", &[])
    };
    let day = std::time::Duration::from_secs(24 * 3600);
    let longer = h
        .client
        .extend_reservation(authed("acme", renew("r1", day)));
    let longer = longer.await.unwrap().into_inner().reservation.unwrap();
    // A day from the renewal, not from when it would have expired.
    let made_at = made.create_time.unwrap().seconds;
    let renewed_to = longer.expire_time.unwrap().seconds - made_at;
    assert!(
        (24 * 3600..24 * 3600 + 60).contains(&renewed_to),
        "{longer:?}"
    );
    assert_eq!(longer.lines, made.lines, "nothing added");
    assert_eq!(reservation(&mut h.client, "acme", "cart").await, longer);
    assert!(
        reconcile(&mut h.client, "acme", true)
            .await
            .drifts
            .is_empty()
    );
    // Bad input: a ttl out of bounds, and neither lines nor a ttl.
    let err = h
        .client
        .extend_reservation(authed("acme", renew("r2", day * 8)))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["ttl"]);
    let err = h
        .client
        .extend_reservation(authed("acme", extend_request("r3", "cart", &[])))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["lines"]);
    // Sooner: the sweep expires it then, and its units come back.
    let soon = std::time::Duration::from_millis(200);
    h.client
        .extend_reservation(authed("acme", renew("r4", soon)))
        .await
        .unwrap();
    assert_eq!(until_expired(&mut feed).await.reservation_id, "cart");
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 3);
    let err = h
        .client
        .extend_reservation(authed("acme", renew("r5", day)))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RESERVATION_EXPIRED");
    // Renewed before its 2 s were up, a cart outlives them, in the record
    // (the sweep) and in the gate (which refuses changes of a reservation
    // past its time) alike: it is confirmed after they passed.
    let short = CreateReservationRequest {
        ttl: Some(prost_types::Duration {
            seconds: 2,
            nanos: 0,
        }),
        ..short_lived("order", 1)
    };
    let short = h.client.create_reservation(authed("acme", short)).await;
    let short = short.unwrap().into_inner().reservation.unwrap();
    let renewed = ExtendReservationRequest {
        ttl: prost_types::Duration::try_from(day).ok(),
        ..extend_request("r6", "order", &[])
    };
    h.client
        .extend_reservation(authed("acme", renewed))
        .await
        .unwrap();
    let was_due = short.expire_time.unwrap();
    let past = |t: &prost_types::Timestamp| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.unwrap().as_secs_f64() > t.seconds as f64 + f64::from(t.nanos) / 1e9 + 0.2
    };
    wait_until(async || past(&was_due)).await;
    confirm(&mut h.client, "acme", "c1", "order", &[("S", "DC1", 1)])
        .await
        .unwrap();
    // Confirmed, it does not expire: nothing to renew.
    let confirmed = ExtendReservationRequest {
        ttl: prost_types::Duration::try_from(day).ok(),
        ..extend_request("r7", "order", &[])
    };
    let err = h.client.extend_reservation(authed("acme", confirmed));
    assert_eq!(reason(&err.await.unwrap_err()), "RESERVATION_CONFIRMED");
}

#[tokio::test]
async fn the_sweep_deletes_reservations_finished_longer_ago_than_the_retention() {
    let mut h = start_with(&[("OMS_RESERVATION_RETENTION_DAYS", "1".into())]).await;
    stocked(&mut h, &[("S", 3)]).await;
    for id in ["old", "live"] {
        reserve(&mut h.client, "acme", id, vec![line("S", "", 1)])
            .await
            .unwrap();
    }
    release_all(&mut h.client, "old").await.unwrap();
    // Both last changed two days ago; only the finished one may go.
    let mut c = h.db.connect("inventory").await;
    sqlx::query("UPDATE reservations SET update_time = now() - interval '2 days'")
        .execute(&mut c)
        .await
        .unwrap();
    let mut feed = acme_events(&mut h.client).await;
    // A barrier: this reservation is expired by a sweep that starts at
    // least one sweep after the UPDATE above, so by its event the sweep
    // before it, which purges after expiring, has run on the old rows.
    h.client
        .create_reservation(authed("acme", short_lived("barrier", 1)))
        .await
        .unwrap();
    assert_eq!(until_expired(&mut feed).await.reservation_id, "barrier");
    let get = |id: &str| GetReservationRequest {
        name: format!("reservations/{id}"),
    };
    let err = h
        .client
        .get_reservation(authed("acme", get("old")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    for (id, state) in [
        ("live", ReservationState::Active),
        ("barrier", ReservationState::Expired),
    ] {
        let r = reservation(&mut h.client, "acme", id).await;
        assert_eq!(r.state, state as i32, "{id}");
    }
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 2);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 1);
}

/// The gate may know a finished reservation whose record is gone (a gate
/// record kept past the retention: an older version dropped the gate's
/// expiry of a finished record when its request was repeated). A repeat
/// is refused: storing it afresh would record a hold the gate does not
/// keep.
#[tokio::test]
async fn a_repeat_of_a_finished_reservation_whose_record_is_gone_is_refused() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 3)]).await;
    reserve(&mut h.client, "acme", "r", vec![line("S", "", 1)])
        .await
        .unwrap();
    release_all(&mut h.client, "r").await.unwrap();
    // A repeat while the record is there is answered from it.
    let again = reserve(&mut h.client, "acme", "r", vec![line("S", "", 1)])
        .await
        .unwrap();
    assert_eq!(again.state, ReservationState::Released as i32);
    let mut c = h.db.connect("inventory").await;
    sqlx::query("DELETE FROM reservations WHERE reservation_id = 'r'")
        .execute(&mut c)
        .await
        .unwrap();
    let err = reserve(&mut h.client, "acme", "r", vec![line("S", "", 1)])
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (
            Code::FailedPrecondition,
            "RESERVATION_FORGOTTEN".to_string()
        ),
        "{err:?}"
    );
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 0);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 3);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_confirm_after_expiry_is_refused_even_before_the_sweep() {
    // A slow sweep: the confirm itself finds the reservation expired.
    let mut h = start_with(&[("OMS_SWEEP_INTERVAL_MS", "3600000".into())]).await;
    stocked(&mut h, &[("S", 3)]).await;
    h.client
        .create_reservation(authed(
            "acme",
            CreateReservationRequest {
                reservation_id: "r".into(),
                lines: vec![line("S", "", 2)],
                ttl: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 100_000_000,
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    // The TTL itself must run out: here time passing is what is tested.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let err = confirm(&mut h.client, "acme", "c", "r", &[("S", "DC1", 2)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RESERVATION_EXPIRED");
    let got = reservation(&mut h.client, "acme", "r").await;
    assert_eq!(got.state(), ReservationState::Expired);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 3);
}

/// A sweep expires every reservation due, however many (a flash sale's
/// abandoned carts): before, it expired 200, one after the other, and the
/// rest waited for the next sweeps, their units kept from sale.
/// Stocks `n` units of S and reserves each in a cart of its own over one
/// stream, due 100 ms later; the carts granted.
async fn carts_reserved(h: &mut Harness, n: usize) -> usize {
    stocked(h, &[("S", n as i64)]).await;
    let carts = (0..n).map(|i| StreamReservationsRequest {
        reservation: Some(CreateReservationRequest {
            reservation_id: format!("cart{i}"),
            lines: vec![line("S", "", 1)],
            ttl: Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    h.client
        .stream_reservations(authed("acme", tokio_stream::iter(carts)))
        .await
        .unwrap()
        .into_inner()
        .filter(|a| std::future::ready(a.as_ref().is_ok_and(|a| a.reservation.is_some())))
        .count()
        .await
}

#[tokio::test]
async fn one_sweep_expires_a_whole_backlog() {
    const CARTS: usize = 1200;
    let slow = sweeping_once_per_start();
    let mut h = start_with(&slow).await;
    assert_eq!(carts_reserved(&mut h, CARTS).await, CARTS);
    // The TTL itself must run out: here time passing is what is tested.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let mut h = restarted(h, &slow).await;
    wait_until(async || available(&mut h.client, "acme", "S").await.available == CARTS as i64)
        .await;
    assert_eq!(expired_in_record(&h.db).await, CARTS as i64);
}

/// Sweeps an hour apart (a replica sweeps once as it starts, then not
/// again within a test), and one gate (Redis key prefix) for every replica
/// and restart, as in a deployment.
fn sweeping_once_per_start() -> Vec<(&'static str, String)> {
    vec![
        ("OMS_SWEEP_INTERVAL_MS", "3600000".into()),
        ("OMS_REDIS_KEY_PREFIX", oms_testkit::redis_prefix()),
    ]
}

/// The service stopped and started again with `overrides`: a replica
/// sweeps once as it starts.
async fn restarted(h: Harness, overrides: &[(&str, String)]) -> Harness {
    let Harness { db, svc, .. } = h;
    svc.stop().await.unwrap();
    let config = oms_testkit::config_with(Service::Inventory, &db, &[], overrides);
    let svc = oms_testkit::spawn(config, oms_inventory::run).await;
    let client = Client::new(svc.channel());
    Harness { db, svc, client }
}

async fn expired_in_record(db: &oms_testkit::TestDb) -> i64 {
    let mut conn = db.connect("inventory").await;
    sqlx::query_scalar("SELECT count(*) FROM reservations WHERE state = 'expired'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Carts of every shape expire a batch at a time (`expire_many`): more
/// than one batch; lines in the network and at nodes, of several SKUs. A
/// cart confirmed before the sweep is kept. Each expired cart released
/// every line, its units came back where they were held, and the gate
/// agrees with the record.
#[tokio::test]
async fn expiry_batches_free_every_hold_of_every_cart_and_nothing_else() {
    const CARTS: usize = 300;
    let slow = sweeping_once_per_start();
    let mut h = start_with(&slow).await;
    stocked(&mut h, &[("S", 1000), ("T", 1000)]).await;
    node(&mut h.client, "acme", "DC2").await;
    receive(&mut h.client, "acme", "DC2", "T", 500).await;
    for i in 0..CARTS {
        let lines = match i % 3 {
            0 => vec![line("S", "", 1)],
            1 => vec![line("S", "DC1", 2), line("T", "", 1)],
            _ => vec![line("T", "DC2", 1), line("T", "", 1), line("S", "", 1)],
        };
        cart(&mut h.client, "acme", &format!("cart{i}"), lines).await;
    }
    confirmed_at_dc1(&mut h.client, "kept", "S", 2).await;
    let t_held: i64 = (0..CARTS).map(|i| [0, 1, 2][i % 3]).sum();
    assert_eq!(
        available(&mut h.client, "acme", "T").await.available,
        1500 - t_held
    );
    // The TTL itself must run out: here time passing is what is tested.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let mut h = restarted(h, &slow).await;
    wait_until(async || expired_in_record(&h.db).await == CARTS as i64).await;
    for i in 0..CARTS {
        let r = reservation(&mut h.client, "acme", &format!("cart{i}")).await;
        assert_eq!(r.state(), ReservationState::Expired, "cart{i}");
        assert!(
            r.lines.iter().all(|l| l.quantity_released == l.quantity),
            "cart{i}: {:?}",
            r.lines
        );
        assert!(r.expire_time.is_some(), "an expired cart keeps its time");
    }
    let kept = reservation(&mut h.client, "acme", "kept").await;
    assert_eq!(kept.state(), ReservationState::Confirmed);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 2);
    assert_eq!(held_in_record(&h.db, "acme", "T").await, 0);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 998);
    assert_eq!(available(&mut h.client, "acme", "T").await.available, 1500);
    no_drift(&mut h.client).await;
    // The units held at DC2 came back to DC2.
    reserve(
        &mut h.client,
        "acme",
        "all-dc2",
        vec![line("T", "DC2", 500)],
    )
    .await
    .unwrap();
    let mut conn = h.db.connect("inventory").await;
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'ReservationReleased' AND subject LIKE 'reservations/cart%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(events, CARTS as i64, "one event per cart");
}

/// A reservation that cannot expire (the database refuses its row: here a
/// trigger) fails its batch; the batch's other carts then expire one by
/// one, and it alone stays active, its unit held.
#[tokio::test]
async fn a_cart_that_cannot_expire_keeps_no_other_from_expiring() {
    let slow = sweeping_once_per_start();
    let mut h = start_with(&slow).await;
    stocked(&mut h, &[("S", 10)]).await;
    let when = "NEW.reservation_id = 'cart2' AND NEW.state = 'expired'";
    let body = "RAISE EXCEPTION 'injected: this reservation cannot expire';";
    crate::recovery::injected(&h.db, "UPDATE ON reservations", when, body).await;
    five_carts(&mut h.client).await;
    let epoch = gate_epoch(&slow).await;
    // The TTL itself must run out: here time passing is what is tested.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let mut h = restarted(h, &slow).await;
    wait_until(async || expired_in_record(&h.db).await == 4).await;
    let stuck = reservation(&mut h.client, "acme", "cart2").await;
    assert_eq!(stuck.state(), ReservationState::Active);
    // Refused before the gate was changed: the gate was not dropped (and
    // rebuilt at every sweep).
    assert_eq!(gate_epoch(&slow).await, epoch);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 1);
    // The gate holds that unit and no other.
    let err = reserve(&mut h.client, "acme", "ten", vec![line("S", "", 10)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");
    reserve(&mut h.client, "acme", "nine", vec![line("S", "", 9)])
        .await
        .unwrap();
}

/// acme's carts `cart0`..`cart4`, one unit of S each, due 100 ms later.
async fn five_carts(c: &mut Client) {
    for i in 0..5 {
        cart(c, "acme", &format!("cart{i}"), vec![line("S", "", 1)]).await;
    }
}

/// acme's gate epoch under the Redis key prefix of `config`.
async fn gate_epoch(config: &[(&str, String)]) -> Option<String> {
    let prefix = config.iter().find(|(k, _)| *k == "OMS_REDIS_KEY_PREFIX");
    crate::recovery::epoch(&prefix.unwrap().1).await
}

/// A batch the gate disagrees with changes nothing; the gate is rebuilt
/// from the record and the batch then expires every cart. Five carts,
/// whose gate records `tamper` changes before the sweep.
async fn expired_after_a_rebuild(tamper: impl FnOnce(&oms_testkit::RedisServer)) {
    let redis = oms_testkit::RedisServer::start();
    let mut slow = sweeping_once_per_start();
    slow.push(("OMS_REDIS_URL", redis.url()));
    let mut h = start_with(&slow).await;
    stocked(&mut h, &[("S", 10)]).await;
    five_carts(&mut h.client).await;
    tamper(&redis);
    // The TTL itself must run out: here time passing is what is tested.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let mut h = restarted(h, &slow).await;
    wait_until(async || expired_in_record(&h.db).await == 5).await;
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 10);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 0);
    no_drift(&mut h.client).await;
}

fn gate_record(redis: &oms_testkit::RedisServer, id: &str) -> String {
    let key = redis.cli(&["--scan", "--pattern", &format!("*res:{id}")]);
    key.trim().to_owned()
}

#[tokio::test]
async fn an_expiry_batch_with_a_cart_the_gate_lost_waits_for_a_rebuild() {
    expired_after_a_rebuild(|redis| {
        assert_eq!(
            redis.cli(&["DEL", &gate_record(redis, "cart3")]).trim(),
            "1"
        );
    })
    .await;
}

/// The gate holds a cart as released though the record has it active (a
/// release whose commit never came): the gate is ahead of the record.
#[tokio::test]
async fn an_expiry_batch_with_a_cart_the_gate_is_ahead_on_waits_for_a_rebuild() {
    expired_after_a_rebuild(|redis| {
        let key = gate_record(redis, "cart3");
        let record = redis.cli(&["GET", &key]);
        let released = record
            .trim()
            .replace(r#""s":"active""#, r#""s":"released""#);
        assert_ne!(released, record.trim());
        assert_eq!(redis.cli(&["SET", &key, &released]).trim(), "OK");
    })
    .await;
}

/// Replicas that sweep the same backlog at once take turns per
/// reservation (`FOR UPDATE SKIP LOCKED`): each cart expires once, its unit
/// goes back once, and the gate agrees with the record.
#[tokio::test]
async fn two_replicas_sweeping_one_backlog_expire_each_cart_once() {
    const CARTS: usize = 600;
    let slow = sweeping_once_per_start();
    let mut h = start_with(&slow).await;
    assert_eq!(carts_reserved(&mut h, CARTS).await, CARTS);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 0);
    // The TTL itself must run out: here time passing is what is tested.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let Harness { db, svc, .. } = h;
    svc.stop().await.unwrap();
    // Two replicas start together; each sweeps once as it starts.
    let config = || oms_testkit::config_with(Service::Inventory, &db, &[], &slow);
    let (a, b) = tokio::join!(
        oms_testkit::spawn(config(), oms_inventory::run),
        oms_testkit::spawn(config(), oms_inventory::run)
    );
    let mut c = Client::new(a.channel());
    wait_until(async || available(&mut c, "acme", "S").await.available == CARTS as i64).await;
    let mut conn = db.connect("inventory").await;
    let count = async |conn: &mut sqlx::PgConnection, sql: &'static str| -> i64 {
        sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
    };
    let expired = "SELECT count(*) FROM reservations WHERE state = 'expired'";
    assert_eq!(count(&mut conn, expired).await, CARTS as i64);
    let events = "SELECT count(*) FROM outbox WHERE event_type = 'ReservationReleased'";
    assert_eq!(
        count(&mut conn, events).await,
        CARTS as i64,
        "one event per cart"
    );
    // Neither replica gave a unit back twice: the gate grants the stock
    // and no more, through either replica.
    let drifts = reconcile(&mut c, "acme", true).await.drifts;
    assert!(drifts.is_empty(), "{drifts:?}");
    let mut other = Client::new(b.channel());
    let all = CreateReservationRequest {
        reservation_id: "all".into(),
        lines: vec![line("S", "", CARTS as i64 + 1)],
        ..Default::default()
    };
    let err = other
        .create_reservation(authed("acme", all.clone()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");
    let all = CreateReservationRequest {
        lines: vec![line("S", "", CARTS as i64)],
        ..all
    };
    other.create_reservation(authed("acme", all)).await.unwrap();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_live_reservation_grows_all_or_nothing_within_its_channel() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 10), ("T", 5)]).await;
    // The web channel sells DC1 only and keeps 2 units back.
    h.client
        .set_channel_rule(authed(
            "acme",
            SetChannelRuleRequest {
                request_id: rid(),
                rule: Some(ChannelRule {
                    channel: "channels/web".into(),
                    node_ids: vec!["DC1".into()],
                    buffer: Some(channel_rule::Buffer::BufferQuantity(2)),
                }),
                remove: false,
            },
        ))
        .await
        .unwrap();
    // A reservation of S in the web channel.
    let web = |id: &str, quantity| {
        let req = CreateReservationRequest {
            reservation_id: id.into(),
            lines: vec![line("S", "", quantity)],
            channel: "channels/web".into(),
            ..Default::default()
        };
        authed("acme", req)
    };
    h.client.create_reservation(web("r1", 4)).await.unwrap();
    let client = h.client.clone();
    let extend = |req: ExtendReservationRequest| {
        let mut c = client.clone();
        async move {
            c.extend_reservation(authed("acme", req))
                .await
                .map(|r| r.into_inner().reservation.unwrap())
        }
    };

    // The channel has 10 - 4 - 2 = 4 more S: 5 is refused, T with it.
    let err = extend(extend_request("e0", "r1", &[("S", "", 5), ("T", "", 1)]))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK", "{err:?}");
    assert_eq!(subjects(&err), ["channels/web/items/S"]);
    let err = h.client.create_reservation(web("r2", 5)).await.unwrap_err();
    assert_eq!(subjects(&err), ["channels/web/items/S"], "{err:?}");
    assert_eq!(available(&mut h.client, "acme", "T").await.reserved, 0);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 4);

    let r = extend(extend_request("e1", "r1", &[("S", "", 3), ("T", "", 1)]))
        .await
        .unwrap();
    assert_eq!(r.state, ReservationState::Active as i32);
    let held: Vec<(String, i64)> = r
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect();
    assert_eq!(held, [("S".to_string(), 7), ("T".to_string(), 1)]);
    let replay = extend(extend_request("e1", "r1", &[("S", "", 3), ("T", "", 1)]))
        .await
        .unwrap();
    assert_eq!(
        replay, r,
        "a replay answers the same and holds nothing more"
    );
    let s = available(&mut h.client, "acme", "S").await;
    assert_eq!((s.reserved, s.available), (7, 3));
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 7);
    assert_eq!(held_in_record(&h.db, "acme", "T").await, 1);

    let err = extend(extend_request(
        "e2",
        "r1",
        &[("NOPE", "", 1), ("S", "DCX", 1)],
    ))
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["lines[0].sku", "lines[1].node_id"]);
    let err = extend(extend_request("e3", "r1", &[("S", "", 0)]))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["lines[0].quantity"]);
    // More than the gate counts exactly: bad input, not "unavailable".
    let err = extend(extend_request("e3b", "r1", &[("S", "", i64::MAX)]))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (Code::InvalidArgument, vec!["lines[0].quantity".into()])
    );
    let err = h
        .client
        .extend_reservation(authed(
            "globex",
            extend_request("e4", "r1", &[("S", "", 1)]),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "a foreign reservation does not exist for you"
    );

    // Confirmed: added units are allocations, so they name their node.
    confirm(
        &mut h.client,
        "acme",
        "c1",
        "r1",
        &[("S", "DC1", 7), ("T", "DC1", 1)],
    )
    .await
    .unwrap();
    let err = extend(extend_request("e5", "r1", &[("S", "", 1)]))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["lines[0].node_id"]);
    let r = extend(extend_request("e6", "r1", &[("S", "DC1", 1)]))
        .await
        .unwrap();
    let s_line = r.lines.iter().find(|l| l.sku == "S").unwrap();
    assert_eq!(s_line.quantity, 8);
    assert_eq!(
        s_line
            .allocations
            .iter()
            .map(|a| (a.node_id.as_str(), a.quantity))
            .collect::<Vec<_>>(),
        [("DC1", 8)]
    );
    // DC1 has 2 more S, all of them the channel's buffer.
    let err = extend(extend_request("e7", "r1", &[("S", "DC1", 1)]))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");
    let s = available(&mut h.client, "acme", "S").await;
    assert_eq!((s.reserved, s.available), (8, 2));

    // The added units ship like the others.
    let shipped = h
        .client
        .consume_allocations(authed(
            "acme",
            ConsumeAllocationsRequest {
                request_id: "ship".into(),
                name: "reservations/r1".into(),
                shipped: vec![
                    Allocation {
                        sku: "S".into(),
                        node_id: "DC1".into(),
                        quantity: 8,
                        ..Default::default()
                    },
                    Allocation {
                        sku: "T".into(),
                        node_id: "DC1".into(),
                        quantity: 1,
                        ..Default::default()
                    },
                ],
                reference: "fulfillmentOrders/f1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(shipped.state, ReservationState::Consumed as i32);
    let s = available(&mut h.client, "acme", "S").await;
    assert_eq!((s.on_hand, s.reserved, s.available), (2, 0, 2));
    // One shipment: both lines left at one moment.
    let req = ListMovementsRequest {
        reference: "fulfillmentOrders/f1".into(),
        ..Default::default()
    };
    let moves = h.client.list_movements(authed("acme", req)).await.unwrap();
    let left: Vec<_> = moves
        .into_inner()
        .movements
        .iter()
        .map(|m| (m.quantity, m.occur_time))
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[0].1.is_some());
    assert_eq!(left[0].1, left[1].1, "{left:?}");
}

/// A refusal of stock outside the web channel's pool, naming the entry.
fn outside(err: &tonic::Status, entry: &str) {
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(err), "OUTSIDE_CHANNEL_POOL");
    assert_eq!(
        err.message(),
        format!("not in the pool of nodes of channels/web: {entry}")
    );
}

/// A channel with a pool takes stock at the pool's nodes only: a line, an
/// allocation or an added unit at another node is refused and changes
/// nothing; without its rule the channel takes stock anywhere again.
#[tokio::test]
async fn a_channel_takes_stock_only_at_the_nodes_of_its_pool() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 10)]).await;
    node(&mut h.client, "acme", "STORE1").await;
    receive(&mut h.client, "acme", "STORE1", "S", 5).await;
    let rule = |request_id: &str, remove: bool| SetChannelRuleRequest {
        request_id: request_id.into(),
        rule: Some(ChannelRule {
            channel: "channels/web".into(),
            node_ids: if remove { vec![] } else { vec!["DC1".into()] },
            buffer: None,
        }),
        remove,
    };
    let c = &mut h.client;
    c.set_channel_rule(authed("acme", rule("pool", false)))
        .await
        .unwrap();
    let via_web = |id: &str, lines: Vec<ReservationLine>| CreateReservationRequest {
        reservation_id: id.into(),
        lines,
        channel: "channels/web".into(),
        ..Default::default()
    };
    let both = vec![line("S", "DC1", 1), line("S", "STORE1", 1)];
    let err = c
        .create_reservation(authed("acme", via_web("r0", both)))
        .await
        .unwrap_err();
    outside(&err, "lines[1].node_id: nodes/STORE1");
    c.create_reservation(authed("acme", via_web("r1", vec![line("S", "", 3)])))
        .await
        .unwrap();
    let err = confirm(
        c,
        "acme",
        "c0",
        "r1",
        &[("S", "DC1", 1), ("S", "STORE1", 2)],
    )
    .await
    .unwrap_err();
    outside(&err, "allocations[1].node_id: nodes/STORE1");
    let r = reservation(c, "acme", "r1").await;
    assert_eq!(r.state, ReservationState::Active as i32);
    confirm(c, "acme", "c1", "r1", &[("S", "DC1", 3)])
        .await
        .unwrap();
    let err = c
        .extend_reservation(authed(
            "acme",
            extend_request("e0", "r1", &[("S", "STORE1", 1)]),
        ))
        .await
        .unwrap_err();
    outside(&err, "lines[0].node_id: nodes/STORE1");
    assert_eq!(available(c, "acme", "S").await.reserved, 3);
    assert_eq!(held_in_record(&h.db, "acme", "S").await, 3);

    let c = &mut h.client;
    c.set_channel_rule(authed("acme", rule("no-pool", true)))
        .await
        .unwrap();
    c.extend_reservation(authed(
        "acme",
        extend_request("e1", "r1", &[("S", "STORE1", 1)]),
    ))
    .await
    .unwrap();
    assert_eq!(available(c, "acme", "S").await.reserved, 4);
}

/// Shipments of lot- and serial-tracked units leave on-hand by lot and
/// serial number; a shipment of a serial not there changes nothing.
#[tokio::test]
async fn shipments_consume_by_lot_and_serial_number() {
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    tracked_item(c, "LOT", |i| i.lot_tracked = true).await;
    tracked_item(c, "PH", |i| i.serial_tracked = true).await;
    for lot in ["L1", "L2"] {
        movement(c, &rid(), MovementKind::Receipt, "DC1", "LOT", |m| {
            m.lot = lot.into();
            m.quantity = 2;
        })
        .await
        .unwrap();
    }
    movement(c, &rid(), MovementKind::Receipt, "DC1", "PH", |m| {
        m.quantity = 5;
        m.serial_numbers = ["V", "W", "X", "Y", "Z"].map(String::from).to_vec();
    })
    .await
    .unwrap();

    // Two lots in one shipment: each leaves its own lot.
    confirmed_at_dc1(c, "lots", "LOT", 3).await;
    let r = ship(
        c,
        "lots",
        vec![shipped("LOT", 2, "L1", &[]), shipped("LOT", 1, "L2", &[])],
    )
    .await
    .unwrap();
    assert_eq!(r.state, ReservationState::Consumed as i32);
    let levels = stock_levels(c, "", "LOT").await;
    let by_lot: Vec<(String, i64)> = levels.iter().map(|l| (l.lot.clone(), l.on_hand)).collect();
    assert_eq!(by_lot, [("L1".to_string(), 0), ("L2".to_string(), 1)]);

    // A lot reported for an item not kept per lot is ignored.
    confirmed_at_dc1(c, "plain", "PH", 1).await;
    let r = ship(c, "plain", vec![shipped("PH", 1, "L9", &["Z"])])
        .await
        .unwrap();
    assert_eq!(r.state, ReservationState::Consumed as i32);

    // Serial numbers missing, or one unit's given to two entries: bad
    // input, named by the request's own fields, and nothing consumed.
    confirmed_at_dc1(c, "pair", "PH", 2).await;
    let err = ship(c, "pair", vec![shipped("PH", 2, "", &["W"])])
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (
            Code::InvalidArgument,
            vec!["shipped[0].serial_numbers".into()]
        )
    );
    let twice = vec![shipped("PH", 1, "", &["W"]), shipped("PH", 1, "", &["W"])];
    let err = ship(c, "pair", twice).await.unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (
            Code::InvalidArgument,
            vec!["shipped[1].serial_numbers[0]".into()]
        )
    );
    assert!(
        err.message().contains("shipped by shipped[0] too"),
        "{err:?}"
    );
    let untouched = reservation(c, "acme", "pair").await;
    assert_eq!(untouched.lines[0].allocations[0].quantity_consumed, 0);
    let both = vec![shipped("PH", 1, "", &["W"]), shipped("PH", 1, "", &["Y"])];
    let r = ship(c, "pair", both).await.unwrap();
    assert_eq!(r.state, ReservationState::Consumed as i32);

    // A serial that is not there: refused, nothing consumed, and the
    // allocation still ships with the right serial.
    confirmed_at_dc1(c, "phones", "PH", 1).await;
    let err = ship(c, "phones", vec![shipped("PH", 1, "", &["Q"])])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SERIAL_NOT_ON_HAND", "{err:?}");
    let r = ship(c, "phones", vec![shipped("PH", 1, "", &["X"])])
        .await
        .unwrap();
    assert_eq!(r.state, ReservationState::Consumed as i32);
    let left = c
        .list_serial_numbers(authed(
            "acme",
            ListSerialNumbersRequest {
                sku: "PH".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .serial_numbers;
    assert_eq!(
        left.iter()
            .map(|s| s.serial_number.as_str())
            .collect::<Vec<_>>(),
        ["V"]
    );
    let a = available(c, "acme", "PH").await;
    assert_eq!((a.on_hand, a.reserved, a.available), (1, 0, 1));
}

/// Which reservations hold a SKU, or hold at a node: what an operator
/// looks for when stock under reservations was found short or expired.
#[tokio::test]
async fn reservations_are_listed_by_what_they_hold_and_where() {
    let mut h = start().await;
    stocked(&mut h, &[("A", 10), ("B", 10)]).await;
    node(&mut h.client, "acme", "DC2").await;
    receive(&mut h.client, "acme", "DC2", "B", 5).await;
    let c = &mut h.client;
    confirmed_at_dc1(c, "at-dc1", "A", 2).await;
    reserve(c, "acme", "anywhere", vec![line("A", "", 1)])
        .await
        .unwrap();
    reserve(c, "acme", "b-at-dc2", vec![line("B", "DC2", 1)])
        .await
        .unwrap();
    confirmed_at_dc1(c, "released", "A", 1).await;
    release_all(c, "released").await.unwrap();
    let mut ids = async |sku: &str, node: &str| -> Result<Vec<String>, tonic::Status> {
        let req = ListReservationsRequest {
            sku: sku.into(),
            node_id: node.into(),
            ..Default::default()
        };
        let page = c.list_reservations(authed("acme", req)).await?.into_inner();
        Ok(page
            .reservations
            .into_iter()
            .map(|r| r.reservation_id)
            .collect())
    };
    assert_eq!(ids("A", "").await.unwrap(), ["anywhere", "at-dc1"]);
    assert_eq!(ids("A", "DC1").await.unwrap(), ["at-dc1"]);
    assert_eq!(ids("", "DC2").await.unwrap(), ["b-at-dc2"]);
    assert_eq!(ids("B", "DC1").await.unwrap(), Vec::<String>::new());
    let err = ids("bad sku", "").await.unwrap_err();
    assert_eq!(fields(&err), ["sku"]);
}

/// Units asked at a disabled node are refused as a precondition, not as
/// bad input: the node may be enabled again, and a caller that planned by
/// it (a checkout reserving at a store) plans again. Unknown SKUs and
/// nodes stay field violations, and come first.
#[tokio::test]
async fn units_at_a_disabled_node_are_a_failed_precondition() {
    let mut h = start().await;
    stocked(&mut h, &[("SKU-1", 5)]).await;
    let c = &mut h.client;
    node(c, "acme", "DC2").await;
    receive(c, "acme", "DC2", "SKU-1", 5).await;
    c.update_node(authed("acme", enabling("DC2", false)))
        .await
        .unwrap();
    let lines = vec![line("SKU-1", "DC1", 1), line("SKU-1", "DC2", 1)];
    let err = reserve(c, "acme", "r1", lines).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err), subjects(&err)),
        (
            Code::FailedPrecondition,
            "NODE_DISABLED".to_string(),
            vec!["nodes/DC2".to_string()]
        )
    );
    assert!(err.message().contains("lines[1].node_id"), "{err:?}");
    let lines = vec![line("NOPE", "DC1", 1), line("SKU-1", "DC2", 1)];
    let err = reserve(c, "acme", "r2", lines).await.unwrap_err();
    assert_eq!(fields(&err), ["lines[0].sku"]);
    // An extension at the disabled node likewise.
    confirmed_at_dc1(c, "r3", "SKU-1", 1).await;
    let err = c
        .extend_reservation(authed(
            "acme",
            ExtendReservationRequest {
                request_id: rid(),
                name: "reservations/r3".into(),
                lines: vec![Allocation {
                    sku: "SKU-1".into(),
                    node_id: "DC2".into(),
                    quantity: 1,
                    ..Default::default()
                }],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "NODE_DISABLED");
    assert_eq!(
        available(c, "acme", "SKU-1").await.available,
        4,
        "nothing else held"
    );
}
