//! Canonical gRPC errors with details: `ErrorInfo` (reason in
//! UPPER_SNAKE_CASE, domain `<service>.oms`), `BadRequest` field violations,
//! `ResourceInfo`, `PreconditionFailure`. Internal causes are logged with
//! the trace id and never sent to the caller.
use oms_kernel::Violations;
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

fn info(reason: &str, domain: &str) -> ErrorDetails {
    let mut d = ErrorDetails::new();
    d.set_error_info(reason, domain, HashMap::<String, String>::new());
    d
}

/// INVALID_ARGUMENT with every field violation.
pub fn invalid_argument(domain: &str, violations: &Violations) -> Status {
    invalid_argument_because(domain, "INVALID_ARGUMENT", violations)
}

/// INVALID_ARGUMENT with field violations and a reason of its own, for a
/// case clients tell apart (`REQUEST_ID_REUSED`).
pub fn invalid_argument_because(domain: &str, reason: &str, violations: &Violations) -> Status {
    let mut d = info(reason, domain);
    for v in &violations.0 {
        d.add_bad_request_violation(&v.field, &v.description);
    }
    Status::with_error_details(Code::InvalidArgument, violations.to_string(), d)
}

/// NOT_FOUND for a resource (`order`, `orders/123`); reason `ORDER_NOT_FOUND`.
pub fn not_found(domain: &str, resource_type: &str, name: &str) -> Status {
    not_found_all(domain, resource_type, &[name.to_owned()])
}

/// NOT_FOUND for several resources of one type a request names (the
/// unknown SKUs of its lines): one `ResourceInfo` each, so that a caller
/// learns of every one at once.
pub fn not_found_all(domain: &str, resource_type: &str, names: &[String]) -> Status {
    use tonic_types::{ErrorDetail, ErrorInfo, ResourceInfo};
    let reason = format!("{}_NOT_FOUND", resource_type.to_uppercase());
    let info = ErrorInfo::new(reason, domain, HashMap::<String, String>::new());
    let details = std::iter::once(ErrorDetail::from(info)).chain(names.iter().map(|name| {
        ErrorDetail::from(ResourceInfo::new(
            resource_type,
            name,
            "",
            "does not exist or belongs to another tenant",
        ))
    }));
    let message = format!("{} not found", names.join(", "));
    Status::with_error_details_vec(Code::NotFound, message, details.collect::<Vec<_>>())
}

/// FAILED_PRECONDITION: the request is valid but the resource's state
/// forbids it (an illegal state move, a confirm of an expired reservation).
pub fn failed_precondition(domain: &str, reason: &str, subject: &str, message: &str) -> Status {
    let mut d = info(reason, domain);
    d.add_precondition_failure_violation(reason, subject, message);
    Status::with_error_details(Code::FailedPrecondition, message, d)
}

/// ALREADY_EXISTS, e.g. a second resource with the same caller-chosen id.
pub fn already_exists(domain: &str, reason: &str, name: &str) -> Status {
    let mut d = info(reason, domain);
    d.set_resource_info("", name, "", "already exists");
    Status::with_error_details(Code::AlreadyExists, format!("{name} already exists"), d)
}

/// Any code with just an `ErrorInfo`.
pub fn with_reason(code: Code, domain: &str, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(code, message, info(reason, domain))
}

/// UNAVAILABLE for a dependency that is down; the caller may retry.
pub fn unavailable(domain: &str, what: &str, cause: &dyn std::error::Error) -> Status {
    tracing::warn!(error = %ErrorChain(cause), "{what} unavailable");
    with_reason(
        Code::Unavailable,
        domain,
        "DEPENDENCY_UNAVAILABLE",
        format!("{what} is unavailable; retry later"),
    )
}

/// INTERNAL: logs the whole cause chain and answers without it.
pub fn internal(domain: &str, cause: &dyn std::error::Error) -> Status {
    tracing::error!(error = %ErrorChain(cause), "internal error");
    with_reason(
        Code::Internal,
        domain,
        "INTERNAL",
        "internal error; it was logged",
    )
}

/// Maps a database error: connection trouble is UNAVAILABLE (retryable),
/// and so is a transaction Postgres rolled back to break a deadlock or a
/// serialization conflict with a concurrent one (reason
/// `TRANSACTION_CONFLICT`: nothing of it was kept, and its `request_id`
/// makes the retry safe); the rest INTERNAL.
pub fn from_db(domain: &str, e: &sqlx::Error) -> Status {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            unavailable(domain, "the database", e)
        }
        sqlx::Error::Database(d) if is_conflict(d.code().as_deref()) => {
            tracing::warn!(error = %ErrorChain(e), "transaction rolled back by a conflict");
            with_reason(
                Code::Unavailable,
                domain,
                "TRANSACTION_CONFLICT",
                "the change collided with a concurrent one and was rolled back; retry it",
            )
        }
        _ => internal(domain, e),
    }
}

/// Whether a SQLSTATE is a deadlock (40P01) or a serialization failure
/// (40001): Postgres rolled the transaction back, and it may be retried.
fn is_conflict(sqlstate: Option<&str>) -> bool {
    matches!(sqlstate, Some("40P01" | "40001"))
}

/// Whether a code says the service failed (UNKNOWN, DEADLINE_EXCEEDED,
/// INTERNAL, UNAVAILABLE, DATA_LOSS: the caller may retry) rather than
/// refused the request. The alert rules (k8s/components/monitoring) count
/// server errors by the same codes.
pub fn is_server_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The `ErrorInfo.reason` of a status (empty when it has none): what a
/// caller branches on.
pub fn reason(s: &Status) -> String {
    s.get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// The resources a NOT_FOUND status names (`ResourceInfo.resource_name`,
/// as [`not_found`] and [`not_found_all`] set them), such as `items/SKU-1`.
pub fn resource_names(s: &Status) -> Vec<String> {
    (s.get_error_details_vec().into_iter())
        .filter_map(|d| match d {
            tonic_types::ErrorDetail::ResourceInfo(r) => Some(r.resource_name),
            _ => None,
        })
        .collect()
}

/// The fields named by a status's `BadRequest` violations.
pub fn fields(s: &Status) -> Vec<String> {
    s.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The subjects named by a status's `PreconditionFailure` violations.
pub fn subjects(s: &Status) -> Vec<String> {
    s.get_error_details()
        .precondition_failure()
        .map(|p| p.violations.iter().map(|v| v.subject.clone()).collect())
        .unwrap_or_default()
}

/// Displays an error with its sources: `a: b: c`.
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// A status as `google.rpc.Status` (OK for `None`), with its rich details:
/// how a batch answers each of its items.
pub fn to_rpc(e: Option<&Status>) -> oms_proto::google::rpc::Status {
    use prost::Message as _;
    let Some(e) = e else {
        return oms_proto::google::rpc::Status::default();
    };
    oms_proto::google::rpc::Status::decode(e.details())
        .ok()
        .filter(|s| s.code != 0)
        .unwrap_or_else(|| oms_proto::google::rpc::Status {
            code: e.code() as i32,
            message: e.message().to_owned(),
            details: vec![],
        })
}

/// The status a batch item carries, back as the `Status` the single call
/// would have returned (`None` for OK).
pub fn from_rpc(s: &oms_proto::google::rpc::Status) -> Option<Status> {
    use prost::Message as _;
    (s.code != 0).then(|| {
        Status::with_details(
            Code::from(s.code),
            s.message.clone(),
            s.encode_to_vec().into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_travel_as_bad_request() {
        let mut v = Violations::new();
        v.add("order.lines[0].quantity", "must be positive");
        v.add("request_id", "is required");
        let s = invalid_argument("orders.oms", &v);
        assert_eq!(s.code(), Code::InvalidArgument);
        let d = s.get_error_details();
        let br = d.bad_request().expect("bad request");
        assert_eq!(br.field_violations.len(), 2);
        assert_eq!(br.field_violations[0].field, "order.lines[0].quantity");
        assert_eq!(d.error_info().expect("info").domain, "orders.oms");
    }

    #[test]
    fn a_batch_item_status_comes_back_as_the_single_call_would_return_it() {
        let s = invalid_argument("orders.oms", &Violations::one("order.currency_code", "bad"));
        let back = from_rpc(&to_rpc(Some(&s))).expect("an error");
        assert_eq!(back.code(), Code::InvalidArgument);
        assert_eq!(fields(&back), ["order.currency_code"]);
        assert_eq!(reason(&back), reason(&s));
        assert!(from_rpc(&to_rpc(None)).is_none());
    }

    #[test]
    fn not_found_names_reason() {
        let s = not_found("orders.oms", "order", "orders/x");
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(
            s.get_error_details().error_info().unwrap().reason,
            "ORDER_NOT_FOUND"
        );
    }
}
