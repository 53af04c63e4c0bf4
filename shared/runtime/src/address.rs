//! Checks of `oms.common.v1.PostalAddress`, shared by what carries one (an
//! order's ship-to, a node's address).
use oms_kernel::Violations;
use oms_proto::common::{GeoPoint, PostalAddress};

/// Longest text of an address field: far beyond a real one, which a label
/// prints in a few dozen characters, but bounded, since the address goes
/// on to warehouses and into every event that carries it.
pub const MAX_TEXT: usize = 500;
/// Most street lines.
pub const MAX_LINES: usize = 10;

/// Checks the form of an address: bounded text, an ISO 3166-1 alpha-2
/// country code when one is given, coordinates on the globe. Which fields
/// must be present is the caller's rule.
pub fn check_form(v: &mut Violations, field: &str, a: &PostalAddress) {
    if a.lines.len() > MAX_LINES {
        v.add(
            format!("{field}.lines"),
            format!("at most {MAX_LINES} street lines"),
        );
    }
    for (i, l) in a.lines.iter().enumerate() {
        v.at_most(format!("{field}.lines[{i}]"), l, MAX_TEXT);
    }
    for (name, text) in [
        ("name", &a.name),
        ("company", &a.company),
        ("city", &a.city),
        ("region", &a.region),
        ("postal_code", &a.postal_code),
        ("phone", &a.phone),
        ("email", &a.email),
    ] {
        v.at_most(format!("{field}.{name}"), text, MAX_TEXT);
    }
    if !a.country_code.is_empty() {
        v.check(
            format!("{field}.country_code"),
            oms_kernel::check_country_code(&a.country_code),
        );
    }
    if let Some(GeoPoint {
        latitude,
        longitude,
    }) = a.geo
        && (!(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude))
    {
        v.add(
            format!("{field}.geo"),
            "latitude must be within ±90 and longitude within ±180",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_text_and_checks_codes_and_coordinates() {
        let a = PostalAddress {
            lines: vec!["1 Main St".into(); 11],
            city: "x".repeat(501),
            country_code: "de".into(),
            geo: Some(GeoPoint {
                latitude: 91.0,
                longitude: 0.0,
            }),
            ..Default::default()
        };
        let mut v = Violations::new();
        check_form(&mut v, "ship_to", &a);
        let fields: Vec<_> = v.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "ship_to.lines",
                "ship_to.city",
                "ship_to.country_code",
                "ship_to.geo"
            ]
        );
        let mut v = Violations::new();
        check_form(&mut v, "ship_to", &PostalAddress::default());
        assert!(v.is_empty(), "presence is the caller's rule");
    }
}
