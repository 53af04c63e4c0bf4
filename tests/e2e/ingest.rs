//! Channel payloads from the published samples go in through gRPC and
//! become reserved orders; a repeated webhook changes nothing; a bad
//! signature is refused and audited.
use crate::placement::{order_of, until_state};
use oms_e2e::{Suite, next_order_event, pos_submission};
use oms_proto::ingest::{self as ing, ingest_service_client::IngestServiceClient};
use oms_proto::orders::{self as ord, OrderState, order_service_client::OrderServiceClient};
use oms_runtime::Service;
use oms_testkit::authed;
use std::collections::HashMap;

const T: &str = "acme";
const SECRET: &str = "whsec-test-0123456789";

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/channels/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("sample {path}: {e}"))
}

async fn stocked(suite: &Suite, skus: &[&str]) {
    let items: Vec<(&str, i64)> = skus.iter().map(|s| (*s, 10)).collect();
    suite.stock(T, &items).await;
}

pub(crate) async fn channel(
    c: &mut IngestServiceClient<tonic::transport::Channel>,
    id: &str,
    kind: ing::ChannelKind,
    mappings: &[(&str, &str)],
) {
    c.create_channel(authed(
        T,
        ing::CreateChannelRequest {
            request_id: format!("ch-{id}"),
            channel: Some(ing::Channel {
                channel_id: id.into(),
                kind: kind as i32,
                display_name: id.into(),
                webhook_secret: SECRET.into(),
                sku_mappings: mappings
                    .iter()
                    .map(|(c, s)| ing::SkuMapping {
                        channel_sku: c.to_string(),
                        sku: s.to_string(),
                    })
                    .collect(),
                enabled: true,
                ..Default::default()
            }),
        },
    ))
    .await
    .unwrap();
}

fn webhook(channel: &str, header: &str, body: Vec<u8>) -> ing::SubmitChannelPayloadRequest {
    let sig = oms_ingest::signature::sign(SECRET, &body);
    ing::SubmitChannelPayloadRequest {
        request_id: format!("delivery-{}", uuid_like(&body)),
        channel: format!("channels/{channel}"),
        headers: HashMap::from([(header.to_string(), sig)])
            .into_iter()
            .collect(),
        body,
    }
}

/// City, region, postal code and country of an address.
fn place(a: &oms_proto::common::PostalAddress) -> (&str, &str, &str, &str) {
    let (city, region) = (a.city.as_str(), a.region.as_str());
    (
        city,
        region,
        a.postal_code.as_str(),
        a.country_code.as_str(),
    )
}

/// A payload of a channel that does not sign them (polled by a connector).
fn unsigned(
    channel: &str,
    request_id: &str,
    body: &serde_json::Value,
) -> ing::SubmitChannelPayloadRequest {
    ing::SubmitChannelPayloadRequest {
        request_id: request_id.into(),
        channel: format!("channels/{channel}"),
        body: body.to_string().into_bytes(),
        headers: Default::default(),
    }
}

fn uuid_like(body: &[u8]) -> String {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    format!(
        "{:x}",
        BuildHasherDefault::<DefaultHasher>::default().hash_one(body)
    )
}

#[tokio::test]
async fn shopify_and_woocommerce_samples_become_reserved_orders() {
    let suite = Suite::start().await;
    stocked(
        &suite,
        &[
            "IPOD2008GREEN",
            "IPOD2008RED",
            "IPOD2008BLACK",
            "WOO-SINGLE",
            "Bar3",
        ],
    )
    .await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(&mut ingest, "shop", ing::ChannelKind::Shopify, &[]).await;
    channel(
        &mut ingest,
        "woo",
        ing::ChannelKind::Woocommerce,
        &[("woo-93", "WOO-SINGLE")],
    )
    .await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;

    let shop = webhook(
        "shop",
        "X-Shopify-Hmac-Sha256",
        sample("shopify-order.json"),
    );
    let first = ingest
        .submit_channel_payload(authed(T, shop.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.outcome, ing::SubmissionOutcome::Created as i32);
    // Webhooks retry: the same delivery again is recognised.
    let again = ingest
        .submit_channel_payload(authed(T, shop))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.outcome, again.order.as_str()),
        (
            ing::SubmissionOutcome::Duplicate as i32,
            first.order.as_str()
        )
    );

    // A later version of the order (the address changed) updates it.
    let mut changed: serde_json::Value =
        serde_json::from_slice(&sample("shopify-order.json")).unwrap();
    changed["shipping_address"]["city"] = "Lexington".into();
    let update = ingest
        .submit_channel_payload(authed(
            T,
            webhook(
                "shop",
                "X-Shopify-Hmac-Sha256",
                changed.to_string().into_bytes(),
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (update.outcome, update.order.as_str()),
        (ing::SubmissionOutcome::Updated as i32, first.order.as_str())
    );

    let woo = ingest
        .submit_channel_payload(authed(
            T,
            webhook(
                "woo",
                "X-WC-Webhook-Signature",
                sample("woocommerce-order.json"),
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(woo.outcome, ing::SubmissionOutcome::Created as i32);

    let mut reserved = std::collections::HashSet::new();
    while reserved.len() < 2 {
        let o = next_order_event(&mut feed).await.order.unwrap();
        if o.state == OrderState::Reserved as i32 {
            reserved.insert(o.name);
        }
    }
    let shop_order = order_of(&mut orders, &first.order).await;
    assert_eq!(shop_order.channel, "channels/shop");
    assert_eq!(shop_order.channel_order_id, "450789469");
    assert_eq!(shop_order.currency_code, "USD");
    let skus: Vec<(&str, i64, i64)> = shop_order
        .lines
        .iter()
        .map(|l| {
            (
                l.sku.as_str(),
                l.quantity,
                l.unit_price.as_ref().unwrap().amount_minor,
            )
        })
        .collect();
    assert_eq!(
        skus,
        [
            ("IPOD2008GREEN", 1, 19900),
            ("IPOD2008RED", 1, 19900),
            ("IPOD2008BLACK", 1, 19900)
        ]
    );
    let to = shop_order.ship_to.unwrap();
    assert_eq!(place(&to), ("Lexington", "KY", "40202", "US"));
    assert_eq!(shop_order.totals.unwrap().tax.unwrap().amount_minor, 1194);

    // Amazon: the connector sends what getOrders, getOrderItems and
    // getOrderAddress returned.
    channel(
        &mut ingest,
        "amazon",
        ing::ChannelKind::AmazonSpApi,
        &[("NABetaASINB00551Q3CS", "IPOD2008GREEN")],
    )
    .await;
    let orders_doc: serde_json::Value =
        serde_json::from_slice(&sample("amazon-sp-api-getOrders.json")).unwrap();
    let body = serde_json::json!({
        "order": orders_doc["payload"]["Orders"][0],
        "items": serde_json::from_slice::<serde_json::Value>(&sample("amazon-sp-api-getOrderItems.json")).unwrap(),
        "address": serde_json::from_slice::<serde_json::Value>(&sample("amazon-sp-api-getOrderAddress.json")).unwrap(),
    });
    let amazon = ingest
        .submit_channel_payload(authed(T, unsigned("amazon", "amazon-1", &body)))
        .await
        .unwrap()
        .into_inner();
    let amazon_order = order_of(&mut orders, &amazon.order).await;
    assert_eq!(amazon_order.channel_order_id, "902-1845936-5435065");
    let l = &amazon_order.lines[0];
    assert_eq!(
        (
            l.sku.as_str(),
            l.quantity,
            l.unit_price.as_ref().unwrap().amount_minor
        ),
        ("IPOD2008GREEN", 1, 1000)
    );
    assert_eq!(amazon_order.ship_to.unwrap().city, "SEATTLE");
    assert_eq!(
        amazon_order.totals.unwrap().total.unwrap().amount_minor,
        1101
    );

    // Trendyol: a shipment package as its API returns it.
    channel(
        &mut ingest,
        "trendyol",
        ing::ChannelKind::Trendyol,
        &[("merchantSku", "Bar3")],
    )
    .await;
    let ty = ingest
        .submit_channel_payload(authed(
            T,
            ing::SubmitChannelPayloadRequest {
                request_id: "ty-1".into(),
                channel: "channels/trendyol".into(),
                body: sample("trendyol-shipment-packages.json"),
                headers: Default::default(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let ty_order = order_of(&mut orders, &ty.order).await;
    assert_eq!(
        (
            ty_order.channel_order_id.as_str(),
            ty_order.currency_code.as_str()
        ),
        ("80869231", "TRY")
    );
    let l = &ty_order.lines[0];
    assert_eq!(
        (
            l.sku.as_str(),
            l.quantity,
            l.unit_price.as_ref().unwrap().amount_minor
        ),
        ("Bar3", 2, 1299)
    );
    assert_eq!(ty_order.ship_to.unwrap().country_code, "TR");

    let woo_order = order_of(&mut orders, &woo.order).await;
    let skus: Vec<(&str, &str, i64)> = woo_order
        .lines
        .iter()
        .map(|l| (l.sku.as_str(), l.channel_sku.as_str(), l.quantity))
        .collect();
    assert_eq!(skus, [("WOO-SINGLE", "woo-93", 2), ("Bar3", "Bar3", 1)]);
    assert_eq!(woo_order.totals.unwrap().total.unwrap().amount_minor, 2935);
}

#[tokio::test]
async fn bad_signatures_and_bad_payloads_are_refused_and_audited() {
    let suite = Suite::start().await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(&mut ingest, "shop", ing::ChannelKind::Shopify, &[]).await;
    let mut tampered = webhook(
        "shop",
        "X-Shopify-Hmac-Sha256",
        sample("shopify-order.json"),
    );
    tampered.body.push(b' ');
    let err = ingest
        .submit_channel_payload(authed(T, tampered))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let bad = webhook("shop", "X-Shopify-Hmac-Sha256", br#"{"id": 1, "currency": "USD", "line_items": [{"sku": "A", "quantity": 0, "price": "1.001"}]}"#.to_vec());
    let err = ingest
        .submit_channel_payload(authed(T, bad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    use tonic_types::StatusExt;
    let fields: Vec<String> = err
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert!(
        fields.contains(&"body.line_items[0].price".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"body.line_items[0].quantity".to_string()),
        "{fields:?}"
    );

    let err = ingest
        .submit_channel_payload(authed(
            "globex",
            webhook(
                "shop",
                "X-Shopify-Hmac-Sha256",
                sample("shopify-order.json"),
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::NotFound,
        "another tenant's channel does not exist for you"
    );

    let audit = ingest
        .list_payloads(authed(T, ing::ListPayloadsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .payloads;
    assert_eq!(audit.len(), 2);
    assert!(
        audit
            .iter()
            .all(|p| p.status == ing::PayloadStatus::Rejected as i32 && !p.error.is_empty())
    );
    // One at a time, newest first, the same two; none accepted.
    let list = |page_token: String, status: ing::PayloadStatus| ing::ListPayloadsRequest {
        page_size: 1,
        page_token,
        status: status as i32,
        ..Default::default()
    };
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = ingest
            .list_payloads(authed(T, list(token, ing::PayloadStatus::Rejected)))
            .await
            .unwrap()
            .into_inner();
        paged.extend(page.payloads.into_iter().map(|p| p.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let names: Vec<String> = audit.iter().map(|p| p.name.clone()).collect();
    assert_eq!(paged, names);
    assert!(names[0] > names[1], "newest first: {names:?}");
    let accepted = ingest
        .list_payloads(authed(T, list(String::new(), ing::PayloadStatus::Accepted)))
        .await
        .unwrap()
        .into_inner();
    assert!(accepted.payloads.is_empty());
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let listed = orders
        .list_orders(authed(T, ord::ListOrdersRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert!(listed.is_empty(), "nothing but the audit is stored");
}

#[tokio::test]
async fn a_bulk_import_answers_each_item() {
    let suite = Suite::start().await;
    stocked(&suite, &["IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK"]).await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(&mut ingest, "shop", ing::ChannelKind::Shopify, &[]).await;
    channel(&mut ingest, "pos", ing::ChannelKind::Pos, &[]).await;
    let pos_order = |id: &str, sku: &str| ord::Order {
        channel_order_id: id.into(),
        currency_code: "EUR".into(),
        delivery_method: oms_proto::common::DeliveryMethod::Pickup as i32,
        pickup_node_id: "DC1".into(),
        lines: vec![ord::OrderLine {
            sku: sku.into(),
            quantity: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    let items = vec![
        ing::ImportOrdersRequest {
            item_id: "a".into(),
            item: Some(ing::import_orders_request::Item::Payload(webhook(
                "shop",
                "X-Shopify-Hmac-Sha256",
                sample("shopify-order.json"),
            ))),
        },
        ing::ImportOrdersRequest {
            item_id: "b".into(),
            item: Some(ing::import_orders_request::Item::Order(
                ing::SubmitOrderRequest {
                    request_id: "pos-1".into(),
                    channel: "channels/pos".into(),
                    order: Some(pos_order("till-1", "IPOD2008RED")),
                },
            )),
        },
        ing::ImportOrdersRequest {
            item_id: "c".into(),
            item: Some(ing::import_orders_request::Item::Order(
                ing::SubmitOrderRequest {
                    request_id: "pos-2".into(),
                    channel: "channels/pos".into(),
                    order: Some(ord::Order {
                        lines: vec![],
                        ..pos_order("till-2", "X")
                    }),
                },
            )),
        },
    ];
    let results = ingest
        .import_orders(authed(T, tokio_stream::iter(items)))
        .await
        .unwrap()
        .into_inner()
        .results;
    let summary: Vec<(&str, i32, i32)> = results
        .iter()
        .map(|r| {
            (
                r.item_id.as_str(),
                r.status.as_ref().unwrap().code,
                r.outcome,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("a", 0, ing::SubmissionOutcome::Created as i32),
            ("b", 0, ing::SubmissionOutcome::Created as i32),
            (
                "c",
                tonic::Code::InvalidArgument as i32,
                ing::SubmissionOutcome::Unspecified as i32
            ),
        ]
    );
    assert!(
        !results[2].status.as_ref().unwrap().details.is_empty(),
        "field violations travel with the item"
    );
}

#[tokio::test]
async fn a_channel_is_updated_by_mask_and_a_disabled_one_refuses_payloads() {
    let suite = Suite::start().await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    // Ingest remembers channels a moment; its own changes are seen at once:
    // a channel created after a payload found none, a channel disabled
    // after a payload found it enabled.
    let mut unsigned = webhook(
        "shop",
        "X-Shopify-Hmac-Sha256",
        sample("shopify-order.json"),
    );
    unsigned.headers.clear();
    let mut probe = ingest.clone();
    let mut submit_unsigned = async || {
        probe
            .submit_channel_payload(authed(T, unsigned.clone()))
            .await
            .unwrap_err()
            .code()
    };
    assert_eq!(submit_unsigned().await, tonic::Code::NotFound);
    // No request id and no channel: both in one answer.
    let bad = ingest
        .create_channel(authed(T, ing::CreateChannelRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(oms_runtime::status::fields(&bad), ["request_id", "channel"]);
    channel(&mut ingest, "shop", ing::ChannelKind::Shopify, &[]).await;
    assert_eq!(submit_unsigned().await, tonic::Code::Unauthenticated);
    let update = |id: &str, patch: ing::Channel, paths: &[&str]| ing::UpdateChannelRequest {
        request_id: id.into(),
        channel: Some(ing::Channel {
            name: "channels/shop".into(),
            ..patch
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    // Unknown fields, a signed channel without its secret, an empty mapping:
    // every problem at once, nothing changed.
    let bad = ingest
        .update_channel(authed(
            T,
            update(
                "u-bad",
                ing::Channel {
                    sku_mappings: vec![ing::SkuMapping::default()],
                    ..Default::default()
                },
                &["kind", "webhook_secret", "sku_mappings"],
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        oms_runtime::status::fields(&bad),
        [
            "update_mask",
            "channel.webhook_secret",
            "channel.sku_mappings[0]"
        ]
    );
    // A channel SKU mapped twice (which item would a line name?), an item
    // SKU no item can have, node ids that are none, or twice.
    let map = |c: &str, s: &str| ing::SkuMapping {
        channel_sku: c.into(),
        sku: s.into(),
    };
    let bad = ingest
        .update_channel(authed(
            T,
            update(
                "u-bad-2",
                ing::Channel {
                    sku_mappings: vec![map("V1", "A"), map("V1", "B"), map("V2", "a b")],
                    default_node_ids: vec!["DC1".into(), "DC 2".into(), "DC1".into()],
                    ..Default::default()
                },
                &["sku_mappings", "default_node_ids"],
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        oms_runtime::status::fields(&bad),
        [
            "channel.sku_mappings[1].channel_sku",
            "channel.sku_mappings[2].sku",
            "channel.default_node_ids[1]",
            "channel.default_node_ids[2]"
        ]
    );
    let req = update(
        "u-1",
        ing::Channel {
            display_name: "Shop EU".into(),
            sku_mappings: vec![ing::SkuMapping {
                channel_sku: "SHOP-A".into(),
                sku: "A".into(),
            }],
            enabled: false,
            // Not in the mask: not changed.
            default_node_ids: vec!["DC9".into()],
            ..Default::default()
        },
        &["display_name", "sku_mappings", "enabled"],
    );
    let updated = ingest
        .update_channel(authed(T, req.clone()))
        .await
        .unwrap()
        .into_inner()
        .channel
        .unwrap();
    assert_eq!(updated.display_name, "Shop EU");
    assert_eq!(updated.sku_mappings.len(), 1);
    assert!(!updated.enabled && updated.has_webhook_secret);
    assert!(updated.default_node_ids.is_empty());
    // The same request again answers the same, changes nothing.
    let again = ingest
        .update_channel(authed(T, req))
        .await
        .unwrap()
        .into_inner()
        .channel
        .unwrap();
    assert_eq!(again, updated);
    let refused = ingest
        .submit_channel_payload(authed(
            T,
            webhook(
                "shop",
                "X-Shopify-Hmac-Sha256",
                sample("shopify-order.json"),
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(submit_unsigned().await, tonic::Code::FailedPrecondition);
    // Another tenant cannot touch it.
    let foreign = ingest
        .update_channel(authed(
            "globex",
            update("u-2", ing::Channel::default(), &["enabled"]),
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), tonic::Code::NotFound);
}

/// (item SKU, channel SKU, available) of a channel availability message.
fn figure(m: &ing::WatchChannelAvailabilityResponse) -> (String, String, i64) {
    (m.sku.clone(), m.channel_sku.clone(), m.available)
}

fn figures(expected: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    expected
        .iter()
        .map(|(s, c, a)| (s.to_string(), c.to_string(), *a))
        .collect()
}

/// A channel's feed (what a connector publishes to its shop) never shows
/// the units backorders wait for: with two orders waiting for A and the
/// stock feed's wake held off (as in the moment between a receipt and the
/// wake), a receipt of 3 shows 1. Before 2026-12-05 it showed 3 until the
/// backorders had them.
#[tokio::test]
async fn a_channel_never_shows_what_backorders_wait_for() {
    use crate::placement::{create, none_of_a, until_figure, wake_off};
    use oms_proto::inventory as inv;
    let (suite, mut stock) = none_of_a().await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(
        &mut ingest,
        "shop",
        ing::ChannelKind::Shopify,
        &[("SHOP-A", "A")],
    )
    .await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut events = suite.order_events(T).await;
    for id in ["waits-1", "waits-2"] {
        let o = create(&mut orders, id, &[("A", 1)]).await;
        until_state(&mut events, &o.name, OrderState::Backordered).await;
    }
    until_figure(&mut stock, |a| a.backordered == 2).await;
    let watch = ing::WatchChannelAvailabilityRequest {
        channel: "channels/shop".into(),
        after_cursor: String::new(),
    };
    let mut feed = (ingest.watch_channel_availability(authed(T, watch)).await)
        .unwrap()
        .into_inner();
    // The current figures (under the item's SKU and the listing's): 0.
    let mut now = vec![];
    while now.len() < 2 {
        now.push(figure(&feed.message().await.unwrap().unwrap()));
    }
    assert_eq!(now, figures(&[("A", "A", 0), ("A", "SHOP-A", 0)]));
    let mut db = suite.db.connect("orders").await;
    let wake_off = wake_off(&mut db).await;
    let receipt = inv::StockMovement {
        kind: inv::MovementKind::Receipt as i32,
        node_id: "DC1".into(),
        sku: "A".into(),
        quantity: 3,
        ..Default::default()
    };
    let req = inv::RecordMovementRequest {
        request_id: "receipt-a".into(),
        movement: Some(receipt),
    };
    stock.record_movement(authed(T, req)).await.unwrap();
    let shown = loop {
        let m = feed.message().await.unwrap().unwrap();
        if m.meta.as_ref().unwrap().request_id == "receipt-a" && m.channel_sku == "SHOP-A" {
            break figure(&m);
        }
    };
    assert_eq!(shown, figures(&[("A", "SHOP-A", 1)])[0]);
    wake_off.rollback().await.unwrap();
    until_figure(&mut stock, |a| {
        (a.reserved, a.backordered, a.available) == (2, 0, 1)
    })
    .await;
}

/// A sold-out listing says when it is back in stock: with one order
/// waiting for A and two units on their way, due in two days, the
/// channel's figure is 0 with that date.
#[tokio::test]
async fn a_sold_out_listing_says_when_it_is_back_in_stock() {
    use crate::placement::{create, none_of_a, on_their_way_to_a_store, until_figure};
    let (suite, mut stock) = none_of_a().await;
    let due = on_their_way_to_a_store(&mut stock, 2).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut events = suite.order_events(T).await;
    let o = create(&mut orders, "waits-1", &[("A", 1)]).await;
    until_state(&mut events, &o.name, OrderState::Backordered).await;
    until_figure(&mut stock, |a| a.backordered == 1).await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(
        &mut ingest,
        "shop",
        ing::ChannelKind::Shopify,
        &[("SHOP-A", "A")],
    )
    .await;
    let watch = ing::WatchChannelAvailabilityRequest {
        channel: "channels/shop".into(),
        after_cursor: String::new(),
    };
    let mut feed = (ingest.watch_channel_availability(authed(T, watch)).await)
        .unwrap()
        .into_inner();
    let listing = loop {
        let m = feed.message().await.unwrap().unwrap();
        if m.channel_sku == "SHOP-A" {
            break m;
        }
    };
    assert_eq!((listing.available, listing.restock_time), (0, Some(due)));
}

#[tokio::test]
async fn a_channel_watches_what_it_may_sell_in_its_own_skus() {
    use oms_proto::inventory as inv;
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[("A", 10), ("B", 5)]).await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    // Two listings of item A; item B is listed under its own SKU.
    channel(
        &mut ingest,
        "shop",
        ing::ChannelKind::Shopify,
        &[("SHOP-A", "A"), ("SHOP-A2", "A")],
    )
    .await;
    let buffer = |request_id: &str, units: i64| {
        authed(
            T,
            inv::SetChannelRuleRequest {
                request_id: request_id.into(),
                rule: Some(inv::ChannelRule {
                    channel: "channels/shop".into(),
                    node_ids: vec![],
                    buffer: Some(inv::channel_rule::Buffer::BufferQuantity(units)),
                }),
                remove: false,
            },
        )
    };
    stock.set_channel_rule(buffer("rule-1", 2)).await.unwrap();
    let watch = |after: &str| {
        authed(
            T,
            ing::WatchChannelAvailabilityRequest {
                channel: "channels/shop".into(),
                after_cursor: after.into(),
            },
        )
    };
    let mut feed = ingest
        .watch_channel_availability(watch(""))
        .await
        .unwrap()
        .into_inner();
    // The current figures first: the channel's pool less its buffer of 2.
    let mut current = vec![];
    let mut cursors = vec![];
    for _ in 0..4 {
        let m = feed.message().await.unwrap().unwrap();
        current.push(figure(&m));
        cursors.push(m.meta.unwrap().cursor);
    }
    // Only the snapshot's last message says where to resume: a watcher
    // cut off before it starts again.
    assert_eq!(cursors[..3], ["", "", ""]);
    assert!(!cursors[3].is_empty());
    assert_eq!(
        current,
        figures(&[
            ("A", "A", 8),
            ("A", "SHOP-A", 8),
            ("A", "SHOP-A2", 8),
            ("B", "B", 3)
        ])
    );

    // A receipt of B: its new figure follows (after, possibly, repeats of
    // figures the first ones already showed).
    let receipt = inv::StockMovement {
        kind: inv::MovementKind::Receipt as i32,
        node_id: "DC1".into(),
        sku: "B".into(),
        quantity: 5,
        ..Default::default()
    };
    stock
        .record_movement(authed(
            T,
            inv::RecordMovementRequest {
                request_id: "receipt-b".into(),
                movement: Some(receipt),
            },
        ))
        .await
        .unwrap();
    let cursor = loop {
        let m = feed.message().await.unwrap().unwrap();
        let f = figure(&m);
        let meta = m.meta.unwrap();
        if meta.request_id == "receipt-b" {
            assert_eq!(f, figures(&[("B", "B", 8)])[0]);
            break meta.cursor;
        }
        assert!(current.contains(&f) || f.2 == 8, "{f:?}");
    };

    // A new listing of B, then a smaller buffer: every figure of the
    // channel changes, under the names the channel uses now.
    let update = ing::UpdateChannelRequest {
        request_id: "map-b".into(),
        channel: Some(ing::Channel {
            name: "channels/shop".into(),
            sku_mappings: ["SHOP-A", "SHOP-A2", "SHOP-B"]
                .iter()
                .map(|c| ing::SkuMapping {
                    channel_sku: c.to_string(),
                    sku: c[5..6].to_string(),
                })
                .collect(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["sku_mappings".into()],
        }),
    };
    ingest.update_channel(authed(T, update)).await.unwrap();
    stock.set_channel_rule(buffer("rule-2", 1)).await.unwrap();
    let after_rule = figures(&[
        ("A", "A", 9),
        ("A", "SHOP-A", 9),
        ("A", "SHOP-A2", 9),
        ("B", "B", 9),
        ("B", "SHOP-B", 9),
    ]);
    let mut seen = vec![];
    let mut metas = vec![];
    for _ in 0..5 {
        let m = feed.message().await.unwrap().unwrap();
        seen.push(figure(&m));
        metas.push(m.meta.unwrap());
    }
    assert_eq!(seen, after_rule);
    // Cut off in the middle of that change: resuming after the message
    // seen last repeats the change (same ids), it does not miss the rest.
    let mut midway = ingest
        .watch_channel_availability(watch(&metas[1].cursor))
        .await
        .unwrap()
        .into_inner();
    let mut repeated = vec![];
    for meta in &metas {
        let m = midway.message().await.unwrap().unwrap();
        assert_eq!(m.meta.as_ref().unwrap().event_id, meta.event_id);
        repeated.push(figure(&m));
    }
    assert_eq!(repeated, after_rule);

    // Resumed from a cursor: exactly what came after it, each message with
    // an id of its own.
    let mut resumed = ingest
        .watch_channel_availability(watch(&cursor))
        .await
        .unwrap()
        .into_inner();
    let mut ids = std::collections::HashSet::new();
    let mut again = vec![];
    for _ in 0..5 {
        let m = resumed.message().await.unwrap().unwrap();
        ids.insert(m.meta.as_ref().unwrap().event_id.clone());
        again.push(figure(&m));
    }
    assert_eq!(again, after_rule);
    assert_eq!(ids.len(), 5);

    // Its node disabled, the channel has nothing to sell and hears so;
    // enabled again, the figures come back.
    for (request_id, enabled, units) in [("dc1-off", false, 0), ("dc1-on", true, 9)] {
        let update = inv::UpdateNodeRequest {
            request_id: request_id.into(),
            node: Some(inv::Node {
                name: "nodes/DC1".into(),
                enabled,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["enabled".into()],
            }),
        };
        stock.update_node(authed(T, update)).await.unwrap();
        let mut seen = vec![];
        for _ in 0..after_rule.len() {
            seen.push(figure(&feed.message().await.unwrap().unwrap()));
        }
        let want: Vec<_> = after_rule
            .iter()
            .map(|(sku, listed, _)| (sku.clone(), listed.clone(), units))
            .collect();
        assert_eq!(seen, want, "{request_id}");
    }

    // A disabled channel sells nothing: its watchers hear so at the next
    // change, and no new watch starts. (Named by its id: its name may be
    // left empty in an update.)
    let disable = ing::UpdateChannelRequest {
        request_id: "disable".into(),
        channel: Some(ing::Channel {
            channel_id: "shop".into(),
            enabled: false,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["enabled".into()],
        }),
    };
    ingest.update_channel(authed(T, disable)).await.unwrap();
    stock
        .record_movement(authed(
            T,
            inv::RecordMovementRequest {
                request_id: "receipt-a".into(),
                movement: Some(inv::StockMovement {
                    kind: inv::MovementKind::Receipt as i32,
                    node_id: "DC1".into(),
                    sku: "A".into(),
                    quantity: 1,
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    let ended = loop {
        match feed.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the feed ended without saying why"),
            Err(st) => break st,
        }
    };
    assert_eq!(oms_runtime::status::reason(&ended), "CHANNEL_DISABLED");
    let refused = ingest
        .watch_channel_availability(watch(""))
        .await
        .unwrap_err();
    assert_eq!(oms_runtime::status::reason(&refused), "CHANNEL_DISABLED");

    // Bad input and other tenants' channels.
    let bad = ingest
        .watch_channel_availability(authed(
            T,
            ing::WatchChannelAvailabilityRequest {
                channel: "shop".into(),
                after_cursor: "not-a-cursor".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        oms_runtime::status::fields(&bad),
        ["channel", "after_cursor"]
    );
    let foreign = ingest
        .watch_channel_availability(authed("globex", watch("").into_inner()))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn versions_of_a_new_channel_order_arriving_at_once_become_one_order_and_its_updates() {
    let suite = Suite::start().await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(&mut ingest, "pos", ing::ChannelKind::Pos, &[]).await;
    // Eight versions of one channel order nobody has seen yet, each with
    // its own address, sent together: all of them look it up before any
    // is recorded, so all of them try to create it.
    let version = |i: usize| {
        pos_submission(
            &format!("v-{i}"),
            "till-77",
            "A",
            &format!("{i} Main St"),
            "Lisbon",
        )
    };
    let answers = futures::future::join_all((0..8).map(|i| {
        let mut c = ingest.clone();
        async move { c.submit_order(authed(T, version(i))).await }
    }))
    .await;
    let answers: Vec<ing::SubmitOrderResponse> = answers
        .into_iter()
        .map(|a| a.expect("every version is accepted").into_inner())
        .collect();
    let created = answers
        .iter()
        .filter(|a| a.outcome == ing::SubmissionOutcome::Created as i32)
        .count();
    let updated = answers
        .iter()
        .filter(|a| a.outcome == ing::SubmissionOutcome::Updated as i32)
        .count();
    assert_eq!((created, updated), (1, 7), "{answers:?}");
    assert!(answers.iter().all(|a| a.order == answers[0].order));
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let found = orders
        .list_orders(authed(
            T,
            ord::ListOrdersRequest {
                channel_order_id: "till-77".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, answers[0].order);
}

/// Submissions that ingest sends to orders in one BatchCreateOrders each
/// keep their own trace: the OrderCreated event of each order carries the
/// trace id its submission came with (one order, one trace).
#[tokio::test]
async fn each_submitted_order_stays_in_its_submissions_trace() {
    let suite = Suite::start().await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(&mut ingest, "pos", ing::ChannelKind::Pos, &[]).await;
    let trace_id = |i: usize| format!("{:032x}", 0xabc0_0000_u64 + i as u64);
    let submit = |i: usize| {
        let mut req = authed(
            T,
            pos_submission(
                &format!("traced-{i}"),
                &format!("till-t{i}"),
                "A",
                "1 Main St",
                "Lisbon",
            ),
        );
        req.metadata_mut().insert(
            "traceparent",
            format!("00-{}-00f067aa0ba902b7-01", trace_id(i))
                .parse()
                .unwrap(),
        );
        req
    };
    // Sent together, so that they share the calls to orders.
    let answers = futures::future::join_all((0..16).map(|i| {
        let mut c = ingest.clone();
        let req = submit(i);
        async move { c.submit_order(req).await.unwrap().into_inner() }
    }))
    .await;
    let mut feed = suite.order_events(T).await;
    let mut trace_of: HashMap<String, String> = HashMap::new();
    while trace_of.len() < answers.len() {
        let e = next_order_event(&mut feed).await;
        if let Some(ord::order_event::Kind::Created(_)) = e.kind {
            let meta = e.meta.unwrap();
            trace_of.insert(meta.subject, meta.traceparent);
        }
    }
    for (i, a) in answers.iter().enumerate() {
        let tp = &trace_of[&a.order];
        assert!(tp.contains(&trace_id(i)), "order {i}: {tp}");
    }
}

/// A Shopify order refunded or edited in part (API 2026-07: each line's
/// `current_quantity`, the `current_*` totals) becomes an order of what is
/// left; a later version that takes lines away cancels their units on
/// the order, and an earlier one sent again brings none of them back.
#[tokio::test]
async fn a_shopify_order_refunded_in_part_ships_only_what_is_left() {
    let suite = Suite::start().await;
    // Items without stock: the orders wait, backordered, where the
    // channel's changes still apply.
    let mut stock = suite.stock(T, &[]).await;
    for sku in ["IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK"] {
        let item = oms_proto::inventory::Item {
            sku: sku.into(),
            ..Default::default()
        };
        oms_e2e::create_item(&mut stock, T, item).await;
    }
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(&mut ingest, "shop", ing::ChannelKind::Shopify, &[]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let mut submit = async |body: Vec<u8>| {
        let hook = webhook("shop", "X-Shopify-Hmac-Sha256", body);
        let r = ingest.submit_channel_payload(authed(T, hook)).await;
        r.unwrap().into_inner()
    };
    // What is left of each line, and the totals, as the order has them.
    let left = |o: &ord::Order| -> Vec<(String, i64, i64)> {
        let open = |l: &ord::OrderLine| (l.sku.clone(), l.quantity, l.quantity_cancelled);
        o.lines.iter().map(open).collect()
    };
    let total = |o: &ord::Order| {
        o.totals
            .as_ref()
            .unwrap()
            .total
            .as_ref()
            .unwrap()
            .amount_minor
    };

    // The sample: black refunded, green edited away, red left.
    let sample_2026: serde_json::Value =
        serde_json::from_slice(&sample("shopify-order-2026-07.json")).unwrap();
    let first = submit(sample_2026.to_string().into_bytes()).await;
    assert_eq!(first.outcome, ing::SubmissionOutcome::Created as i32);
    let o = order_of(&mut orders, &first.order).await;
    assert_eq!(left(&o), [("IPOD2008RED".to_string(), 1, 0)]);
    assert_eq!(total(&o), 19965, "current_total_price");
    let discount = o.lines[0].discount.as_ref().unwrap().amount_minor;
    assert_eq!(discount, 333, "its discount_allocations");

    // The same order as placed, before its refund and edit: another
    // channel order id, all three lines.
    let mut placed = sample_2026.clone();
    placed["id"] = 450789470.into();
    for li in placed["line_items"].as_array_mut().unwrap() {
        li["current_quantity"] = 1.into();
    }
    for name in [
        "subtotal_price",
        "total_tax",
        "total_discounts",
        "total_price",
    ] {
        placed[format!("current_{name}")] = placed[name].clone();
    }
    let created = submit(placed.to_string().into_bytes()).await;
    let o = order_of(&mut orders, &created.order).await;
    assert_eq!(o.lines.len(), 3);
    assert_eq!(total(&o), 59894);
    until_state(&mut feed, &created.order, OrderState::Backordered).await;
    // Then the refund and the edit reach the OMS: their units are
    // cancelled on the order, and the history says why.
    let mut refunded = sample_2026.clone();
    refunded["id"] = placed["id"].clone();
    let update = submit(refunded.to_string().into_bytes()).await;
    assert_eq!(
        (update.outcome, update.order.as_str()),
        (
            ing::SubmissionOutcome::Updated as i32,
            created.order.as_str()
        )
    );
    let o = order_of(&mut orders, &created.order).await;
    let expect = [
        ("IPOD2008GREEN".to_string(), 1, 1),
        ("IPOD2008RED".to_string(), 1, 0),
        ("IPOD2008BLACK".to_string(), 1, 1),
    ];
    assert_eq!(left(&o), expect);
    assert_eq!(o.state, OrderState::Backordered as i32);
    // The version before the refund, delivered late: nothing comes back.
    let late = submit(placed.to_string().into_bytes()).await;
    assert_eq!(late.outcome, ing::SubmissionOutcome::Updated as i32);
    let o = order_of(&mut orders, &created.order).await;
    assert_eq!(left(&o), expect);
    let history = orders
        .list_order_history(authed(
            T,
            ord::ListOrderHistoryRequest {
                name: created.order.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .changes;
    let told = history
        .iter()
        .filter(|c| c.reason.contains("changed in the channel"));
    assert_eq!(told.count(), 1, "{history:?}");
    // The versions never changed the address or customer: no update of
    // nothing in the history.
    let updates = history
        .iter()
        .filter(|c| c.reason == "updated in the channel");
    assert_eq!(updates.count(), 0, "{history:?}");
}

/// An order of Amazon's Orders API v2026-01-01 (`getOrder`: items,
/// recipient, proceeds and fulfillment in one answer) becomes an order;
/// a later answer where the buyer cancelled it cancels it.
#[tokio::test]
async fn an_amazon_order_of_the_2026_orders_api_becomes_an_order() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[]).await;
    let item = oms_proto::inventory::Item {
        sku: "ECHO-DOT-4-BR-PRETO".into(),
        ..Default::default()
    };
    oms_e2e::create_item(&mut stock, T, item).await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(&mut ingest, "amazon", ing::ChannelKind::AmazonSpApi, &[]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let mut submit = async |request_id: &str, body: &serde_json::Value| {
        let req = unsigned("amazon", request_id, body);
        ingest
            .submit_channel_payload(authed(T, req))
            .await
            .unwrap()
            .into_inner()
    };
    let sample: serde_json::Value =
        serde_json::from_slice(&sample("amazon-sp-api-2026-01-01-getOrder.json")).unwrap();
    let created = submit("amazon-2026-1", &sample).await;
    assert_eq!(created.outcome, ing::SubmissionOutcome::Created as i32);
    let o = order_of(&mut orders, &created.order).await;
    assert_eq!(o.channel_order_id, "171-9876543-2109876");
    let l = &o.lines[0];
    let price = l.unit_price.as_ref().unwrap();
    assert_eq!(
        (
            l.line_id.as_str(),
            l.sku.as_str(),
            l.quantity,
            price.amount_minor,
            price.currency_code.as_str()
        ),
        ("17198765432109", "ECHO-DOT-4-BR-PRETO", 1, 29990, "BRL")
    );
    let to = o.ship_to.unwrap();
    assert_eq!(place(&to), ("São Paulo", "SP", "01234-567", "BR"));
    assert_eq!(to.lines, ["Rua das Flores, 123", "Apartamento 45"]);
    assert_eq!(o.customer.unwrap().name, "Maria Silva Santos");
    assert_eq!(o.totals.unwrap().total.unwrap().amount_minor, 29990);
    assert_eq!(
        o.service_level,
        oms_proto::common::ServiceLevel::Standard as i32
    );
    let promise = o.promise_time.unwrap();
    assert_eq!(
        oms_runtime::time::from_timestamp(&promise)
            .unwrap()
            .to_rfc3339(),
        "2024-12-31T23:59:59+00:00"
    );
    until_state(&mut feed, &created.order, OrderState::Backordered).await;

    // The buyer cancels: the next answer has the order cancelled and
    // nothing left to ship of its item.
    let mut cancelled = sample.clone();
    cancelled["order"]["fulfillment"]["fulfillmentStatus"] = "CANCELLED".into();
    cancelled["order"]["orderItems"][0]["fulfillment"]["quantityUnfulfilled"] = 0.into();
    let update = submit("amazon-2026-2", &cancelled).await;
    assert_eq!(
        (update.outcome, update.order.as_str()),
        (
            ing::SubmissionOutcome::Updated as i32,
            created.order.as_str()
        )
    );
    let o = order_of(&mut orders, &created.order).await;
    assert_eq!(o.state, OrderState::Cancelled as i32);
}

/// A channel order not paid yet (WooCommerce `on-hold`: awaiting a bank
/// transfer) is created on a payment hold: it reserves its stock, so no
/// other channel sells it meanwhile, and goes no further; the paid version
/// (`processing`) releases it and it is routed.
#[tokio::test]
async fn an_unpaid_channel_order_waits_on_hold_until_paid() {
    let suite = Suite::start().await;
    stocked(&suite, &["WOO-SINGLE", "Bar3"]).await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(
        &mut ingest,
        "woo",
        ing::ChannelKind::Woocommerce,
        &[("woo-93", "WOO-SINGLE")],
    )
    .await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut feed = suite.order_events(T).await;
    let paid: serde_json::Value =
        serde_json::from_slice(&sample("woocommerce-order.json")).unwrap();
    let mut unpaid = paid.clone();
    unpaid["status"] = "on-hold".into();
    let mut submit = async |body: &serde_json::Value| {
        let hook = webhook(
            "woo",
            "X-WC-Webhook-Signature",
            body.to_string().into_bytes(),
        );
        let r = ingest.submit_channel_payload(authed(T, hook)).await;
        r.unwrap().into_inner()
    };
    let created = submit(&unpaid).await;
    assert_eq!(created.outcome, ing::SubmissionOutcome::Created as i32);
    let o = order_of(&mut orders, &created.order).await;
    assert_eq!(o.state, OrderState::OnHold as i32);
    let holds: Vec<(i32, &str)> = o
        .holds
        .iter()
        .map(|h| (h.r#type, h.reason.as_str()))
        .collect();
    assert_eq!(
        holds,
        [(
            ord::HoldType::Payment as i32,
            "awaiting payment in WooCommerce (status on-hold)"
        )]
    );
    // Its stock is reserved while it waits, and it stays held.
    let reserved = loop {
        let ev = next_order_event(&mut feed).await;
        let updated = matches!(ev.kind, Some(ord::order_event::Kind::Updated(_)));
        let o = ev.order.unwrap_or_default();
        if o.name == created.order && updated {
            break o;
        }
    };
    assert_eq!(reserved.state, OrderState::OnHold as i32);
    let mut stock = oms_proto::inventory::inventory_service_client::InventoryServiceClient::new(
        suite.channel(Service::Inventory),
    );
    let req = oms_proto::inventory::ListReservationsRequest {
        reference: created.order.clone(),
        ..Default::default()
    };
    let states = async |stock: &mut oms_e2e::Inventory| {
        let held = stock.list_reservations(authed(T, req.clone())).await;
        let held = held.unwrap().into_inner().reservations;
        held.iter().map(|r| r.state).collect::<Vec<_>>()
    };
    let active = oms_proto::inventory::ReservationState::Active as i32;
    assert_eq!(states(&mut stock).await, [active]);
    // Paid: the hold goes and the order is routed from its reservation.
    let update = submit(&paid).await;
    assert_eq!(update.outcome, ing::SubmissionOutcome::Updated as i32);
    until_state(&mut feed, &created.order, OrderState::Routed).await;
    let o = order_of(&mut orders, &created.order).await;
    assert!(o.holds.is_empty(), "{:?}", o.holds);
    assert_eq!(states(&mut stock).await.len(), 1, "the same reservation");
}

/// A Mercado Libre order (the published excerpt) with its shipment, as a
/// connector fetches them, becomes an order shipped to the buyer's address;
/// a listing without a seller SKU is found by the channel's mapping; one
/// not paid yet waits on a payment hold.
#[tokio::test]
async fn a_mercado_libre_order_and_its_shipment_become_an_order() {
    let suite = Suite::start().await;
    let mut stock = suite.stock(T, &[]).await;
    let item = oms_proto::inventory::Item {
        sku: "GALAXY".into(),
        ..Default::default()
    };
    oms_e2e::create_item(&mut stock, T, item).await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    let mapping = [("MLB12345678", "GALAXY")];
    channel(
        &mut ingest,
        "meli",
        ing::ChannelKind::MercadoLibre,
        &mapping,
    )
    .await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut submit = async |request_id: &str, body: &serde_json::Value| {
        let req = unsigned("meli", request_id, body);
        ingest.submit_channel_payload(authed(T, req)).await
    };
    let json = |name: &str| serde_json::from_slice::<serde_json::Value>(&sample(name)).unwrap();
    let order = json("mercadolibre-order-excerpt.json");
    let body = serde_json::json!({
        "order": order,
        "shipment": json("mercadolibre-shipment.json"),
    });
    let created = submit("meli-1", &body).await.unwrap().into_inner();
    assert_eq!(created.outcome, ing::SubmissionOutcome::Created as i32);
    let o = order_of(&mut orders, &created.order).await;
    assert_eq!(o.channel_order_id, "2000003508419013");
    let l = &o.lines[0];
    let price = l.unit_price.as_ref().unwrap().amount_minor;
    assert_eq!(
        (l.sku.as_str(), l.channel_sku.as_str(), l.quantity, price),
        ("GALAXY", "MLB12345678", 1, 49900)
    );
    assert_eq!(o.totals.unwrap().total.unwrap().amount_minor, 49900);
    assert_eq!(o.customer.unwrap().name, "Comprador de testes da Silva");
    let to = o.ship_to.unwrap();
    assert_eq!(place(&to), ("São Paulo", "SP", "01452000", "BR"));
    assert_eq!(to.lines, ["Avenida Brigadeiro Faria Lima 1000", "Apto 12"]);
    assert!(to.geo.is_some());
    assert!(o.holds.is_empty(), "paid: {:?}", o.holds);

    // Another order, not paid yet: on a payment hold.
    let mut unpaid = body.clone();
    unpaid["order"]["id"] = 2000003508419014_i64.into();
    unpaid["order"]["status"] = "payment_in_process".into();
    let held = submit("meli-2", &unpaid).await.unwrap().into_inner();
    let o = order_of(&mut orders, &held.order).await;
    assert_eq!(o.state, OrderState::OnHold as i32);
    assert_eq!(o.holds[0].r#type, ord::HoldType::Payment as i32);
    // The order alone has no address to ship to: orders says so.
    let mut alone = order.clone();
    alone["id"] = 2000003508419015_i64.into();
    let err = submit("meli-3", &alone).await.unwrap_err();
    let fields = oms_runtime::status::fields(&err);
    assert!(
        fields.iter().any(|f| f.starts_with("order.ship_to")),
        "{err:?}"
    );
}

/// A canonical order says nothing of its payment: a payment hold its sender
/// placed stays through a later version (only channel payloads that say
/// they are paid release ingest's).
#[tokio::test]
async fn a_canonical_order_keeps_the_payment_hold_its_sender_placed() {
    let suite = Suite::start().await;
    stocked(&suite, &["A"]).await;
    let mut ingest = IngestServiceClient::new(suite.channel(Service::Ingest));
    channel(&mut ingest, "pos", ing::ChannelKind::Pos, &[]).await;
    let mut orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let mut submit = async |request_id: &str, city: &str| {
        let mut s = pos_submission(request_id, "till-9", "A", "1 Main St", city);
        s.order.as_mut().unwrap().holds = vec![ord::Hold {
            r#type: ord::HoldType::Payment as i32,
            reason: "card terminal offline".into(),
            ..Default::default()
        }];
        ingest
            .submit_order(authed(T, s))
            .await
            .unwrap()
            .into_inner()
    };
    let first = submit("pos-1", "Lisbon").await;
    let later = submit("pos-2", "Porto").await;
    assert_eq!(later.outcome, ing::SubmissionOutcome::Updated as i32);
    let o = order_of(&mut orders, &first.order).await;
    assert_eq!(o.ship_to.unwrap().city, "Porto");
    let holds: Vec<&str> = o.holds.iter().map(|h| h.reason.as_str()).collect();
    assert_eq!(holds, ["card terminal offline"]);
}
