//! Calendar dates as the API carries them.

/// A date exactly as `YYYY-MM-DD` (stored dates are compared as text, so
/// `2026-1-5` is refused).
fn is_date(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .is_ok_and(|d| d.format("%Y-%m-%d").to_string() == s)
}

/// A date given as text: empty (none given) or a date as `is_date`
/// takes it. The error tells a shape it cannot read from a day the
/// calendar does not have (`2026-02-30`), which before both read "must be
/// YYYY-MM-DD".
pub fn check_date(s: &str) -> Result<(), String> {
    if s.is_empty() || is_date(s) {
        return Ok(());
    }
    let shaped = s.len() == 10
        && s.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    Err(match shaped {
        true => format!("{s} is no day of the calendar"),
        false => "must be YYYY-MM-DD".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_date_says_what_is_wrong() {
        assert_eq!(check_date(""), Ok(()));
        assert_eq!(check_date("2026-02-28"), Ok(()));
        assert_eq!(
            check_date("2026-02-30"),
            Err("2026-02-30 is no day of the calendar".into())
        );
        assert_eq!(check_date("2026-2-3"), Err("must be YYYY-MM-DD".into()));
        assert_eq!(check_date("2026/02/03"), Err("must be YYYY-MM-DD".into()));
    }

    #[test]
    fn dates_are_checked_strictly() {
        assert!(is_date("2026-01-05"));
        assert!(!is_date("2026-1-5"));
        assert!(!is_date("2026-02-30"));
        assert!(!is_date(""));
    }
}
