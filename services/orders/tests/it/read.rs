use crate::*;
use oms_proto::orders::{GetOrderRequest, ListOrderHistoryRequest, ListOrdersRequest, OrderState};
use tonic::Code;

#[tokio::test]
async fn get_refuses_malformed_names_and_hides_other_tenants() {
    let mut h = start().await;
    let o = create(&mut h.client, "acme", "r1", order("1")).await;

    let err = h
        .client
        .get_order(authed(
            "acme",
            GetOrderRequest {
                name: "order/1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["name"]);

    let unknown = format!("orders/{}", uuid::Uuid::now_v7());
    let err = h
        .client
        .get_order(authed("acme", GetOrderRequest { name: unknown }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(reason(&err), "ORDER_NOT_FOUND");

    let err = h
        .client
        .get_order(authed(
            "globex",
            GetOrderRequest {
                name: o.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "a foreign tenant's order does not exist for you"
    );
}

async fn list(
    h: &mut Harness,
    tenant: &str,
    req: ListOrdersRequest,
) -> Result<(Vec<String>, String), tonic::Status> {
    let r = h
        .client
        .list_orders(authed(tenant, req))
        .await?
        .into_inner();
    Ok((
        r.orders.into_iter().map(|o| o.name).collect(),
        r.next_page_token,
    ))
}

#[tokio::test]
async fn list_pages_newest_first_without_gaps_or_repeats() {
    let mut h = start().await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            create(
                &mut h.client,
                "acme",
                &format!("r{i}"),
                order(&format!("L{i}")),
            )
            .await
            .name,
        );
    }
    create(&mut h.client, "globex", "g1", order("G1")).await;
    created.reverse();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (names, next) = list(
            &mut h,
            "acme",
            ListOrdersRequest {
                page_size: 3,
                page_token: token,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        seen.extend(names);
        pages += 1;
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "newest first, every order once, only acme's");
}

#[tokio::test]
async fn list_by_create_time_takes_the_orders_of_the_range() {
    let mut h = start().await;
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(
            create(
                &mut h.client,
                "acme",
                &format!("r{i}"),
                order(&format!("T{i}")),
            )
            .await,
        );
    }
    let time = |i: usize| made[i].create_time;
    let name = |i: usize| made[i].name.clone();
    let range = |from, to| ListOrdersRequest {
        create_time_from: from,
        create_time_to: to,
        ..Default::default()
    };
    let cases = [
        (range(time(1), None), vec![name(2), name(1)]),
        (range(None, time(1)), vec![name(0)]),
        (range(time(1), time(2)), vec![name(1)]),
    ];
    for (req, expected) in cases {
        let (names, _) = list(&mut h, "acme", req.clone()).await.unwrap();
        assert_eq!(names, expected, "{req:?}");
    }
}

#[tokio::test]
async fn list_filters_and_guards_its_tokens() {
    let mut h = start().await;
    let a = create(&mut h.client, "acme", "r1", order("F1")).await;
    let mut other_channel = order("F2");
    other_channel.channel = "channels/pos".into();
    create(&mut h.client, "acme", "r2", other_channel).await;

    let (names, _) = list(
        &mut h,
        "acme",
        ListOrdersRequest {
            channel: "channels/web".into(),
            states: vec![OrderState::Created as i32],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(names, std::slice::from_ref(&a.name));

    let (names, _) = list(
        &mut h,
        "acme",
        ListOrdersRequest {
            states: vec![OrderState::Shipped as i32],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(names.is_empty());

    let (names, _) = list(
        &mut h,
        "acme",
        ListOrdersRequest {
            channel_order_id: "F1".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(names, [a.name]);

    let (_, token) = list(
        &mut h,
        "acme",
        ListOrdersRequest {
            page_size: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = list(
        &mut h,
        "acme",
        ListOrdersRequest {
            page_size: 1,
            page_token: token,
            channel: "channels/pos".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["page_token"]);

    let err = list(
        &mut h,
        "acme",
        ListOrdersRequest {
            page_size: -1,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["page_size"]);
    // Above the maximum: the maximum (AIP-158), not an error.
    let all = list(
        &mut h,
        "acme",
        ListOrdersRequest {
            page_size: 10_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (names, next) = all;
    assert!(!names.is_empty());
    assert!(next.is_empty());
}

#[tokio::test]
async fn history_records_who_created_the_order() {
    let mut h = start().await;
    let o = create(&mut h.client, "acme", "r1", order("H1")).await;
    let changes = h
        .client
        .list_order_history(authed(
            "acme",
            ListOrderHistoryRequest {
                name: o.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, "OrderCreated");
    assert_eq!(changes[0].actor, "test");
    assert_eq!(changes[0].to_state, OrderState::Created as i32);
    assert_eq!(changes[0].request_id, "r1");

    let err = h
        .client
        .list_order_history(authed(
            "globex",
            ListOrderHistoryRequest {
                name: o.name,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
