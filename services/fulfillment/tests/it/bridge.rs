//! The adapter stream: commands out in sequence, status events back, each
//! exactly once across cuts and restarts.
use crate::*;
use oms_proto::fulfillment::{
    FulfillmentState as S, command::Kind as Cmd, connect_adapter_request::Message as In,
    connect_adapter_response::Message as Out, status_event::Kind as Ev, *,
};
use oms_runtime::status;
use oms_testkit::authed;
use tonic::Code;

fn release_of(c: &Command) -> &FulfillmentOrder {
    match &c.kind {
        Some(Cmd::Release(fo)) => fo,
        other => panic!("expected a release, got {other:?}"),
    }
}

fn shipped(lines: &[(&str, i64)]) -> Ev {
    Ev::Shipped(OrderShipped {
        shipment: Some(Shipment {
            carrier: "DHL".into(),
            tracking_number: "JJD000123".into(),
            lines: lines
                .iter()
                .map(|(l, q)| ShippedLine {
                    line_id: (*l).into(),
                    sku: "SKU-A".into(),
                    quantity: *q,
                    ..Default::default()
                })
                .collect(),
            ship_time: None,
        }),
    })
}

#[tokio::test]
async fn released_work_reaches_the_adapter_and_its_status_walks_the_order_to_delivered() {
    let mut h = start().await;
    let fo = h.released(TENANT, "DC1").await;
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 0).await;
    assert_eq!(a.welcome.head_sequence, 1);
    let c = a.command().await;
    assert_eq!(c.sequence, 1);
    assert_eq!(c.node_id, "DC1");
    assert_eq!(release_of(&c).name, fo.name);
    a.ack(1).await;

    let steps = [
        ("e1", Ev::Accepted(OrderAccepted {}), S::Accepted),
        ("e2", Ev::Picking(PickingStarted {}), S::Picking),
        ("e3", Ev::Packed(OrderPacked {}), S::Packed),
        // One parcel with one of the two units: still packed.
        ("e4", shipped(&[("1", 1)]), S::Packed),
        ("e5", shipped(&[("1", 1)]), S::Shipped),
        (
            "e6",
            Ev::Delivered(OrderDelivered {
                tracking_number: "JJD000123".into(),
            }),
            S::Delivered,
        ),
    ];
    for (id, ev, want) in steps {
        let ack = a.report(id, "DC1", &fo.name, ev).await;
        assert!(ack.accepted, "{id}: {}", ack.error);
        assert_eq!(h.get(TENANT, &fo.name).await.state(), want, "after {id}");
    }
    // A resent event gets its first answer and changes nothing.
    let again = a.report("e5", "DC1", &fo.name, shipped(&[("1", 1)])).await;
    assert!(again.accepted);
    let done = h.get(TENANT, &fo.name).await;
    assert_eq!(done.shipments.len(), 2);
    assert_eq!(done.lines[0].quantity_shipped, 2);
    // Going back is refused, and the refusal is the answer for good.
    let back = a
        .report("e7", "DC1", &fo.name, Ev::Picking(PickingStarted {}))
        .await;
    assert!(!back.accepted);
    assert!(back.error.contains("already delivered"), "{}", back.error);

    // created, released, then six changes; the resend added none.
    let feed = h.feed(TENANT, 8).await;
    let last = feed.last().unwrap();
    match &last.kind {
        Some(watch_fulfillment_events_response::Kind::StateChanged(c)) => {
            assert_eq!(c.to_state(), S::Delivered);
            assert_eq!(c.status.as_ref().unwrap().event_id, "e6");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_cut_stream_resumes_after_the_last_acknowledged_command() {
    let mut h = start().await;
    let mut names = Vec::new();
    for _ in 0..5 {
        names.push(h.released(TENANT, "DC1").await.name);
    }
    // Work for another node never reaches this adapter.
    h.released(TENANT, "DC9").await;
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 0).await;
    for seq in 1..=5 {
        assert_eq!(a.command().await.sequence, seq);
    }
    a.ack(2).await;
    // A heartbeat's answer shows the ack was read before the cut.
    a.send(In::Heartbeat(Heartbeat::default())).await;
    assert!(matches!(a.next().await, Out::Heartbeat(_)));
    drop(a);
    // Released while no adapter is connected: waits for it.
    names.push(h.released(TENANT, "DC1").await.name);

    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 2).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let c = a.command().await;
        got.push((c.sequence, release_of(&c).name.clone()));
    }
    assert_eq!(
        got,
        [
            (3, names[2].clone()),
            (4, names[3].clone()),
            (5, names[4].clone()),
            (7, names[5].clone()),
        ]
    );
    a.ack(7).await;
    a.send(In::Heartbeat(Heartbeat::default())).await;
    assert!(matches!(a.next().await, Out::Heartbeat(_)));
    let sessions = h
        .client
        .list_adapter_sessions(authed(TENANT, ListAdapterSessionsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!((s.adapter_id.as_str(), s.connected), ("wms-1", true));
    assert_eq!(s.node_ids, ["DC1"]);
    assert_eq!(s.last_acknowledged_sequence, 7);
    assert_eq!(s.unacknowledged_commands, 0);
}

#[tokio::test]
async fn an_adapter_that_lags_a_window_gets_nothing_more_until_it_acknowledges() {
    let mut h = start_with(BridgeConfig {
        window: 2,
        ..BridgeConfig::default()
    })
    .await;
    for _ in 0..3 {
        h.released(TENANT, "DC1").await;
    }
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 0).await;
    assert_eq!(a.command().await.sequence, 1);
    assert_eq!(a.command().await.sequence, 2);
    // The window is full: the heartbeat's answer comes before command 3.
    a.send(In::Heartbeat(Heartbeat::default())).await;
    assert!(matches!(a.next().await, Out::Heartbeat(_)));
    a.ack(1).await;
    assert_eq!(a.command().await.sequence, 3);
}

#[tokio::test]
async fn unacknowledged_commands_are_sent_again() {
    let mut h = start_with(BridgeConfig {
        resend_after: std::time::Duration::from_millis(300),
        ..BridgeConfig::default()
    })
    .await;
    let fo = h.released(TENANT, "DC1").await;
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 0).await;
    let first = a.command().await;
    // Not acknowledged: it comes again, the same command.
    let again = a.command().await;
    assert_eq!(again, first);
    assert_eq!(release_of(&again).name, fo.name);
}

/// On a stream quiet for longer than the resend delay, a new command is
/// sent once: the wait for its acknowledgement starts when it goes out.
/// (It was measured from the last acknowledgement, so the command went
/// out twice at once, and a simulator walked the work twice.)
#[tokio::test]
async fn a_command_after_a_quiet_spell_is_sent_once() {
    let resend_after = std::time::Duration::from_millis(400);
    let mut h = start_with(BridgeConfig {
        resend_after,
        ..BridgeConfig::default()
    })
    .await;
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 0).await;
    // The quiet spell itself: time passing is what is tested here.
    tokio::time::sleep(resend_after * 2).await;
    let first = h.released(TENANT, "DC1").await;
    assert_eq!(release_of(&a.command().await).name, first.name);
    // Not acknowledged yet: the next command is the next release, not
    // the first one again.
    let second = h.released(TENANT, "DC1").await;
    assert_eq!(release_of(&a.command().await).name, second.name);
}

#[tokio::test]
async fn a_restart_mid_stream_loses_and_repeats_nothing() {
    let mut h = start().await;
    let fos: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(h.released(TENANT, "DC1").await);
        }
        v
    };
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 0).await;
    for seq in 1..=3 {
        assert_eq!(a.command().await.sequence, seq);
    }
    // Only the first is processed when the server goes down.
    a.ack(1).await;
    let ack = a
        .report("acc-1", "DC1", &fos[0].name, Ev::Accepted(OrderAccepted {}))
        .await;
    assert!(ack.accepted);
    h.restart().await;
    // The adapter reconnects to the new process and carries on.
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 1).await;
    assert_eq!(a.command().await.sequence, 2);
    assert_eq!(a.command().await.sequence, 3);
    // It did not see the first answer: it sends the event again.
    let again = a
        .report("acc-1", "DC1", &fos[0].name, Ev::Accepted(OrderAccepted {}))
        .await;
    assert!(again.accepted);
    // Three created, three released, one accepted: nothing twice.
    let feed = h.feed(TENANT, 7).await;
    let accepted = feed
        .iter()
        .filter(|e| {
            matches!(&e.kind, Some(watch_fulfillment_events_response::Kind::StateChanged(c)) if c.to_state() == S::Accepted)
        })
        .count();
    assert_eq!(accepted, 1);
    assert_eq!(h.get(TENANT, &fos[0].name).await.state(), S::Accepted);
}

#[tokio::test]
async fn events_for_other_nodes_or_tenants_and_bad_hellos_are_refused() {
    let mut h = start().await;
    let mine_elsewhere = h.released(TENANT, "DC2").await;
    let theirs = h.released("other", "DC1").await;
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 0).await;
    let ack = a
        .report(
            "x1",
            "DC2",
            &mine_elsewhere.name,
            Ev::Accepted(OrderAccepted {}),
        )
        .await;
    assert!(!ack.accepted);
    assert!(
        ack.error.contains("not served by this adapter"),
        "{}",
        ack.error
    );
    let ack = a
        .report(
            "x2",
            "DC1",
            &mine_elsewhere.name,
            Ev::Accepted(OrderAccepted {}),
        )
        .await;
    assert!(!ack.accepted);
    assert!(ack.error.contains("is at node DC2"), "{}", ack.error);
    let ack = a
        .report("x3", "DC1", &theirs.name, Ev::Accepted(OrderAccepted {}))
        .await;
    assert!(!ack.accepted);
    assert!(
        ack.error.contains("unknown fulfillment order"),
        "{}",
        ack.error
    );
    assert_eq!(h.get("other", &theirs.name).await.state(), S::Released);
    assert_eq!(
        h.get(TENANT, &mine_elsewhere.name).await.state(),
        S::Released
    );

    // A stream must start with a valid hello.
    let err = open(&h.svc.channel(), TENANT, hello("", &[], -1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = status::fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "hello.adapter_id",
            "hello.last_processed_sequence",
            "hello.node_ids"
        ]
    );
    // A node no node can be would never get a command.
    let err = open(&h.svc.channel(), TENANT, hello("a", &["DC1", "DC 2"], 0))
        .await
        .unwrap_err();
    assert_eq!(status::fields(&err), ["hello.node_ids[1]"]);
    let not_hello = ConnectAdapterRequest {
        message: Some(In::Heartbeat(Heartbeat::default())),
    };
    let err = open(&h.svc.channel(), TENANT, not_hello).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // And needs a token.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(hello("wms-1", &["DC1"], 0)).await.unwrap();
    let err = FulfillmentServiceClient::new(h.svc.channel())
        .connect_adapter(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn pipelined_events_are_answered_in_order_each_applied_once() {
    let mut h = start().await;
    let x = h.released(TENANT, "DC1").await.name;
    let y = h.released(TENANT, "DC1").await.name;
    // Both commands were processed before: the stream carries answers only.
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 2).await;
    // Sent back to back without waiting: they arrive together and are
    // applied together, each answered in the order sent.
    let events = [
        ("x1", "DC1", &x, Ev::Accepted(OrderAccepted {})),
        ("y1", "DC1", &y, Ev::Accepted(OrderAccepted {})),
        ("x2", "DC1", &x, Ev::Picking(PickingStarted {})),
        ("x1", "DC1", &x, Ev::Accepted(OrderAccepted {})),
        ("z1", "DC9", &y, Ev::Packed(OrderPacked {})),
        ("y2", "DC1", &y, Ev::Packed(OrderPacked {})),
        ("x3", "DC1", &x, Ev::Picking(PickingStarted {})),
        ("y3", "DC1", &y, Ev::Picking(PickingStarted {})),
        ("", "DC1", &y, Ev::Picking(PickingStarted {})),
    ];
    for (id, node, fo, kind) in events.clone() {
        a.send(In::Status(StatusEvent {
            event_id: id.into(),
            node_id: node.into(),
            fulfillment_order: fo.clone(),
            occur_time: None,
            kind: Some(kind),
        }))
        .await;
    }
    let mut answers = Vec::new();
    for _ in 0..events.len() {
        match a.next().await {
            Out::EventAck(ack) => answers.push((ack.event_id, ack.accepted)),
            other => panic!("expected an event ack, got {other:?}"),
        }
    }
    assert_eq!(
        answers,
        [
            ("x1".to_string(), true),
            ("y1".into(), true),
            ("x2".into(), true),
            // The repeat gets the first answer.
            ("x1".into(), true),
            // Not a node of this adapter.
            ("z1".into(), false),
            ("y2".into(), true),
            // Where it already is: answered, nothing changes.
            ("x3".into(), true),
            // Going back is refused.
            ("y3".into(), false),
            // No id to answer by.
            ("".into(), false),
        ]
    );
    assert_eq!(h.get(TENANT, &x).await.state(), S::Picking);
    assert_eq!(h.get(TENANT, &y).await.state(), S::Packed);
    // Two created, two released, then x1, y1, x2, y2 and nothing else:
    // the next event in the feed is the one a later report makes.
    let later = a.report("x4", "DC1", &x, Ev::Packed(OrderPacked {})).await;
    assert!(later.accepted, "{}", later.error);
    let feed = h.feed(TENANT, 9).await;
    let changes: Vec<String> = feed
        .iter()
        .filter_map(|e| match &e.kind {
            Some(watch_fulfillment_events_response::Kind::StateChanged(c)) => {
                c.status.as_ref().map(|s| s.event_id.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(changes, ["x1", "y1", "x2", "y2", "x4"]);
}
