//! Calendar dates as the API carries them.

/// A date exactly as `YYYY-MM-DD` (stored dates are compared as text, so
/// `2026-1-5` is refused).
pub fn is_date(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .is_ok_and(|d| d.format("%Y-%m-%d").to_string() == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked_strictly() {
        assert!(is_date("2026-01-05"));
        assert!(!is_date("2026-1-5"));
        assert!(!is_date("2026-02-30"));
        assert!(!is_date(""));
    }
}
