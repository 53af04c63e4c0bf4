use super::OrderState;
use chrono::{DateTime, Utc};
use oms_kernel::{PageSize, PageToken, Violations};
use oms_proto::orders::{ListOrdersRequest, OrderState as ProtoState};

/// Keyset position of the last order on a page: its id. Order ids are
/// UUIDv7, taken when the order is created, so newest first is highest id
/// first.
pub type ListCursor = uuid::Uuid;

/// A parsed ListOrders request.
#[derive(Debug, Clone)]
pub struct OrderFilter {
    pub states: Vec<OrderState>,
    pub channel: Option<String>,
    pub node_id: Option<String>,
    pub channel_order_id: Option<String>,
    pub create_time_from: Option<DateTime<Utc>>,
    pub create_time_to: Option<DateTime<Utc>>,
    pub sla_at_risk: bool,
    pub page_size: PageSize,
    pub after: Option<ListCursor>,
    /// Fingerprint of the filters, bound into page tokens.
    pub filter_hash: u64,
}

impl OrderFilter {
    pub fn parse(req: &ListOrdersRequest) -> Result<OrderFilter, Violations> {
        let mut v = Violations::new();
        let page_size = v.check("page_size", PageSize::parse(req.page_size, 50, 500));
        let mut states = Vec::new();
        for (i, s) in req.states.iter().enumerate() {
            match ProtoState::try_from(*s)
                .ok()
                .and_then(OrderState::from_proto)
            {
                Some(st) => states.push(st),
                None => v.add(format!("states[{i}]"), "unknown order state"),
            }
        }
        if !req.channel.is_empty() {
            v.check("channel", oms_kernel::parse_name(&req.channel, "channels"));
        }
        // A node no node can be is a mistake, not an empty list.
        if !req.node_id.is_empty() {
            v.check("node_id", oms_kernel::check_id(&req.node_id));
        }
        let (from, to) = oms_runtime::time::range(
            &mut v,
            "create_time",
            &req.create_time_from,
            &req.create_time_to,
        );
        let filter_hash = oms_kernel::fingerprint(&ListOrdersRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let after = v
            .check(
                "page_token",
                PageToken::<ListCursor>::decode(&req.page_token, filter_hash),
            )
            .flatten();
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        v.into_result(OrderFilter {
            states,
            channel: non_empty(&req.channel),
            node_id: non_empty(&req.node_id),
            channel_order_id: non_empty(&req.channel_order_id),
            create_time_from: from,
            create_time_to: to,
            sla_at_risk: req.sla_at_risk,
            page_size: page_size.unwrap_or(PageSize(50)),
            after,
            filter_hash,
        })
    }

    pub fn next_page_token(&self, last: ListCursor) -> String {
        PageToken::encode(last, self.filter_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_filters() {
        let req = ListOrdersRequest {
            states: vec![ProtoState::Created as i32],
            ..Default::default()
        };
        let f = OrderFilter::parse(&req).unwrap();
        let token = f.next_page_token(uuid::Uuid::now_v7());
        let same = ListOrdersRequest {
            page_token: token.clone(),
            page_size: 10,
            ..req.clone()
        };
        assert!(OrderFilter::parse(&same).unwrap().after.is_some());
        let other = ListOrdersRequest {
            page_token: token,
            states: vec![ProtoState::Shipped as i32],
            ..Default::default()
        };
        let err = OrderFilter::parse(&other).unwrap_err();
        assert_eq!(err.0[0].field, "page_token");
    }

    #[test]
    fn bad_filters_are_named() {
        let req = ListOrdersRequest {
            page_size: -1,
            states: vec![99],
            channel: "shopify".into(),
            node_id: "DC 1".into(),
            ..Default::default()
        };
        let err = OrderFilter::parse(&req).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["page_size", "states[0]", "channel", "node_id"]);
    }
}
