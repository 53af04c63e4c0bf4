use prost_types::Timestamp;

/// An RFC 3339 time as a protobuf timestamp; `None` when absent or invalid.
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| oms_runtime::time::to_timestamp(t.with_timezone(&chrono::Utc)))
}
