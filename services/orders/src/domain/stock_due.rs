//! When the stock a waiting order needs is due: what is available now
//! goes first to the orders before it, then to it; then what is on the
//! way, by expected arrival.
use oms_proto::inventory::Arrival;

#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    /// What is available now covers it.
    Now,
    /// The arrival bringing its last unit is expected then.
    At(prost_types::Timestamp),
    /// Nothing on the way with a time said reaches it.
    Unknown,
}

/// `available`: units available now to orders' reservations (before its
/// own backorders' demand, after other sources'); `arrivals`:
/// units on the way, soonest first, those of no time said last; `ahead`:
/// units the orders before it ask for; `units`: its own.
pub fn due(available: i64, arrivals: &[Arrival], ahead: i64, units: i64) -> Due {
    let mut missing = ahead + units - available.max(0);
    if missing <= 0 {
        return Due::Now;
    }
    for a in arrivals {
        missing -= a.units;
        if missing <= 0 {
            return match a.expected_arrival_time {
                Some(t) => Due::At(t),
                None => Due::Unknown,
            };
        }
    }
    Due::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, units: i64) -> Arrival {
        Arrival {
            expected_arrival_time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            units,
        }
    }

    #[test]
    fn orders_ahead_take_theirs_first() {
        let coming = [
            at(100, 2),
            at(200, 3),
            Arrival {
                expected_arrival_time: None,
                units: 10,
            },
        ];
        let t = |s| {
            Due::At(prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        assert_eq!(due(3, &coming, 2, 1), Due::Now);
        assert_eq!(
            due(3, &coming, 2, 2),
            t(100),
            "one missing: the first arrival"
        );
        assert_eq!(due(3, &coming, 4, 1), t(100));
        assert_eq!(
            due(3, &coming, 4, 2),
            t(200),
            "the first brings 2 of the 3 missing"
        );
        assert_eq!(
            due(0, &coming, 5, 1),
            Due::Unknown,
            "only what came without a time"
        );
        assert_eq!(due(-2, &coming, 0, 2), t(100), "over-held counts as none");
        assert_eq!(due(0, &[], 0, 1), Due::Unknown);
    }
}
