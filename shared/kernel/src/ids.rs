use crate::Violations;
use std::fmt;

/// Ids of nodes and channels: 1-64 letters, digits, '-', '_' or '.' (they
/// become parts of resource names and keys).
pub fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is required".into());
    }
    let ok = s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err("must be 1-64 letters, digits, '-', '_' or '.'".into());
    }
    Ok(())
}

/// SKUs: 1-64 printable ASCII characters without spaces or '/' (they
/// become parts of Redis keys and resource names).
pub fn check_sku(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is required".into());
    }
    if s.len() > 64 || !s.chars().all(|c| c.is_ascii_graphic() && c != '/') {
        return Err("must be 1-64 printable ASCII characters without spaces or '/'".into());
    }
    Ok(())
}

/// A list of SKUs of a request (a filter or the SKUs asked about): each
/// checked, at most `max` (problems go to `v` under `field`); sorted, each
/// once. `required`: at least one.
pub fn parse_skus(
    v: &mut Violations,
    field: &str,
    skus: &[String],
    (required, max): (bool, usize),
) -> Vec<String> {
    if required && skus.is_empty() {
        v.add(field, "name at least one SKU");
    }
    if skus.len() > max {
        v.add(field, format!("at most {max} per call"));
    }
    for (i, s) in skus.iter().enumerate() {
        v.check(format!("{field}[{i}]"), check_sku(s));
    }
    let mut out = skus.to_vec();
    out.sort();
    out.dedup();
    out
}

/// Lots and serial numbers, as a label prints them and a scanner reads
/// them: 1-100 characters, not all spaces, without control characters
/// (records keep them, answers and events name them).
pub fn check_label(s: &str) -> Result<(), String> {
    if s.trim().is_empty() || s.len() > 100 || s.chars().any(char::is_control) {
        return Err(
            "must be 1 to 100 characters, not all spaces, without control characters".into(),
        );
    }
    Ok(())
}

/// Country codes of addresses and routing rules: ISO 3166-1 alpha-2, in
/// capitals ("DE"), as channels send them and rules compare them.
pub fn check_country_code(s: &str) -> Result<(), String> {
    if s.len() != 2 || !s.chars().all(|c| c.is_ascii_uppercase()) {
        return Err("must be an ISO 3166-1 alpha-2 code such as DE".into());
    }
    Ok(())
}

/// A tenant id, as carried by the `tenant` claim of a caller's token:
/// 1 to 63 characters of `a-z`, `0-9`, `-` and `_`, starting with a letter
/// or digit. Every row of every service is keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(String);

impl Tenant {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_first = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok_rest = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if s.len() > 63 || !ok_first || !ok_rest {
            return Err(format!(
                "tenant must be 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit; got {s:?}"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An idempotency key chosen by the caller: 1 to 128 printable ASCII
/// characters. A repeated key returns the first response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err(
                "request_id is required (any unique string, a UUID is a good choice)".into(),
            );
        }
        if s.len() > 128 || !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(
                "request_id must be 1-128 printable ASCII characters without spaces".into(),
            );
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The request id of a call one service makes on behalf of another
    /// request: `id` (built from the caller's ids and keys) when it is a
    /// valid request id, otherwise `prefix` and a digest of `id`. The same
    /// `id` always gives the same answer, so the call stays idempotent
    /// whatever the length or characters of the keys it was built from.
    pub fn derived(prefix: &str, id: String) -> String {
        if Self::parse(&id).is_ok() {
            return id;
        }
        use sha2::{Digest, Sha256};
        let digest: String = Sha256::digest(id.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{prefix}-{digest}")
    }

    /// The request id, checked with its request's body (`body`, the
    /// body's own checks): a caller hears of every bad field in one
    /// answer, where a body checked first would hide a missing id until
    /// the body is right.
    pub fn checked_with<T>(
        request_id: &str,
        body: Result<T, Violations>,
    ) -> Result<(Self, T), Violations> {
        let mut v = Violations::new();
        let rid = v.check("request_id", Self::parse(request_id));
        match (rid, v.merge(body)) {
            (Some(rid), Some(body)) => Ok((rid, body)),
            _ => Err(v),
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits a resource name `collection/{id}` and returns the id.
pub fn parse_name<'a>(name: &'a str, collection: &str) -> Result<&'a str, String> {
    match name.split_once('/') {
        Some((c, id)) if c == collection && !id.is_empty() && !id.contains('/') => Ok(id),
        _ => Err(format!("must look like {collection}/{{id}}; got {name:?}")),
    }
}

/// The id of the resource an update names: by its `name`
/// (`collection/{id}`), or, `name` left empty, by its own id field (as its
/// create took it: a caller reading `name` as set by the service sends
/// only that). Both given, they must agree. `fields` are the two fields'
/// paths for the violations (`("node.name", "node.node_id")`).
pub fn target_id(
    name: &str,
    id: &str,
    collection: &str,
    (name_field, id_field): (&str, &str),
) -> Result<String, Violations> {
    match (name, id) {
        ("", "") => Err(Violations::one(
            name_field,
            format!("is required: {collection}/{{id}} (or give {id_field})"),
        )),
        ("", id) => Ok(id.to_owned()),
        (name, id) => match parse_name(name, collection) {
            Err(e) => Err(Violations::one(name_field, e)),
            Ok(named) if !id.is_empty() && id != named => Err(Violations::one(
                id_field,
                format!("is {id:?}, but {name_field} names {name}"),
            )),
            Ok(named) => Ok(named.to_owned()),
        },
    }
}

/// The UUID of a resource name `collection/{uuid}`; `what` names the
/// resource in the error ("a fulfillment order").
pub fn parse_uuid_name(name: &str, collection: &str, what: &str) -> Result<uuid::Uuid, String> {
    let id = parse_name(name, collection)?;
    uuid::Uuid::parse_str(id).map_err(|_| format!("{name:?} is not {what} name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_names_its_target_by_name_or_by_id() {
        let f = ("node.name", "node.node_id");
        assert_eq!(target_id("nodes/DC1", "", "nodes", f).unwrap(), "DC1");
        assert_eq!(target_id("", "DC1", "nodes", f).unwrap(), "DC1");
        assert_eq!(target_id("nodes/DC1", "DC1", "nodes", f).unwrap(), "DC1");
        let field = |r: Result<String, Violations>| r.unwrap_err().0[0].field.clone();
        assert_eq!(
            field(target_id("nodes/DC1", "DC2", "nodes", f)),
            "node.node_id"
        );
        assert_eq!(field(target_id("DC1", "", "nodes", f)), "node.name");
        assert_eq!(field(target_id("", "", "nodes", f)), "node.name");
    }

    #[test]
    fn sku_rules() {
        assert!(check_sku("SKU-1").is_ok());
        for bad in ["", "a b", "a/b", &"a".repeat(65)] {
            assert!(check_sku(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn id_rules() {
        assert!(check_id("DC-EAST_1.a").is_ok());
        assert!(check_id(&"a".repeat(64)).is_ok());
        for bad in ["", "DC 1", "a/b", "bad id!", &"a".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_rules() {
        assert!(check_label("LOT 2026/05-A").is_ok());
        for bad in ["", "  ", "L\n1", &"L".repeat(101)] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn country_code_rules() {
        assert!(check_country_code("DE").is_ok());
        for bad in ["", "de", "D", "DEU", "D1"] {
            assert!(check_country_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenant_rules() {
        assert!(Tenant::parse("acme").is_ok());
        assert!(Tenant::parse("acme-eu_2").is_ok());
        assert!(Tenant::parse("").is_err());
        assert!(Tenant::parse("Acme").is_err());
        assert!(Tenant::parse("-acme").is_err());
        assert!(Tenant::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn request_id_rules() {
        assert!(RequestId::parse("b5c1-7").is_ok());
        assert!(RequestId::parse("").is_err());
        assert!(RequestId::parse("has space").is_err());
        assert!(RequestId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn a_bad_request_id_is_reported_with_the_body() {
        let body: Result<(), Violations> = Err(Violations::one("node", "is required"));
        let fields: Vec<String> = RequestId::checked_with("", body)
            .unwrap_err()
            .0
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["request_id", "node"]);
        assert_eq!(
            RequestId::checked_with("r1", Ok(7)),
            Ok((RequestId::parse("r1").unwrap(), 7))
        );
        let fields = RequestId::checked_with("has space", Ok(7)).unwrap_err().0;
        assert_eq!(fields[0].field, "request_id");
    }

    #[test]
    fn derived_request_ids_are_valid_and_stable() {
        let short = RequestId::derived("release", "release-o1-k".into());
        assert_eq!(short, "release-o1-k", "a valid id stays as it is");
        let long = || format!("release-o1-{}", "k".repeat(128));
        let a = RequestId::derived("release", long());
        assert!(RequestId::parse(&a).is_ok(), "{a}");
        assert!(a.starts_with("release-"));
        assert_eq!(a, RequestId::derived("release", long()));
        assert_ne!(a, RequestId::derived("release", format!("{}x", long())));
        let spaced = RequestId::derived("ingest", "ingest:pos:with space".into());
        assert!(RequestId::parse(&spaced).is_ok());
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("orders/abc", "orders"), Ok("abc"));
        assert!(parse_name("orders/", "orders").is_err());
        assert!(parse_name("items/abc", "orders").is_err());
        assert!(parse_name("orders/a/b", "orders").is_err());
        assert!(parse_name("abc", "orders").is_err());
    }
}
