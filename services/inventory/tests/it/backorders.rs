//! SetBackorderDemand: published availability and the reservation gate
//! keep what orders waiting for stock ask for.
use crate::*;
use oms_testkit::RedisServer;
use tonic::Code;
use tonic_types::StatusExt;

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

    // The gate keeps them too (the_gate_keeps_what_backorders_ask_for): a
    // cart gets the 2 published.
    let r = reserve(c, "acme", "cart-1", vec![line("S", "", 2)]).await;
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

/// A reservation for `source`'s backorders.
fn for_backorders(source: &str, id: &str, q: i64) -> CreateReservationRequest {
    CreateReservationRequest {
        reservation_id: id.into(),
        lines: vec![line("S", "", q)],
        backorders_of: source.into(),
        ..Default::default()
    }
}

/// What a refusal for short stock says: (subject, description) per short.
fn shorts(err: &tonic::Status) -> Vec<(String, String)> {
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let pf = err.get_error_details().precondition_failure().cloned();
    (pf.unwrap().violations.into_iter())
        .map(|v| (v.subject, v.description))
        .collect()
}

fn short(subject: &str, what: &str) -> Vec<(String, String)> {
    vec![(subject.into(), what.into())]
}

/// The gate keeps what backorders ask for, as published availability
/// does: a reservation not for their source gets what is left, in the
/// network and in its channel's share; one for their source (orders'
/// own, which orders gives out in its line) may take theirs but not
/// another source's; an extension goes as its reservation; a gate
/// rebuilt from the record keeps them, and Reconcile names their figures.
#[tokio::test]
async fn the_gate_keeps_what_backorders_ask_for() {
    let redis = RedisServer::start();
    let mut h = start_with(&[("OMS_REDIS_URL", redis.url())]).await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    node(c, "acme", "DC2").await;
    item(c, "acme", "S").await;
    receive(c, "acme", "DC1", "S", 6).await;
    receive(c, "acme", "DC2", "S", 4).await;
    let web = "channels/web";
    let rule = SetChannelRuleRequest {
        request_id: rid(),
        rule: Some(ChannelRule {
            channel: web.into(),
            node_ids: vec!["DC1".into()],
            buffer: None,
        }),
        remove: false,
    };
    c.set_channel_rule(authed("acme", rule)).await.unwrap();
    let orders = demand(&rid(), 1, vec![figure("S", "", 3), figure("S", web, 2)]);
    c.set_backorder_demand(authed("acme", orders))
        .await
        .unwrap();
    let erp = SetBackorderDemandRequest {
        source: "erp".into(),
        ..demand(&rid(), 1, vec![figure("S", "", 1)])
    };
    c.set_backorder_demand(authed("acme", erp)).await.unwrap();
    assert_eq!(available(c, "acme", "S").await.available, 10 - 6);
    // What orders' own reservations may take: erp's unit left out, in the
    // network and in the web's share (DC1's 6).
    for (channel, want) in [("", 9), (web, 5)] {
        let read = GetAvailabilityRequest {
            skus: vec!["S".into()],
            channel: channel.into(),
            backorders_of: "orders".into(),
            ..Default::default()
        };
        let a = c.get_availability(authed("acme", read)).await.unwrap();
        let a = &a.into_inner().availabilities[0];
        assert_eq!((a.backordered, a.available), (1, want), "{channel}");
    }

    // A cart gets the 4 the network has beyond the 6 asked for.
    let err = reserve(c, "acme", "cart-0", vec![line("S", "", 5)]).await;
    assert_eq!(
        shorts(&err.unwrap_err()),
        short(
            "items/S",
            "4 available, 5 requested (6 kept for waiting backorders)"
        )
    );
    // The web's share (DC1's 6) keeps its own and those of no channel.
    let via_web = CreateReservationRequest {
        channel: web.into(),
        ..for_backorders("", "web-0", 1)
    };
    let err = c.create_reservation(authed("acme", via_web)).await;
    assert_eq!(
        shorts(&err.unwrap_err()),
        short(
            "channels/web/items/S",
            "0 available, 1 requested (6 kept for waiting backorders)"
        )
    );
    reserve(c, "acme", "cart-1", vec![line("S", "", 4)])
        .await
        .unwrap();
    // Orders' own may take what its backorders ask for, not erp's unit.
    let mine = |id: &str, q| authed("acme", for_backorders("orders", id, q));
    let err = c.create_reservation(mine("o-0", 6)).await.unwrap_err();
    assert_eq!(
        shorts(&err),
        short(
            "items/S",
            "5 available, 6 requested (1 kept for waiting backorders)"
        )
    );
    c.create_reservation(mine("o-1", 4)).await.unwrap();
    assert_eq!(reservation(c, "acme", "o-1").await.backorders_of, "orders");
    // An extension goes as its reservation: 2 are left, 1 of them erp's.
    let more = |rid: &str, id: &str| authed("acme", extend_request(rid, id, &[("S", "", 1)]));
    let err = c
        .extend_reservation(more("e0", "cart-1"))
        .await
        .unwrap_err();
    assert_eq!(shorts(&err)[0].0, "items/S");
    c.extend_reservation(more("e1", "o-1")).await.unwrap();
    let err = c.extend_reservation(more("e2", "o-1")).await.unwrap_err();
    assert_eq!(
        shorts(&err),
        short(
            "items/S",
            "0 available, 1 requested (1 kept for waiting backorders)"
        )
    );

    // Redis loses its data: the gate rebuilt from the record keeps them.
    redis.cli(&["FLUSHALL"]);
    let err = reserve(c, "acme", "cart-2", vec![line("S", "", 1)]).await;
    assert_eq!(shorts(&err.unwrap_err())[0].0, "items/S");
    no_drift(c).await;
    // A figure of theirs gone wrong is named in Reconcile's report, and
    // repaired.
    let key = redis.cli(&["--scan", "--pattern", "*avail:S"]);
    let key = key.lines().next().expect("the gate has a key for S");
    redis.cli(&["HSET", key, "b:erp:", "0"]);
    let d = reconcile(c, "acme", true).await.drifts;
    let d: Vec<_> = (d.iter())
        .map(|d| {
            (
                d.field.as_str(),
                d.node_id.as_str(),
                d.gate_value,
                d.record_value,
            )
        })
        .collect();
    assert_eq!(d, [("b:erp:", "", 0, 1)]);
    reconcile(c, "acme", false).await;
    assert_eq!(redis.cli(&["HGET", key, "b:erp:"]).trim(), "1");
    // A field the service never writes (no second ':') neither fails the
    // SKU's reservations nor counts; Reconcile drops it.
    redis.cli(&["HSET", key, "b:bogus", "5"]);
    let err = reserve(c, "acme", "cart-4", vec![line("S", "", 1)]).await;
    assert_eq!(
        shorts(&err.unwrap_err()),
        short(
            "items/S",
            "0 available, 1 requested (6 kept for waiting backorders)"
        )
    );
    let d = reconcile(c, "acme", false).await.drifts;
    let d: Vec<_> = d.iter().map(|d| (d.field.as_str(), d.gate_value)).collect();
    assert_eq!(d, [("b:bogus", 5)]);
    assert_eq!(redis.cli(&["HEXISTS", key, "b:bogus"]).trim(), "0");

    // Less demand gives its units back: nothing waits any more, and a
    // cart takes the last unit.
    let none = |source: &str| SetBackorderDemandRequest {
        source: source.into(),
        complete: true,
        ..demand(&rid(), 2, vec![])
    };
    c.set_backorder_demand(authed("acme", none("orders")))
        .await
        .unwrap();
    c.set_backorder_demand(authed("acme", none("erp")))
        .await
        .unwrap();
    reserve(c, "acme", "cart-3", vec![line("S", "", 1)])
        .await
        .unwrap();
    no_drift(c).await;
    assert_eq!(available(c, "acme", "S").await.available, 0);

    let bad = for_backorders("no:colons", "bad", 1);
    let err = c.create_reservation(authed("acme", bad)).await.unwrap_err();
    assert_eq!(fields(&err), ["backorders_of"]);
    let bad = GetAvailabilityRequest {
        skus: vec!["S".into()],
        backorders_of: "no:colons".into(),
        ..Default::default()
    };
    let err = c.get_availability(authed("acme", bad)).await.unwrap_err();
    assert_eq!(fields(&err), ["backorders_of"]);
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
