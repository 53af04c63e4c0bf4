//! Decimal amounts from channel payloads to integer minor units, exactly.

/// Digits after the decimal point of a currency's minor unit (ISO 4217).
pub fn exponent(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "CLP" | "ISK" | "VND" | "HUF_NOMINOR" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" => 3,
        _ => 2,
    }
}

/// "19.99" EUR -> 1999; refuses more decimals than the currency has.
pub fn to_minor(text: &str, currency: &str) -> Result<i64, String> {
    let exp = exponent(currency) as usize;
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let frac = frac.trim_end_matches('0');
    if int.is_empty()
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(format!("{text:?} is not a decimal amount"));
    }
    if frac.len() > exp {
        return Err(format!("{text:?} has more decimals than {currency} allows"));
    }
    let padded = format!("{int}{frac:0<exp$}");
    let v: i64 = padded
        .parse()
        .map_err(|_| format!("{text:?} is out of range"))?;
    Ok(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(to_minor("199.00", "USD"), Ok(19900));
        assert_eq!(to_minor("3", "USD"), Ok(300));
        assert_eq!(to_minor("12.5", "EUR"), Ok(1250));
        assert_eq!(to_minor("-0.45", "EUR"), Ok(-45));
        assert_eq!(to_minor("1000", "JPY"), Ok(1000));
        assert!(to_minor("1.005", "USD").is_err());
        assert!(to_minor("abc", "USD").is_err());
    }
}
