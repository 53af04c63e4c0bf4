use oms_proto::orders::OrderState as Proto;

/// The lifecycle of an order (documented on `oms.orders.v1.OrderState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderState {
    Created,
    OnHold,
    Backordered,
    Reserved,
    Routed,
    Released,
    PartiallyShipped,
    Shipped,
    Delivered,
    Cancelled,
}

use OrderState::*;

impl OrderState {
    pub const ALL: [OrderState; 10] = [
        Created,
        OnHold,
        Backordered,
        Reserved,
        Routed,
        Released,
        PartiallyShipped,
        Shipped,
        Delivered,
        Cancelled,
    ];

    /// Whether the order may move from `self` to `to`. A hold can stop any
    /// order not yet released; releasing the hold returns it to the state
    /// it was held in (the saga remembers which), so any pre-release state
    /// is reachable from OnHold.
    pub fn can_move_to(self, to: OrderState) -> bool {
        matches!(
            (self, to),
            (Created | Backordered | Reserved | Routed, OnHold)
                | (OnHold, Created | Backordered | Reserved | Routed)
                | (Created, Reserved | Backordered)
                | (Backordered, Reserved)
                | (Reserved, Routed)
                // Its reservation expired unconfirmed: placed again.
                | (Reserved, Created)
                | (Routed, Released)
                | (Released, PartiallyShipped | Shipped)
                | (PartiallyShipped, Shipped)
                | (Shipped, Delivered)
                | (
                    Created | OnHold | Backordered | Reserved | Routed,
                    Cancelled
                )
                // A cancel asked after release, once the nodes gave up
                // everything (see `lifecycle::request_cancel`).
                | (Released, Cancelled)
        )
    }

    /// Before release: the order is the OMS's alone, a cancel is immediate.
    pub fn before_release(self) -> bool {
        matches!(self, Created | OnHold | Backordered | Reserved | Routed)
    }

    /// Open orders still need work.
    pub fn is_open(self) -> bool {
        !matches!(self, Delivered | Cancelled)
    }

    /// Column value in the `orders` table.
    pub fn as_db(self) -> &'static str {
        match self {
            Created => "created",
            OnHold => "on_hold",
            Backordered => "backordered",
            Reserved => "reserved",
            Routed => "routed",
            Released => "released",
            PartiallyShipped => "partially_shipped",
            Shipped => "shipped",
            Delivered => "delivered",
            Cancelled => "cancelled",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_db() == s)
    }

    pub fn to_proto(self) -> Proto {
        match self {
            Created => Proto::Created,
            OnHold => Proto::OnHold,
            Backordered => Proto::Backordered,
            Reserved => Proto::Reserved,
            Routed => Proto::Routed,
            Released => Proto::Released,
            PartiallyShipped => Proto::PartiallyShipped,
            Shipped => Proto::Shipped,
            Delivered => Proto::Delivered,
            Cancelled => Proto::Cancelled,
        }
    }

    pub fn from_proto(p: Proto) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.to_proto() == p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path_is_legal() {
        let path = [
            Created,
            Reserved,
            Routed,
            Released,
            PartiallyShipped,
            Shipped,
            Delivered,
        ];
        for w in path.windows(2) {
            assert!(w[0].can_move_to(w[1]), "{:?} -> {:?}", w[0], w[1]);
        }
    }

    #[test]
    fn illegal_moves_are_refused() {
        assert!(!Created.can_move_to(Shipped));
        assert!(
            !PartiallyShipped.can_move_to(Cancelled) && !Shipped.can_move_to(Cancelled),
            "shipped units stay shipped"
        );
        assert!(
            !Released.before_release(),
            "released work is cancelled through fulfillment"
        );
        assert!(!Delivered.can_move_to(Created));
        assert!(!Cancelled.can_move_to(Reserved));
        assert!(!Shipped.can_move_to(OnHold));
        for s in OrderState::ALL {
            assert!(!s.can_move_to(s), "{s:?} -> itself");
        }
    }

    #[test]
    fn final_states_have_no_way_out() {
        for to in OrderState::ALL {
            assert!(!Cancelled.can_move_to(to));
            assert!(!Delivered.can_move_to(to));
        }
    }

    #[test]
    fn db_and_proto_round_trip() {
        for s in OrderState::ALL {
            assert_eq!(OrderState::from_db(s.as_db()), Some(s));
            assert_eq!(OrderState::from_proto(s.to_proto()), Some(s));
        }
    }
}
