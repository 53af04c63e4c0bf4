//! SetBackorderDemand: published availability keeps what orders waiting
//! for stock ask for.
use crate::*;
use tonic::Code;

fn figure(sku: &str, channel: &str, units: i64) -> BackorderDemandFigure {
    BackorderDemandFigure {
        sku: sku.into(),
        channel: channel.into(),
        units,
    }
}

fn demand(
    request_id: &str,
    revision: i64,
    f: Vec<BackorderDemandFigure>,
) -> SetBackorderDemandRequest {
    SetBackorderDemandRequest {
        request_id: request_id.into(),
        demand: f,
        revision,
        source: "orders".into(),
        complete: false,
    }
}

async fn figures(
    c: &mut Client,
    scope: AvailabilityScope,
    channel: &str,
    before: bool,
) -> Availability {
    c.get_availability(authed(
        "acme",
        GetAvailabilityRequest {
            skus: vec!["S".into()],
            scope: scope as i32,
            channel: channel.into(),
            before_backorders: before,
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .availabilities
    .remove(0)
}

#[tokio::test]
async fn published_availability_keeps_what_backorders_ask_for() {
    let mut h = start().await;
    node(&mut h.client, "acme", "DC1").await;
    item(&mut h.client, "acme", "S").await;
    receive(&mut h.client, "acme", "DC1", "S", 5).await;
    let c = &mut h.client;
    let before = availability(c, "acme", "S").await;
    let web = "channels/web";
    let first = demand(&rid(), 2, vec![figure("S", "", 2), figure("S", web, 1)]);
    let set = c
        .set_backorder_demand(authed("acme", first.clone()))
        .await
        .unwrap();
    assert_eq!(set.into_inner().changed_skus, ["S"]);

    use AvailabilityScope::{Channel, Network, Node};
    let net = figures(c, Network, "", false).await;
    assert_eq!((net.on_hand, net.backordered, net.available), (5, 3, 2));
    assert_eq!(
        figures(c, Network, "", true).await.available,
        5,
        "before backorders"
    );
    let own = figures(c, Channel, web, false).await;
    assert_eq!(
        (own.backordered, own.available),
        (3, 2),
        "its own and no channel's"
    );
    let other = figures(c, Channel, "channels/shop", false).await;
    assert_eq!(
        (other.backordered, other.available),
        (2, 2),
        "web's 1 via the network"
    );
    let at_dc1 = figures(c, Node, "", false).await;
    assert_eq!(
        (at_dc1.backordered, at_dc1.available),
        (0, 5),
        "no node's demand"
    );

    // A replay answers as the first time; a late older revision changes
    // nothing; a newer one does, and the feed carries the new figure.
    let again = c.set_backorder_demand(authed("acme", first)).await.unwrap();
    assert_eq!(again.into_inner().changed_skus, ["S"]);
    let late = demand(&rid(), 1, vec![figure("S", "", 0)]);
    let late = c.set_backorder_demand(authed("acme", late)).await.unwrap();
    assert!(late.into_inner().changed_skus.is_empty());
    assert_eq!(figures(c, Network, "", false).await.backordered, 3);
    let watch = WatchAvailabilityRequest {
        after_cursor: before.feed_cursor,
        skus: vec!["S".into()],
        ..Default::default()
    };
    let mut feed = c
        .watch_availability(authed("acme", watch))
        .await
        .unwrap()
        .into_inner();
    let seen = feed.message().await.unwrap().unwrap().availability.unwrap();
    assert_eq!(
        (seen.backordered, seen.available),
        (3, 2),
        "the first setting's"
    );
    let newer = demand(&rid(), 3, vec![figure("S", "", 0)]);
    c.set_backorder_demand(authed("acme", newer)).await.unwrap();
    let seen = feed.message().await.unwrap().unwrap().availability.unwrap();
    assert_eq!((seen.backordered, seen.available), (1, 4));
    // Another source's figures are its own, revisions and all, and add up.
    let erp = SetBackorderDemandRequest {
        source: "erp".into(),
        ..demand(&rid(), 1, vec![figure("S", "", 2)])
    };
    let erp = c.set_backorder_demand(authed("acme", erp)).await.unwrap();
    assert_eq!(
        erp.into_inner().changed_skus,
        ["S"],
        "orders' revision 3 aside"
    );
    let seen = feed.message().await.unwrap().unwrap().availability.unwrap();
    assert_eq!((seen.backordered, seen.available), (3, 2));

    // The gate is not the publication: a reservation may still take all 5
    // (orders keeps its own backorders' turn).
    let r = reserve(c, "acme", "cart-1", vec![line("S", "", 5)]).await;
    assert!(r.is_ok(), "{r:?}");
    // Another tenant's demand is its own.
    let other = figures(c, Network, "", false).await;
    assert_eq!(other.backordered, 3);
    item(c, "globex", "S").await;
    let theirs = c
        .get_availability(authed(
            "globex",
            GetAvailabilityRequest {
                skus: vec!["S".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(theirs.availabilities[0].backordered, 0);

    // A full statement sets what it names and zeroes the rest of its
    // source (orders' web figure), whatever drift there was; erp's stays.
    let full = SetBackorderDemandRequest {
        complete: true,
        ..demand(&rid(), 10, vec![figure("S", "", 4)])
    };
    let full = c.set_backorder_demand(authed("acme", full)).await.unwrap();
    assert_eq!(full.into_inner().changed_skus, ["S"]);
    assert_eq!(figures(c, Network, "", false).await.backordered, 4 + 2);
    assert_eq!(figures(c, Channel, web, false).await.backordered, 4 + 2);
    let late = demand(&rid(), 9, vec![figure("S", web, 5)]);
    let late = c.set_backorder_demand(authed("acme", late)).await.unwrap();
    assert!(late.into_inner().changed_skus.is_empty(), "zeroed at 10");
    // Nothing waits any more: an empty full statement.
    let none = SetBackorderDemandRequest {
        complete: true,
        ..demand(&rid(), 11, vec![])
    };
    c.set_backorder_demand(authed("acme", none)).await.unwrap();
    assert_eq!(figures(c, Network, "", false).await.backordered, 2, "erp's");
}

#[tokio::test]
async fn bad_backorder_demand_is_refused_field_by_field() {
    let mut h = start().await;
    let c = &mut h.client;
    let mut bad = demand(
        "",
        0,
        vec![
            figure("S", "", -1),
            figure("", "web", 1),
            figure("S", "", 1),
        ],
    );
    bad.source = "no spaces".into();
    let err = c
        .set_backorder_demand(authed("acme", bad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&err),
        [
            "request_id",
            "demand[0].units",
            "demand[1].sku",
            "demand[1].channel",
            "demand[2]",
            "revision",
            "source"
        ]
    );
    let none = demand(&rid(), 1, vec![]);
    let err = c
        .set_backorder_demand(authed("acme", none))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["demand"]);
}
