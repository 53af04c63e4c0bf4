use crate::*;
use oms_proto::orders::{
    CancelOrderLinesRequest, CancelOrderRequest, EditOrderLinesRequest, GetOrderRequest,
    OrderState, PlaceHoldRequest, ReleaseHoldRequest, UpdateOrderRequest,
};
use tonic::Code;

#[tokio::test]
async fn created_order_is_stored_with_its_event_and_history() {
    let mut h = start().await;
    // Output-only fields a caller sends are not kept (before 2026-12-04 a
    // routing decision and a cancel request were).
    let mut sent = order("1001");
    sent.routing_decision = "decisions/forged".into();
    sent.cancel_requested = true;
    sent.reservation = "reservations/other".into();
    let o = create(&mut h.client, "acme", "req-1", sent).await;
    assert!(o.name.starts_with("orders/"));
    assert_eq!(o.state, OrderState::Created as i32);
    assert_eq!(
        (o.routing_decision.as_str(), o.cancel_requested),
        ("", false)
    );
    assert_eq!(o.reservation, format!("reservations/order-{}", o.order_id));
    assert_eq!(o.lines[0].line_id, "1");
    assert_eq!(o.lines[1].line_id, "2");
    assert_eq!(o.totals.as_ref().unwrap().total, eur(2 * 1250 + 999));
    assert_eq!(o.version, 1);

    let got = h
        .client
        .get_order(authed(
            "acme",
            GetOrderRequest {
                name: o.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(got, o);

    let mut db = h.db.connect("orders").await;
    let (events, subject): (i64, String) =
        sqlx::query_as("SELECT count(*), max(subject) FROM outbox WHERE tenant = 'acme' AND event_type = 'OrderCreated'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((events, subject), (1, o.name.clone()));
    let history: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM order_history WHERE kind = 'OrderCreated' AND actor = 'test'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(history, 1);
}

#[tokio::test]
async fn a_repeated_request_returns_the_first_order_and_changes_nothing() {
    let h = start().await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let mut c = h.client.clone();
            tokio::spawn(async move { create(&mut c, "acme", "same-request", order("2001")).await })
        })
        .collect();
    let mut names = std::collections::HashSet::new();
    for t in tasks {
        names.insert(t.await.unwrap().name);
    }
    assert_eq!(names.len(), 1, "every replay answers with the same order");

    let mut db = h.db.connect("orders").await;
    let (orders, events): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM outbox)")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((orders, events), (1, 1));
}

#[tokio::test]
async fn a_request_id_reused_for_another_order_is_refused() {
    let mut h = start().await;
    create(&mut h.client, "acme", "req-x", order("3001")).await;
    let err = h
        .client
        .create_order(authed(
            "acme",
            CreateOrderRequest {
                request_id: "req-x".into(),
                order: Some(order("3002")),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["request_id"]);
    assert_eq!(reason(&err), "REQUEST_ID_REUSED");
}

#[tokio::test]
async fn request_ids_are_per_tenant() {
    let mut h = start().await;
    let a = create(&mut h.client, "acme", "req-1", order("4001")).await;
    let b = create(&mut h.client, "globex", "req-1", order("4001")).await;
    assert_ne!(a.name, b.name);
}

#[tokio::test]
async fn the_same_channel_order_twice_is_already_exists() {
    let mut h = start().await;
    let first = create(&mut h.client, "acme", "req-1", order("5001")).await;
    let err = h
        .client
        .create_order(authed(
            "acme",
            CreateOrderRequest {
                request_id: "req-2".into(),
                order: Some(order("5001")),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(reason(&err), "CHANNEL_ORDER_EXISTS");
    use tonic_types::StatusExt;
    assert_eq!(
        err.get_error_details()
            .resource_info()
            .unwrap()
            .resource_name,
        first.name
    );
}

#[tokio::test]
async fn bad_orders_get_every_field_violation_and_store_nothing() {
    let mut h = start().await;
    let mut bad = order("6001");
    bad.currency_code = "euro".into();
    bad.lines[0].quantity = 0;
    bad.lines[1].sku.clear();
    bad.ship_to.as_mut().unwrap().country_code = "Germany".into();
    let err = h
        .client
        .create_order(authed(
            "acme",
            CreateOrderRequest {
                request_id: String::new(),
                order: Some(bad),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "INVALID_ARGUMENT");
    let f = fields(&err);
    for expected in [
        "request_id",
        "order.currency_code",
        "order.lines[0].quantity",
        "order.lines[1].sku",
        "order.ship_to.country_code",
    ] {
        assert!(
            f.iter().any(|x| x == expected),
            "{expected} missing from {f:?}"
        );
    }
    let err = h
        .client
        .create_order(authed(
            "acme",
            CreateOrderRequest {
                request_id: "r".into(),
                order: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["order"]);
    // Without request ids, custom methods name that too, with the rest.
    let err = h
        .client
        .update_order(authed("acme", UpdateOrderRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["request_id", "order"]);
    let err = h
        .client
        .place_hold(authed("acme", PlaceHoldRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["request_id", "name", "type"]);
    let err = h
        .client
        .cancel_order_lines(authed("acme", CancelOrderLinesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["request_id", "name", "lines"]);
    // A reason beyond what inventory keeps of one (an edit's goes on to
    // it), on every change that takes one.
    let long = "r".repeat(501);
    let c = &mut h.client;
    let hold = PlaceHoldRequest {
        reason: long.clone(),
        ..Default::default()
    };
    let err = c.place_hold(authed("acme", hold)).await.unwrap_err();
    assert_eq!(fields(&err), ["request_id", "name", "type", "reason"]);
    let release = ReleaseHoldRequest {
        reason: long.clone(),
        ..Default::default()
    };
    let err = c.release_hold(authed("acme", release)).await.unwrap_err();
    assert_eq!(fields(&err), ["request_id", "name", "type", "reason"]);
    let cancel = CancelOrderRequest {
        reason: long.clone(),
        ..Default::default()
    };
    let err = c.cancel_order(authed("acme", cancel)).await.unwrap_err();
    assert_eq!(fields(&err), ["request_id", "name", "reason"]);
    let cancel = CancelOrderLinesRequest {
        reason: long.clone(),
        ..Default::default()
    };
    let err = c
        .cancel_order_lines(authed("acme", cancel))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["request_id", "name", "lines", "reason"]);
    let edit = EditOrderLinesRequest {
        reason: long.clone(),
        ..Default::default()
    };
    let err = c.edit_order_lines(authed("acme", edit)).await.unwrap_err();
    assert_eq!(fields(&err), ["request_id", "name", "lines", "reason"]);
    let update = UpdateOrderRequest {
        reason: long.clone(),
        ..Default::default()
    };
    let err = c.update_order(authed("acme", update)).await.unwrap_err();
    assert_eq!(fields(&err), ["reason", "request_id", "order"]);

    let mut db = h.db.connect("orders").await;
    let stored: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM idempotency)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let mut h = start().await;
    let err = h
        .client
        .get_order(GetOrderRequest {
            name: "orders/x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "TOKEN_MISSING");

    let mut req = tonic::Request::new(GetOrderRequest {
        name: "orders/x".into(),
    });
    req.metadata_mut()
        .insert("authorization", "Bearer not.a.jwt".parse().unwrap());
    let err = h.client.get_order(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "TOKEN_INVALID");
}

#[tokio::test]
async fn a_batch_answers_each_order_as_create_order_would() {
    use oms_proto::orders::BatchCreateOrdersRequest;
    use oms_runtime::status::from_rpc;
    let mut h = start().await;
    let existing = create(&mut h.client, "acme", "req-0", order("7000")).await;
    let mut bad = order("7002");
    bad.lines[0].quantity = 0;
    let req = |id: &str, o| CreateOrderRequest {
        request_id: id.into(),
        order: Some(o),
    };
    let batch = BatchCreateOrdersRequest {
        requests: vec![
            req("req-1", order("7001")),
            req("req-2", bad),
            req("req-3", order("7000")),
            req("req-0", order("7000")),
        ],
        traces: vec![],
    };
    let results = h
        .client
        .batch_create_orders(authed("acme", batch.clone()))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 4);
    let err = |i: usize| from_rpc(results[i].status.as_ref().unwrap());
    assert!(err(0).is_none());
    let created = results[0].order.clone().unwrap();
    assert_eq!(created.channel_order_id, "7001");
    let invalid = err(1).unwrap();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(fields(&invalid), ["order.lines[0].quantity"]);
    let duplicate = err(2).unwrap();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    assert_eq!(reason(&duplicate), "CHANNEL_ORDER_EXISTS");
    assert!(err(3).is_none(), "a repeat of req-0 replays it");
    assert_eq!(results[3].order.as_ref().unwrap().name, existing.name);

    // The whole batch again changes nothing and answers the same.
    let again = h
        .client
        .batch_create_orders(authed("acme", batch))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(again[0].order.as_ref().unwrap().name, created.name);
    let mut db = h.db.connect("orders").await;
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(orders, 2);

    let too_many = BatchCreateOrdersRequest {
        requests: (0..1001)
            .map(|i| req(&format!("r{i}"), order("x")))
            .collect(),
        traces: vec![],
    };
    let err = h
        .client
        .batch_create_orders(authed("acme", too_many))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["requests"]);
}

/// An order created with holds (a channel order not paid yet) is stored
/// on hold, not placed, and goes to placement when the last is released;
/// a hold of no type, or of a type given twice, is refused.
#[tokio::test]
async fn an_order_created_with_holds_waits_for_their_release() {
    use oms_proto::orders::{Hold, HoldType};
    let mut h = start().await;
    let hold = |t: HoldType, reason: &str| Hold {
        r#type: t as i32,
        reason: reason.into(),
        placed_by: "someone else".into(),
        ..Default::default()
    };
    let mut unpaid = order("7001");
    unpaid.holds = vec![
        hold(HoldType::Payment, "awaiting payment"),
        hold(HoldType::Fraud, "review"),
    ];
    let o = create(&mut h.client, "acme", "held-1", unpaid).await;
    assert_eq!(o.state, OrderState::OnHold as i32);
    let placed: Vec<(i32, &str, &str)> = o
        .holds
        .iter()
        .map(|x| (x.r#type, x.reason.as_str(), x.placed_by.as_str()))
        .collect();
    assert_eq!(
        placed,
        [
            (HoldType::Payment as i32, "awaiting payment", "test"),
            (HoldType::Fraud as i32, "review", "test")
        ]
    );
    assert!(o.holds.iter().all(|x| x.place_time.is_some()));
    let mut db = h.db.connect("orders").await;
    let created: (String, String) = sqlx::query_as(
        "SELECT h.to_state, o.held_from FROM order_history h JOIN orders o USING (order_id)
         WHERE h.kind = 'OrderCreated'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(created, ("on_hold".to_string(), "created".to_string()));
    let mut release = async |t: HoldType| {
        let req = ReleaseHoldRequest {
            request_id: format!("release-{}", t as i32),
            name: o.name.clone(),
            r#type: t as i32,
            reason: "cleared".into(),
        };
        let r = h.client.release_hold(authed("acme", req)).await.unwrap();
        r.into_inner().order.unwrap().state
    };
    assert_eq!(release(HoldType::Payment).await, OrderState::OnHold as i32);
    assert_eq!(release(HoldType::Fraud).await, OrderState::Created as i32);

    let mut bad = order("7002");
    bad.holds = vec![
        hold(HoldType::Unspecified, ""),
        hold(HoldType::Manual, "a"),
        hold(HoldType::Manual, &"b".repeat(501)),
    ];
    let req = CreateOrderRequest {
        request_id: "held-2".into(),
        order: Some(bad),
    };
    let err = h
        .client
        .create_order(authed("acme", req))
        .await
        .unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "order.holds[0].type",
            "order.holds[2].type",
            "order.holds[2].reason"
        ]
    );
}
