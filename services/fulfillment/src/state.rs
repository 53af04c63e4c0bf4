//! The states of a fulfillment order and the moves between them.
use chrono::{DateTime, Utc};
use oms_proto::fulfillment::{FulfillmentOrder, FulfillmentState as S};
use oms_runtime::time::to_timestamp;

/// Marks a change of `fo` made at `now`: every change goes through here,
/// so that `version` counts them (readers order reports by it).
pub fn touch(fo: &mut FulfillmentOrder, now: DateTime<Utc>) {
    fo.update_time = Some(to_timestamp(now));
    fo.version += 1;
}

pub fn to_db(s: S) -> &'static str {
    match s {
        S::PendingRelease | S::Unspecified => "pending_release",
        S::Released => "released",
        S::Accepted => "accepted",
        S::Picking => "picking",
        S::Packed => "packed",
        S::Shipped => "shipped",
        S::Delivered => "delivered",
        S::Rejected => "rejected",
        S::Cancelled => "cancelled",
    }
}

/// Nothing moves a fulfillment order out of these.
pub fn is_final(s: S) -> bool {
    matches!(s, S::Delivered | S::Rejected | S::Cancelled)
}

/// Position on the way to the customer; a WMS may skip steps (report
/// packed without picking) but never go back.
fn progress(s: S) -> u8 {
    match s {
        S::Unspecified | S::PendingRelease => 0,
        S::Released => 1,
        S::Accepted => 2,
        S::Picking => 3,
        S::Packed => 4,
        S::Shipped => 5,
        S::Delivered => 6,
        S::Rejected | S::Cancelled => 7,
    }
}

/// What a WMS progress report (accepted .. delivered) does from `from`:
/// Ok(Some(to)) moves, Ok(None) is a repeat of where it already is, Err
/// says why it cannot happen.
pub fn advance(from: S, to: S) -> Result<Option<S>, String> {
    if from == S::PendingRelease {
        return Err("the fulfillment order has not been released".into());
    }
    if is_final(from) {
        return Err(format!("the fulfillment order is already {}", name(from)));
    }
    match progress(to).cmp(&progress(from)) {
        std::cmp::Ordering::Greater => Ok(Some(to)),
        std::cmp::Ordering::Equal => Ok(None),
        std::cmp::Ordering::Less => Err(format!(
            "the fulfillment order is already {}, past {}",
            name(from),
            name(to)
        )),
    }
}

/// A node may still refuse or short-pick work it has not shipped.
pub fn can_give_back(s: S) -> bool {
    matches!(s, S::Released | S::Accepted | S::Picking | S::Packed)
}

/// A short state name for messages ("packed").
pub fn name(s: S) -> &'static str {
    to_db(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_its_own_database_name() {
        let all = [
            S::PendingRelease,
            S::Released,
            S::Accepted,
            S::Picking,
            S::Packed,
            S::Shipped,
            S::Delivered,
            S::Rejected,
            S::Cancelled,
        ];
        let mut names: Vec<&str> = all.iter().map(|s| to_db(*s)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }

    #[test]
    fn progress_only_goes_forward() {
        assert_eq!(advance(S::Released, S::Accepted), Ok(Some(S::Accepted)));
        assert_eq!(advance(S::Accepted, S::Packed), Ok(Some(S::Packed)));
        assert_eq!(advance(S::Packed, S::Packed), Ok(None));
        assert!(advance(S::Shipped, S::Picking).is_err());
        assert!(advance(S::PendingRelease, S::Accepted).is_err());
        assert!(advance(S::Cancelled, S::Shipped).is_err());
        assert!(advance(S::Delivered, S::Delivered).is_err());
    }
}
