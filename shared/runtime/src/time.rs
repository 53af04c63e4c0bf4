//! Conversions between chrono and protobuf timestamps.
use chrono::{DateTime, Utc};
use oms_kernel::Violations;
use prost_types::Timestamp;

pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// `None` when the timestamp is out of range.
pub fn from_timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
}

/// How far ahead of the server's clock a reported time may be: the
/// clocks of warehouses, tills and ERPs drift, but not by a day.
pub const MAX_AHEAD: chrono::Duration = chrono::Duration::days(1);

/// Why a time something happened (a movement, a count, a receipt) cannot
/// be taken: not a valid timestamp, or more than [`MAX_AHEAD`] after
/// `now` (a clock set wrong, a date typed wrong). Unset is fine.
pub fn check_happened(t: Option<&Timestamp>, now: DateTime<Utc>) -> Result<(), String> {
    let Some(t) = t else {
        return Ok(());
    };
    match from_timestamp(t) {
        None => Err("is not a valid timestamp".into()),
        Some(at) if at > now + MAX_AHEAD => Err(format!(
            "{} is more than a day after the server's clock ({})",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )),
        Some(_) => Ok(()),
    }
}

/// A list filter's time range, `[{name}_from, {name}_to)`, each end
/// optional; a bad timestamp or an empty range is a violation in `v`.
pub fn range(
    v: &mut Violations,
    name: &str,
    from: &Option<Timestamp>,
    to: &Option<Timestamp>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let mut end = |suffix: &str, t: &Option<Timestamp>| {
        let t = t.as_ref()?;
        let parsed = from_timestamp(t);
        if parsed.is_none() {
            v.add(format!("{name}_{suffix}"), "is not a valid timestamp");
        }
        parsed
    };
    let (from, to) = (end("from", from), end("to", to));
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        v.add(format!("{name}_to"), format!("must be after {name}_from"));
    }
    (from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_that_happened_may_be_a_day_ahead_at_most() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let at = |seconds, nanos| Timestamp { seconds, nanos };
        assert_eq!(check_happened(None, now), Ok(()));
        assert_eq!(check_happened(Some(&at(0, 0)), now), Ok(()));
        assert_eq!(
            check_happened(Some(&at(1_000_000 + 86_400, 0)), now),
            Ok(())
        );
        let ahead = check_happened(Some(&at(1_000_000 + 86_401, 0)), now).unwrap_err();
        assert!(ahead.contains("more than a day after"), "{ahead}");
        assert_eq!(
            check_happened(Some(&at(0, -1)), now),
            Err("is not a valid timestamp".into())
        );
    }

    #[test]
    fn a_range_is_checked_end_by_end_and_as_a_whole() {
        let at = |seconds, nanos| Some(Timestamp { seconds, nanos });
        let mut v = Violations::new();
        let (f, t) = range(&mut v, "record_time", &at(10, 0), &None);
        assert!(v.is_empty() && f.is_some() && t.is_none());
        range(&mut v, "record_time", &at(10, -1), &at(5, 0));
        range(&mut v, "record_time", &at(10, 0), &at(10, 0));
        let fields: Vec<&str> = v.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, ["record_time_from", "record_time_to"]);
        assert_eq!(v.0[1].description, "must be after record_time_from");
    }
}
