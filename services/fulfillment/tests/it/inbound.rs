//! Advance shipping notices, receipts against them, and messages between
//! the office and the warehouse, over the real adapter stream.
use crate::*;
use oms_proto::fulfillment::{
    command::Kind as Cmd, connect_adapter_request::Message as In,
    connect_adapter_response::Message as Out, watch_fulfillment_events_response::Kind, *,
};
use oms_runtime::status;
use oms_testkit::authed;
use tonic::Code;

fn expected(sku: &str, quantity: i64) -> ExpectedLine {
    ExpectedLine {
        sku: sku.into(),
        quantity,
        lot: String::new(),
    }
}

fn received(sku: &str, quantity: i64, damaged: i64) -> ReceivedLine {
    ReceivedLine {
        sku: sku.into(),
        quantity,
        damaged,
        ..Default::default()
    }
}

fn receipt(event: &str, id: &str, asn: &str, node: &str, lines: Vec<ReceivedLine>) -> In {
    In::Receipt(ReceiptReported {
        event_id: event.into(),
        receipt: Some(Receipt {
            receipt_id: id.into(),
            asn: asn.into(),
            node_id: node.into(),
            lines,
            ..Default::default()
        }),
    })
}

async fn answer(a: &mut Adapter, m: In) -> EventAck {
    a.send(m).await;
    match a.next().await {
        Out::EventAck(ack) => ack,
        other => panic!("expected an event ack, got {other:?}"),
    }
}

async fn create_asn(
    h: &mut Harness,
    node: &str,
    lines: Vec<ExpectedLine>,
) -> AdvanceShippingNotice {
    h.client
        .create_advance_shipping_notice(authed(
            TENANT,
            CreateAdvanceShippingNoticeRequest {
                request_id: rid(),
                asn: Some(AdvanceShippingNotice {
                    node_id: node.into(),
                    reference: "PO-4711".into(),
                    lines,
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .asn
        .unwrap()
}

/// The notice `name` as stored now, with its receipts.
async fn asn_now(h: &mut Harness, name: &str) -> AdvanceShippingNotice {
    let req = GetAdvanceShippingNoticeRequest { name: name.into() };
    let got = h
        .client
        .get_advance_shipping_notice(authed(TENANT, req))
        .await;
    got.unwrap().into_inner().asn.unwrap()
}

#[tokio::test]
async fn receipts_against_a_notice_are_recorded_once_with_their_discrepancies() {
    let mut h = start().await;
    let bad = h
        .client
        .create_advance_shipping_notice(authed(
            TENANT,
            CreateAdvanceShippingNoticeRequest {
                request_id: rid(),
                asn: Some(AdvanceShippingNotice {
                    lines: vec![
                        expected("", 0),
                        expected("a/b", 1),
                        ExpectedLine {
                            lot: "L".repeat(101),
                            ..expected("A", 1)
                        },
                    ],
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        status::fields(&bad),
        [
            "asn.node_id",
            "asn.lines[0].sku",
            "asn.lines[0].quantity",
            "asn.lines[1].sku",
            "asn.lines[2].lot"
        ]
    );

    let asn = create_asn(&mut h, "DC1", vec![expected("A", 10), expected("B", 5)]).await;
    assert!(asn.name.starts_with("asns/"));
    // Nothing received yet: every line is short.
    assert_eq!(asn.discrepancies.len(), 2);

    // The node's adapter is told what to expect.
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 0).await;
    let c = a.command().await;
    match &c.kind {
        Some(Cmd::Asn(x)) => assert_eq!((x.name.as_str(), x.lines.len()), (asn.name.as_str(), 2)),
        other => panic!("expected a notice, got {other:?}"),
    }
    a.ack(c.sequence).await;

    let first = receipt(
        "r1",
        "GR-1",
        &asn.name,
        "DC1",
        vec![
            received("A", 10, 0),
            received("B", 3, 1),
            received("C", 2, 0),
        ],
    );
    let ack = answer(&mut a, first.clone()).await;
    assert!(ack.accepted, "{}", ack.error);
    // Sent again (the adapter did not see the answer): same answer, once.
    assert!(answer(&mut a, first).await.accepted);
    // The same receipt under another event id is refused.
    let reused = answer(
        &mut a,
        receipt("r2", "GR-1", &asn.name, "DC1", vec![received("A", 1, 0)]),
    )
    .await;
    assert!(!reused.accepted);
    assert!(
        reused.error.contains("already reported"),
        "{}",
        reused.error
    );
    // Not this adapter's node, an unknown notice, an empty line.
    let elsewhere = answer(
        &mut a,
        receipt("r3", "GR-3", &asn.name, "DC9", vec![received("A", 1, 0)]),
    )
    .await;
    assert!(
        elsewhere.error.contains("not served"),
        "{}",
        elsewhere.error
    );
    let unknown = answer(
        &mut a,
        receipt(
            "r4",
            "GR-4",
            "asns/0192f3a0-0000-7000-8000-000000000009",
            "DC1",
            vec![received("A", 1, 0)],
        ),
    )
    .await;
    assert!(unknown.error.contains("unknown ASN"), "{}", unknown.error);
    let empty = answer(
        &mut a,
        receipt("r5", "GR-5", "", "DC1", vec![received("A", 0, 0)]),
    )
    .await;
    assert!(!empty.accepted);
    // Received days from now: a WMS clock set wrong, which inventory
    // would refuse to record.
    let mut ahead = receipt("r5b", "GR-5B", "", "DC1", vec![received("A", 1, 0)]);
    if let In::Receipt(r) = &mut ahead {
        let at = chrono::Utc::now() + chrono::Duration::days(3);
        r.receipt.as_mut().unwrap().receive_time = Some(oms_runtime::time::to_timestamp(at));
    }
    let ahead = answer(&mut a, ahead).await;
    assert!(!ahead.accepted);
    assert!(ahead.error.contains("receive_time: "), "{}", ahead.error);
    // A receipt without a notice is taken too.
    let blind = answer(
        &mut a,
        receipt("r6", "", "", "DC1", vec![received("Z", 4, 0)]),
    )
    .await;
    assert!(blind.accepted, "{}", blind.error);

    let got = asn_now(&mut h, &asn.name).await;
    assert_eq!(got.receipts.len(), 1);
    assert_eq!(got.receipts[0].receipt_id, "GR-1");
    // Inventory is unreachable in this test: not posted, not failed.
    assert!(got.receipts[0].post_time.is_none());
    let d: Vec<(String, i64, i64, i64)> = got
        .discrepancies
        .iter()
        .map(|d| (d.sku.clone(), d.expected, d.received, d.damaged))
        .collect();
    assert_eq!(d, [("B".into(), 5, 3, 1), ("C".into(), 0, 2, 0)]);

    let listed = h
        .client
        .list_advance_shipping_notices(authed(
            TENANT,
            ListAdvanceShippingNoticesRequest {
                node_id: "DC1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .asns;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].discrepancies, got.discrepancies);

    // The feed: the two receipts taken, each once.
    let feed = h.feed(TENANT, 2).await;
    let recorded: Vec<(String, String, usize)> = feed
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ReceiptRecorded(r)) => Some((
                e.meta.as_ref().unwrap().subject.clone(),
                r.receipt.as_ref().unwrap().receipt_id.clone(),
                r.discrepancies.len(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded,
        [
            (asn.name.clone(), "GR-1".into(), 2),
            ("receipts/r6".into(), "r6".into(), 0)
        ]
    );
}

/// A closed notice expects nothing more, yet a receipt against it is
/// still taken (what arrived, arrived); bad and unknown names are refused.
#[tokio::test]
async fn a_closed_notice_still_takes_receipts() {
    let mut h = start().await;
    let close = |request_id: &str, name: &str| CloseAdvanceShippingNoticeRequest {
        request_id: request_id.into(),
        name: name.into(),
    };
    let bad = (h.client)
        .close_advance_shipping_notice(authed(TENANT, close("", "asns/x")))
        .await
        .unwrap_err();
    assert_eq!(status::fields(&bad), ["request_id", "name"]);
    let unknown = format!("asns/{}", uuid::Uuid::now_v7());
    let gone = (h.client)
        .close_advance_shipping_notice(authed(TENANT, close(&rid(), &unknown)))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let asn = create_asn(&mut h, "DC1", vec![expected("A", 10)]).await;
    assert_eq!(asn.close_time, None);
    let closed = (h.client)
        .close_advance_shipping_notice(authed(TENANT, close(&rid(), &asn.name)))
        .await
        .unwrap()
        .into_inner()
        .asn
        .unwrap();
    assert!(closed.close_time.is_some());
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 0).await;
    assert!(matches!(a.command().await.kind, Some(Cmd::Asn(_))));
    let late = receipt(
        "ev-late",
        "rc-late",
        &asn.name,
        "DC1",
        vec![received("A", 4, 0)],
    );
    assert!(answer(&mut a, late).await.accepted);
    let got = asn_now(&mut h, &asn.name).await;
    assert_eq!(got.close_time, closed.close_time);
    let short: Vec<(i64, i64)> = (got.discrepancies.iter())
        .map(|d| (d.expected, d.received))
        .collect();
    assert_eq!((got.receipts.len(), short), (1, vec![(10, 4)]));
}

#[tokio::test]
async fn messages_reach_the_node_are_delivered_on_acknowledgement_and_read_once() {
    let mut h = start().await;
    let fo = h.released(TENANT, "DC1").await;
    let bad = h
        .client
        .send_message(authed(
            TENANT,
            SendMessageRequest {
                request_id: rid(),
                message: Some(Message {
                    subject: "orders/1".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status::fields(&bad), ["message.body", "message.subject"]);
    assert!(
        bad.message().contains("names what the message is about"),
        "{}",
        bad.message()
    );
    let missing = h
        .client
        .send_message(authed(
            TENANT,
            SendMessageRequest {
                request_id: rid(),
                message: Some(Message {
                    subject: "fulfillmentOrders/0192f3a0-0000-7000-8000-000000000009".into(),
                    body: "fragile".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let send = SendMessageRequest {
        request_id: rid(),
        message: Some(Message {
            subject: fo.name.clone(),
            body: "Fragile: pack the vase in double foam.".into(),
            ..Default::default()
        }),
    };
    let sent = h
        .client
        .send_message(authed(TENANT, send.clone()))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_eq!(sent.node_id, "DC1");
    assert!(sent.deliver_time.is_none());
    // Sent again with the same request id: the same message, not a second.
    let again = h
        .client
        .send_message(authed(TENANT, send))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_eq!(again.name, sent.name);

    // The release came first, then the message.
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 1).await;
    let c = a.command().await;
    match &c.kind {
        Some(Cmd::Message(m)) => assert_eq!(m.body, "Fragile: pack the vase in double foam."),
        other => panic!("expected a message, got {other:?}"),
    }
    let list = |unread_only| ListMessagesRequest {
        subject: fo.name.clone(),
        unread_only,
        ..Default::default()
    };
    let before = h
        .client
        .list_messages(authed(TENANT, list(false)))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(before.len(), 1);
    assert!(before[0].deliver_time.is_none(), "not acknowledged yet");
    a.ack(c.sequence).await;
    // A heartbeat's answer shows the ack was handled.
    a.send(In::Heartbeat(Heartbeat::default())).await;
    assert!(matches!(a.next().await, Out::Heartbeat(_)));
    let unread = h
        .client
        .list_messages(authed(TENANT, list(true)))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert_eq!(unread.len(), 1);
    assert!(
        unread[0].deliver_time.is_some(),
        "delivered once acknowledged"
    );

    let mark = MarkMessageReadRequest {
        request_id: rid(),
        name: sent.name.clone(),
    };
    let read = h
        .client
        .mark_message_read(authed(TENANT, mark.clone()))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    let read_at = read.read_time.unwrap();
    let replay = h
        .client
        .mark_message_read(authed(TENANT, mark))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_eq!(replay.read_time.unwrap(), read_at);
    let unread = h
        .client
        .list_messages(authed(TENANT, list(true)))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert!(unread.is_empty());
    // Another tenant sees none of it.
    let foreign = h
        .client
        .list_messages(authed("other", ListMessagesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .messages;
    assert!(foreign.is_empty());
}

#[tokio::test]
async fn notes_from_the_warehouse_are_stored_once_for_the_office_to_read() {
    let mut h = start().await;
    let here = h.released(TENANT, "DC1").await;
    let there = h.released(TENANT, "DC2").await;
    let mut a = Adapter::connect(&h.svc.channel(), TENANT, "wms-1", &["DC1"], 2).await;
    let note = |event: &str, subject: &str, body: &str| {
        In::Note(AdapterNote {
            event_id: event.into(),
            message: Some(Message {
                subject: subject.into(),
                body: body.into(),
                ..Default::default()
            }),
        })
    };
    let first = note(
        "n1",
        &here.name,
        "Customer asked for gift wrap; we will add it.",
    );
    assert!(answer(&mut a, first.clone()).await.accepted);
    // Resent: stored once.
    assert!(answer(&mut a, first).await.accepted);
    let elsewhere = answer(&mut a, note("n2", &there.name, "Not ours")).await;
    assert!(
        elsewhere.error.contains("not served"),
        "{}",
        elsewhere.error
    );
    let empty = answer(&mut a, note("n3", &here.name, " ")).await;
    assert!(empty.error.contains("message.body"), "{}", empty.error);
    let unknown = answer(&mut a, note("n4", "receipts/nope", "Pallet 3 wet")).await;
    assert!(
        unknown.error.contains("unknown subject"),
        "{}",
        unknown.error
    );
    // A receiving note about a receipt reported on the stream.
    let rc = answer(
        &mut a,
        receipt("r1", "GR-9", "", "DC1", vec![received("A", 3, 1)]),
    )
    .await;
    assert!(rc.accepted, "{}", rc.error);
    assert!(
        answer(&mut a, note("n5", "receipts/GR-9", "One carton crushed."))
            .await
            .accepted
    );

    let from_node: Vec<(String, String, bool, bool)> = h
        .client
        .list_messages(authed(
            TENANT,
            ListMessagesRequest {
                unread_only: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .messages
        .into_iter()
        .map(|m| (m.subject, m.author, m.from_node, m.deliver_time.is_some()))
        .collect();
    assert_eq!(
        from_node,
        [
            ("receipts/GR-9".into(), "adapter:wms-1".into(), true, true),
            (here.name.clone(), "adapter:wms-1".into(), true, true),
        ]
    );
}
