//! Expected inbound: what suppliers' deliveries still bring is shown by
//! arrival, never promised, and set only forward by revision.
use crate::*;
use tonic::Code;

fn ts(days: i64) -> prost_types::Timestamp {
    let t = chrono::Utc::now().date_naive() + chrono::Days::new(30);
    let t = t.and_hms_opt(8, 0, 0).unwrap().and_utc() + chrono::Duration::days(days);
    oms_runtime::time::to_timestamp(t)
}

fn expect(
    id: &str,
    node: &str,
    revision: i64,
    at: Option<i64>,
    lines: &[(&str, i64)],
) -> SetExpectedInboundRequest {
    SetExpectedInboundRequest {
        request_id: rid(),
        source: "fulfillment".into(),
        inbound_id: id.into(),
        node_id: node.into(),
        expected_arrival_time: at.map(ts),
        lines: (lines.iter())
            .map(|(sku, units)| InboundLine {
                sku: (*sku).into(),
                units: *units,
            })
            .collect(),
        revision,
    }
}

async fn set(
    c: &mut Client,
    tenant: &str,
    r: SetExpectedInboundRequest,
) -> Result<SetExpectedInboundResponse, tonic::Status> {
    (c.set_expected_inbound(authed(tenant, r)).await).map(|r| r.into_inner())
}

fn when(a: &Availability) -> Vec<(Option<prost_types::Timestamp>, i64)> {
    (a.arrivals.iter())
        .map(|x| (x.expected_arrival_time, x.units))
        .collect()
}

async fn at_nodes(c: &mut Client, sku: &str) -> Vec<(String, i64, i64, i64)> {
    let req = GetAvailabilityRequest {
        skus: vec![sku.into()],
        scope: AvailabilityScope::Node as i32,
        ..Default::default()
    };
    let got = c.get_availability(authed("acme", req)).await.unwrap();
    (got.into_inner().availabilities.into_iter())
        .map(|a| (a.node_id, a.on_hand, a.available, a.expected_inbound))
        .collect()
}

async fn listed(c: &mut Client, sku: &str, node: &str) -> Vec<(String, Vec<(String, i64)>)> {
    let req = ListExpectedInboundsRequest {
        sku: sku.into(),
        node_id: node.into(),
        ..Default::default()
    };
    let got = c.list_expected_inbounds(authed("acme", req)).await.unwrap();
    (got.into_inner().inbounds.into_iter())
        .map(|i| {
            let lines = i.lines.into_iter().map(|l| (l.sku, l.units)).collect();
            (i.inbound_id, lines)
        })
        .collect()
}

/// Reads the availability feed until it sends `units` expected inbound;
/// fails after 10 s.
async fn feed_shows(feed: &mut tonic::Streaming<WatchAvailabilityResponse>, units: i64) {
    let read = async {
        loop {
            let a = feed.message().await.unwrap().unwrap().availability.unwrap();
            if a.expected_inbound == units {
                return;
            }
        }
    };
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    assert!(
        waited.is_ok(),
        "the feed never sent {units} expected inbound"
    );
}

#[tokio::test]
async fn inbound_deliveries_are_shown_by_arrival_and_never_promised() {
    let mut h = start().await;
    let c = &mut h.client;
    for n in ["DC1", "DC2"] {
        node(c, "acme", n).await;
    }
    for sku in ["SKU-1", "SKU-2"] {
        item(c, "acme", sku).await;
    }
    receive(c, "acme", "DC1", "SKU-1", 2).await;
    let before = availability(c, "acme", "SKU-1").await;
    let watch = WatchAvailabilityRequest {
        after_cursor: before.feed_cursor,
        skus: vec!["SKU-1".into()],
        ..Default::default()
    };
    let mut feed = (c.watch_availability(authed("acme", watch.clone())).await)
        .unwrap()
        .into_inner();
    let at_dc2 = WatchAvailabilityRequest {
        scope: AvailabilityScope::Node as i32,
        node_ids: vec!["DC2".into()],
        ..watch
    };
    let mut dc2_feed = (c.watch_availability(authed("acme", at_dc2)).await)
        .unwrap()
        .into_inner();

    // Two deliveries: 10 to DC1 in 3 days, 5 to DC2 with no time said.
    let asn_a = expect("asns/A", "DC1", 1, Some(3), &[("SKU-1", 10), ("SKU-2", 4)]);
    let first = set(c, "acme", asn_a.clone()).await.unwrap();
    assert_eq!(first.changed_skus, ["SKU-1", "SKU-2"]);
    set(c, "acme", expect("asns/B", "DC2", 1, None, &[("SKU-1", 5)]))
        .await
        .unwrap();
    let a = available(c, "acme", "SKU-1").await;
    assert_eq!(
        (a.on_hand, a.available, a.expected_inbound, a.in_transit),
        (2, 2, 15, 0)
    );
    assert_eq!(when(&a), [(Some(ts(3)), 10), (None, 5)]);
    feed_shows(&mut feed, 15).await;
    feed_shows(&mut dc2_feed, 5).await;
    // Per node, DC2 (nothing on hand) is listed for what comes to it.
    assert_eq!(
        at_nodes(c, "SKU-1").await,
        [("DC1".into(), 2, 2, 10), ("DC2".into(), 0, 0, 5)]
    );
    // Never promised: 3 units cannot be reserved.
    let err = c
        .create_reservation(authed(
            "acme",
            CreateReservationRequest {
                reservation_id: "cart-1".into(),
                lines: vec![line("SKU-1", "", 3)],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Sold out to 4 waiting units, the restock date is the delivery's.
    let demand = SetBackorderDemandRequest {
        request_id: rid(),
        demand: vec![BackorderDemandFigure {
            sku: "SKU-1".into(),
            channel: String::new(),
            units: 4,
        }],
        revision: 1,
        source: "orders".into(),
        complete: false,
    };
    c.set_backorder_demand(authed("acme", demand))
        .await
        .unwrap();
    let a = available(c, "acme", "SKU-1").await;
    assert_eq!((a.available, a.restock_time), (0, Some(ts(3))));

    // A replay answers as the first time; a receipt of 7 leaves 3.
    let again = set(c, "acme", asn_a.clone()).await.unwrap();
    assert_eq!(again, first);
    let partly = expect("asns/A", "DC1", 2, Some(3), &[("SKU-1", 3), ("SKU-2", 4)]);
    let partly = set(c, "acme", partly).await.unwrap();
    assert_eq!(partly.changed_skus, ["SKU-1"]);
    // A late, older statement changes nothing and answers what stands.
    let late = SetExpectedInboundRequest {
        request_id: rid(),
        ..asn_a.clone()
    };
    let late = set(c, "acme", late).await.unwrap();
    assert!(late.changed_skus.is_empty());
    assert_eq!(late.inbound.unwrap().revision, 2);
    assert_eq!(available(c, "acme", "SKU-1").await.expected_inbound, 8);
    feed_shows(&mut feed, 8).await;
    assert_eq!(
        listed(c, "SKU-1", "").await,
        [
            (
                "asns/A".into(),
                vec![("SKU-1".into(), 3), ("SKU-2".into(), 4)]
            ),
            ("asns/B".into(), vec![("SKU-1".into(), 5)]),
        ]
    );
    assert_eq!(listed(c, "", "DC2").await.len(), 1);
    // Due before a time (now: the late ones): B said no time.
    let due = ListExpectedInboundsRequest {
        arrival_due_before: Some(ts(4)),
        ..Default::default()
    };
    let due = c.list_expected_inbounds(authed("acme", due)).await.unwrap();
    let ids: Vec<String> = (due.into_inner().inbounds.into_iter())
        .map(|i| i.inbound_id)
        .collect();
    assert_eq!(ids, ["asns/A"]);

    // Closed: nothing more comes; it leaves the figures and the list.
    let closed = set(c, "acme", expect("asns/A", "DC1", 3, Some(3), &[]))
        .await
        .unwrap();
    assert_eq!(closed.changed_skus, ["SKU-1", "SKU-2"]);
    let a = available(c, "acme", "SKU-1").await;
    assert_eq!((a.expected_inbound, when(&a)), (5, vec![(None, 5)]));
    assert_eq!(a.restock_time, None, "no time said");
    assert_eq!(available(c, "acme", "SKU-2").await.expected_inbound, 0);
    assert_eq!(listed(c, "", "DC1").await, []);
    feed_shows(&mut feed, 5).await;

    // Another tenant sees none of it and cannot announce to acme's node.
    let other = available(c, "globex", "SKU-1").await;
    assert_eq!(other.expected_inbound, 0);
    item(c, "globex", "SKU-1").await;
    let err = set(
        c,
        "globex",
        expect("asns/G", "DC2", 1, None, &[("SKU-1", 1)]),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "nodes/DC2 not found")
    );
    no_drift(c).await;
}

#[tokio::test]
async fn bad_expected_inbound_is_refused_with_its_fields() {
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    item(c, "acme", "SKU-1").await;
    let mut bad = expect("", "bad node", 0, None, &[("SKU-1", -1), ("SKU-1", 1)]);
    bad.source = "a b".into();
    bad.request_id = String::new();
    bad.expected_arrival_time = Some(prost_types::Timestamp {
        seconds: 0,
        nanos: -1,
    });
    let err = set(c, "acme", bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&err),
        [
            "request_id",
            "source",
            "inbound_id",
            "node_id",
            "expected_arrival_time",
            "lines[0].units",
            "lines[1].sku",
            "revision"
        ]
    );
    let unknown = expect("asns/X", "DC9", 1, None, &[("SKU-1", 1)]);
    let err = set(c, "acme", unknown).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "nodes/DC9 not found")
    );
    let unknown = expect("asns/X", "DC1", 1, None, &[("SKU-1", 1), ("NOPE", 2)]);
    let err = set(c, "acme", unknown).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "items/NOPE not found")
    );
    assert_eq!(resource_names(&err), ["items/NOPE"]);
    // Every unknown SKU is named at once, each in a ResourceInfo.
    let lines = [("NOPE", 2), ("SKU-1", 1), ("ZILCH", 1)];
    let err = set(c, "acme", expect("asns/X", "DC1", 1, None, &lines))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message(), reason(&err).as_str()),
        (
            Code::NotFound,
            "items/NOPE, items/ZILCH not found",
            "ITEM_NOT_FOUND"
        )
    );
    assert_eq!(resource_names(&err), ["items/NOPE", "items/ZILCH"]);
    let bad_list = ListExpectedInboundsRequest {
        sku: "a b".into(),
        arrival_due_before: Some(prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        }),
        ..Default::default()
    };
    let err = c
        .list_expected_inbounds(authed("acme", bad_list))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["sku", "arrival_due_before"]);
    // Nothing was stored: revision 1 still sets it.
    let ok = expect("asns/X", "DC1", 1, None, &[("SKU-1", 1)]);
    assert_eq!(set(c, "acme", ok).await.unwrap().changed_skus, ["SKU-1"]);
}
