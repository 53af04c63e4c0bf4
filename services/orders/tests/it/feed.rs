use crate::*;
use oms_proto::orders::{OrderEvent, WatchOrderEventsRequest, order_event};
use tonic::Code;

/// The next event; a test that waits 30 s for one fails instead of
/// hanging the run.
async fn next(
    stream: &mut tonic::Streaming<oms_proto::orders::WatchOrderEventsResponse>,
) -> OrderEvent {
    tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
        .await
        .expect("an order event within 30 s")
        .unwrap()
        .expect("feed open")
        .event
        .unwrap()
}

/// The feed of `tenant` from its first event.
async fn from_start(
    c: &mut OrderServiceClient<Channel>,
    tenant: &str,
) -> tonic::Streaming<oms_proto::orders::WatchOrderEventsResponse> {
    c.watch_order_events(authed(tenant, WatchOrderEventsRequest::default()))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn the_feed_replays_resumes_and_follows() {
    let mut h = start().await;
    let first = create(&mut h.client, "acme", "r1", order("W1")).await;
    let second = create(&mut h.client, "acme", "r2", order("W2")).await;

    let mut feed = from_start(&mut h.client, "acme").await;
    let e1 = next(&mut feed).await;
    let e2 = next(&mut feed).await;
    assert_eq!(e1.order.as_ref().unwrap().name, first.name);
    assert_eq!(e2.order.as_ref().unwrap().name, second.name);
    assert!(matches!(e1.kind, Some(order_event::Kind::Created(_))));
    let m1 = e1.meta.unwrap();
    assert_eq!(
        (
            m1.tenant.as_str(),
            m1.subject.as_str(),
            m1.request_id.as_str()
        ),
        ("acme", first.name.as_str(), "r1")
    );

    // Follows new events as they commit.
    let third = create(&mut h.client, "acme", "r3", order("W3")).await;
    assert_eq!(next(&mut feed).await.order.unwrap().name, third.name);

    // Resumes right after a cursor.
    let mut resumed = h
        .client
        .watch_order_events(authed(
            "acme",
            WatchOrderEventsRequest {
                after_cursor: m1.cursor,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut resumed).await.order.unwrap().name, second.name);
}

#[tokio::test]
async fn the_feed_shows_only_the_callers_tenant() {
    let mut h = start().await;
    create(&mut h.client, "acme", "r1", order("T1")).await;
    let mut feed = from_start(&mut h.client, "globex").await;
    let mine = create(&mut h.client, "globex", "r1", order("T1")).await;
    let first = next(&mut feed).await;
    assert_eq!(
        first.order.unwrap().name,
        mine.name,
        "acme's event never reaches globex"
    );
}

#[tokio::test]
async fn events_carry_the_callers_trace() {
    let mut h = start().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut req = authed(
        "acme",
        oms_proto::orders::CreateOrderRequest {
            request_id: "traced".into(),
            order: Some(order("TR1")),
        },
    );
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    h.client.create_order(req).await.unwrap();
    let mut feed = from_start(&mut h.client, "acme").await;
    let meta = next(&mut feed).await.meta.unwrap();
    assert!(meta.traceparent.contains(trace_id), "{}", meta.traceparent);
}

/// One BatchCreateOrders serving submissions of several traces: each
/// order's event carries its own request's trace, a request without one
/// the call's, and a malformed one fails that request alone.
#[tokio::test]
async fn a_batch_keeps_each_order_in_its_own_trace() {
    use oms_proto::orders::{BatchCreateOrdersRequest, CreateOrderRequest, RequestTrace};
    use oms_runtime::status::from_rpc;
    let mut h = start().await;
    let (a, b, call) = (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1",
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2",
        "ccccccccccccccccccccccccccccccc3",
    );
    let traceparent = |id: &str| format!("00-{id}-00f067aa0ba902b7-01");
    let req = |id: &str, coid: &str| CreateOrderRequest {
        request_id: id.into(),
        order: Some(order(coid)),
    };
    let trace = |tp: String| RequestTrace {
        traceparent: tp,
        tracestate: String::new(),
    };
    let mut call_req = authed(
        "acme",
        BatchCreateOrdersRequest {
            requests: vec![
                req("t1", "TA"),
                req("t2", "TB"),
                req("t3", "TC"),
                req("t4", "TD"),
                req("t5", "TE"),
            ],
            // t4 names none (empty), t5 is past the end.
            traces: vec![
                trace(traceparent(a)),
                trace(traceparent(b)),
                trace("00-nothex-00f067aa0ba902b7-01".into()),
                trace(String::new()),
            ],
        },
    );
    call_req
        .metadata_mut()
        .insert("traceparent", traceparent(call).parse().unwrap());
    let results = h
        .client
        .batch_create_orders(call_req)
        .await
        .unwrap()
        .into_inner()
        .results;
    let err = from_rpc(results[2].status.as_ref().unwrap()).unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["traces[2].traceparent"]);
    let created: Vec<String> = [0, 1, 3, 4]
        .iter()
        .map(|i| results[*i].order.as_ref().unwrap().name.clone())
        .collect();

    let mut feed = from_start(&mut h.client, "acme").await;
    let mut trace_of = std::collections::HashMap::new();
    while trace_of.len() < created.len() {
        let e = next(&mut feed).await;
        if let Some(order_event::Kind::Created(_)) = e.kind {
            let meta = e.meta.unwrap();
            trace_of.insert(meta.subject, meta.traceparent);
        }
    }
    let expected = [a, b, call, call];
    for (name, id) in created.iter().zip(expected) {
        assert!(
            trace_of[name].contains(id),
            "{name}: {} not in trace {id}",
            trace_of[name]
        );
    }

    let too_many = BatchCreateOrdersRequest {
        requests: vec![req("t6", "TF")],
        traces: vec![trace(String::new()), trace(String::new())],
    };
    let err = h
        .client
        .batch_create_orders(authed("acme", too_many))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["traces"]);
}

#[tokio::test]
async fn a_bad_cursor_is_invalid() {
    let mut h = start().await;
    let err = h
        .client
        .watch_order_events(authed(
            "acme",
            WatchOrderEventsRequest {
                after_cursor: "nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["after_cursor"]);

    // Well formed, but beyond every event: followed, it would skip events
    // until the feed caught up with it.
    create(&mut h.client, "acme", "r1", order("C1")).await;
    let mut feed = h
        .client
        .watch_order_events(authed(
            "acme",
            WatchOrderEventsRequest {
                after_cursor: "99999999999.1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), feed.message())
        .await
        .expect("an answer within 30 s")
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(fields(&err), ["after_cursor"]);
}
