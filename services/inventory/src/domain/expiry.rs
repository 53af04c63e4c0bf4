//! When a lot leaves availability: at the start of its withdraw date (its
//! expiry date less its item's minimum shelf life) in its node's time
//! zone, so a lot is never promised on the day it expires.
use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;

/// An IANA time zone of the tz database (`UTC` included).
pub fn is_time_zone(s: &str) -> bool {
    s.parse::<Tz>().is_ok()
}

/// The date at a node now. A node without a time zone (or with one the
/// database does not know, stored before zones were checked) uses UTC.
pub fn today_at(zone: &str, now: DateTime<Utc>) -> NaiveDate {
    match zone.parse::<Tz>() {
        Ok(tz) => now.with_timezone(&tz).date_naive(),
        Err(_) => now.date_naive(),
    }
}

/// Longest minimum shelf life an item may ask for.
pub const MAX_SHELF_LIFE_DAYS: i32 = 3650;

/// The date from which a lot is no longer promised: `min_shelf_life_days`
/// before its expiry date. Empty when it has no date (or one that does
/// not parse, stored before dates were checked strictly), or is no lot:
/// the stock of an item not kept per lot is one row, whose date is only
/// the last one a movement reported.
pub fn withdraw_date(lot: &str, expiry: &str, min_shelf_life_days: i32) -> String {
    if lot.is_empty() {
        return String::new();
    }
    let days = Days::new(min_shelf_life_days.clamp(0, MAX_SHELF_LIFE_DAYS) as u64);
    NaiveDate::parse_from_str(expiry, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.checked_sub_days(days))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Whether a lot with this withdraw date is past it at a node in `zone`.
/// No date: never.
pub fn is_expired(withdraw: &str, zone: &str, now: DateTime<Utc>) -> bool {
    NaiveDate::parse_from_str(withdraw, "%Y-%m-%d").is_ok_and(|d| d <= today_at(zone, now))
}

/// The earliest expiry date of a lot a node in `zone` still promises now
/// for an item with this minimum shelf life (one whose withdraw date is
/// still ahead).
pub fn min_expiry_date(zone: &str, now: DateTime<Utc>, min_shelf_life_days: i32) -> String {
    let days = 1 + min_shelf_life_days.clamp(0, MAX_SHELF_LIFE_DAYS) as u64;
    today_at(zone, now)
        .checked_add_days(Days::new(days))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The latest expiry date that may have come somewhere now: the date in
/// the zone furthest ahead of UTC (+14:00). The sweep looks only at lots
/// dated up to it.
pub fn latest_due(now: DateTime<Utc>) -> String {
    today_at("Pacific/Kiritimati", now)
        .format("%Y-%m-%d")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn a_lot_expires_at_the_start_of_its_date_at_the_node() {
        let now = at("2026-12-02T23:30:00Z");
        // Berlin is already on the 3rd, New York still on the 2nd.
        assert!(is_expired("2026-12-03", "Europe/Berlin", now));
        assert!(!is_expired("2026-12-03", "America/New_York", now));
        assert!(!is_expired("2026-12-03", "", now));
        assert!(is_expired("2026-12-02", "", now));
        assert!(!is_expired("", "UTC", now));
        assert!(!is_expired("someday", "UTC", now));
        // A zone the database does not know counts as UTC.
        assert!(!is_expired("2026-12-03", "Mars/Olympus", now));
    }

    #[test]
    fn a_minimum_shelf_life_brings_the_withdraw_date_forward() {
        assert_eq!(withdraw_date("L", "2027-03-01", 0), "2027-03-01");
        assert_eq!(withdraw_date("L", "2027-03-01", 1), "2027-02-28");
        assert_eq!(withdraw_date("L", "2027-03-01", 365), "2026-03-01");
        assert_eq!(withdraw_date("L", "", 30), "");
        assert_eq!(withdraw_date("L", "2027-3-1x", 0), "");
        assert_eq!(withdraw_date("", "2027-03-01", 0), "", "no lot");
        let now = at("2026-12-02T12:00:00Z");
        assert!(is_expired(&withdraw_date("L", "2026-12-10", 8), "UTC", now));
        assert!(!is_expired(
            &withdraw_date("L", "2026-12-10", 7),
            "UTC",
            now
        ));
    }

    #[test]
    fn the_earliest_expiry_shipped_is_that_of_a_lot_still_promised() {
        let now = at("2026-12-02T23:30:00Z");
        let first = min_expiry_date("Europe/Berlin", now, 30);
        assert_eq!(first, "2027-01-03", "Berlin's 3 December + 31 days");
        assert!(!is_expired(
            &withdraw_date("L", &first, 30),
            "Europe/Berlin",
            now
        ));
        let day_before = "2027-01-02";
        assert!(is_expired(
            &withdraw_date("L", day_before, 30),
            "Europe/Berlin",
            now
        ));
        assert_eq!(min_expiry_date("", now, 0), "2026-12-03");
    }

    #[test]
    fn the_sweep_looks_as_far_ahead_as_any_zone() {
        let now = at("2026-12-02T10:30:00Z");
        assert_eq!(latest_due(now), "2026-12-03");
        assert!(is_expired(&latest_due(now), "Etc/GMT-14", now));
    }

    #[test]
    fn zones_are_checked_against_the_database() {
        assert!(is_time_zone("Europe/Berlin"));
        assert!(is_time_zone("UTC"));
        assert!(!is_time_zone("Europe/Berln"));
        assert!(!is_time_zone("Berlin"));
    }
}
