//! Fulfillment orders: create, release, cancel, read, idempotently.
use crate::*;
use oms_proto::fulfillment::{FulfillmentState as S, *};
use oms_runtime::status;
use oms_testkit::authed;
use tonic::Code;

#[tokio::test]
async fn bad_fulfillment_orders_get_every_field_violation() {
    let mut h = start().await;
    let mut fo = new_order("", &[("1", "", 0), ("1", "B", 1), ("3", "C D", i64::MAX)]);
    fo.order = "order/1".into();
    fo.node_id = "DC 1".into();
    fo.lines[1].quantity_shipped = 1;
    fo.lines[1].min_expiry_date = "2027-1-5".into();
    fo.lines[2].line_id = "L".repeat(65);
    fo.carrier_service = "c".repeat(101);
    fo.ship_to = Some(oms_proto::common::PostalAddress {
        city: "x".repeat(501),
        country_code: "de".into(),
        ..Default::default()
    });
    let err = h
        .client
        .create_fulfillment_order(authed(
            TENANT,
            CreateFulfillmentOrderRequest {
                request_id: String::new(),
                fulfillment_order: Some(fo),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = status::fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "fulfillment_order.carrier_service",
            "fulfillment_order.lines[0].quantity",
            "fulfillment_order.lines[0].sku",
            "fulfillment_order.lines[1].line_id",
            "fulfillment_order.lines[1].min_expiry_date",
            "fulfillment_order.lines[1].quantity_shipped",
            "fulfillment_order.lines[2].line_id",
            "fulfillment_order.lines[2].quantity",
            "fulfillment_order.lines[2].sku",
            "fulfillment_order.node_id",
            "fulfillment_order.order",
            "fulfillment_order.ship_to.city",
            "fulfillment_order.ship_to.country_code",
            "request_id",
        ]
    );
    let list = h
        .client
        .list_fulfillment_orders(authed(TENANT, ListFulfillmentOrdersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(list.fulfillment_orders.is_empty(), "nothing stored");
}

#[tokio::test]
async fn created_released_and_cancelled_once_per_request() {
    let mut h = start().await;
    let req = CreateFulfillmentOrderRequest {
        request_id: rid(),
        fulfillment_order: Some(new_order("DC1", &[("1", "A", 2), ("2", "B", 1)])),
    };
    let first = h
        .client
        .create_fulfillment_order(authed(TENANT, req.clone()))
        .await
        .unwrap()
        .into_inner();
    let again = h
        .client
        .create_fulfillment_order(authed(TENANT, req))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again, "a repeat returns the first answer");
    let fo = first.fulfillment_order.unwrap();
    assert_eq!(fo.state(), S::PendingRelease);
    assert!(fo.name.starts_with("fulfillmentOrders/"));

    // Another tenant sees nothing of it.
    let err = h
        .client
        .get_fulfillment_order(authed(
            "other",
            GetFulfillmentOrderRequest {
                name: fo.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let released = h.release(TENANT, &fo.name).await;
    assert_eq!(released.state(), S::Released);
    // Releasing again (another request) changes nothing.
    assert_eq!(h.release(TENANT, &fo.name).await.state(), S::Released);

    // A reason beyond 1,000 characters is refused, and nothing is asked.
    let too_long = CancelFulfillmentOrderRequest {
        request_id: rid(),
        name: fo.name.clone(),
        reason: "r".repeat(1001),
    };
    let err = h
        .client
        .cancel_fulfillment_order(authed(TENANT, too_long))
        .await
        .unwrap_err();
    assert_eq!(status::fields(&err), ["reason"]);
    // Cancelling released work asks the WMS; the state waits for its answer.
    let cancel = CancelFulfillmentOrderRequest {
        request_id: rid(),
        name: fo.name.clone(),
        reason: "customer changed their mind".into(),
    };
    let asked = h
        .client
        .cancel_fulfillment_order(authed(TENANT, cancel))
        .await
        .unwrap()
        .into_inner()
        .fulfillment_order
        .unwrap();
    assert_eq!(asked.state(), S::Released);
    assert_eq!(
        asked.status_reason,
        "cancel requested: customer changed their mind"
    );

    // A second order, cancelled before release, is cancelled at once and
    // can no longer be released.
    let other = h.create(TENANT, "DC2", &[("1", "A", 1)]).await;
    let cancelled = h
        .client
        .cancel_fulfillment_order(authed(
            TENANT,
            CancelFulfillmentOrderRequest {
                request_id: rid(),
                name: other.name.clone(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .fulfillment_order
        .unwrap();
    assert_eq!(cancelled.state(), S::Cancelled);
    let err = h
        .client
        .release_fulfillment_order(authed(
            TENANT,
            ReleaseFulfillmentOrderRequest {
                request_id: rid(),
                name: other.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(status::reason(&err), "NOT_RELEASABLE");

    // Lists filter by node and state.
    let at_dc1 = h
        .client
        .list_fulfillment_orders(authed(
            TENANT,
            ListFulfillmentOrdersRequest {
                node_id: "DC1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(at_dc1.fulfillment_orders.len(), 1);
    assert_eq!(at_dc1.fulfillment_orders[0].name, fo.name);
    let cancelled_ones = h
        .client
        .list_fulfillment_orders(authed(
            TENANT,
            ListFulfillmentOrdersRequest {
                states: vec![S::Cancelled as i32],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled_ones.fulfillment_orders.len(), 1);
    assert_eq!(cancelled_ones.fulfillment_orders[0].name, other.name);

    // The feed tells the story: created, released; created, cancelled.
    let feed = h.feed(TENANT, 4).await;
    let moves: Vec<(String, S)> = feed
        .iter()
        .map(|e| match &e.kind {
            Some(watch_fulfillment_events_response::Kind::StateChanged(c)) => (
                e.fulfillment_order.as_ref().unwrap().name.clone(),
                c.to_state(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        moves,
        [
            (fo.name.clone(), S::PendingRelease),
            (fo.name.clone(), S::Released),
            (other.name.clone(), S::PendingRelease),
            (other.name.clone(), S::Cancelled),
        ]
    );
}

#[tokio::test]
async fn each_change_counts_a_version_and_a_list_with_the_feed_after_it_misses_nothing() {
    let mut h = start().await;
    let a = h.create(TENANT, "DC1", &[("1", "A", 1)]).await;
    assert_eq!(a.version, 1);
    assert_eq!(h.release(TENANT, &a.name).await.version, 2);
    // Releasing again changes nothing, so counts nothing.
    assert_eq!(h.release(TENANT, &a.name).await.version, 2);
    let b = h.create(TENANT, "DC1", &[("1", "B", 1)]).await;

    // Changed since b was created: b alone.
    let list = |from: Option<prost_types::Timestamp>| ListFulfillmentOrdersRequest {
        update_time_from: from,
        ..Default::default()
    };
    let since_b = h
        .client
        .list_fulfillment_orders(authed(TENANT, list(b.create_time)))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = since_b
        .fulfillment_orders
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, [b.name.as_str()]);

    // The feed after the list's cursor starts with what changed after it.
    let released = h.release(TENANT, &b.name).await;
    let mut feed = h
        .client
        .watch_fulfillment_events(authed(
            TENANT,
            WatchFulfillmentEventsRequest {
                after_cursor: since_b.feed_cursor.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // It may repeat what the list time knew already (the cursor stands
    // before every transaction still running then, another test's too),
    // never anything newer before b's release.
    let mut repeated = Vec::new();
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), feed.message())
            .await
            .expect("feed event within 10 s")
            .unwrap()
            .unwrap()
            .fulfillment_order
            .unwrap();
        if (next.name == b.name, next.version) == (true, 2) {
            break;
        }
        repeated.push((next.name, next.version));
    }
    let known =
        |(name, v): &(String, i64)| (*name == a.name && *v <= 2) || (*name == b.name && *v == 1);
    assert!(repeated.iter().all(known), "{repeated:?}");
    assert_eq!(released.version, 2);

    // A time that is none.
    let bad = prost_types::Timestamp {
        seconds: 0,
        nanos: -1,
    };
    let err = h
        .client
        .list_fulfillment_orders(authed(TENANT, list(Some(bad))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(status::fields(&err), ["update_time_from"]);
}
