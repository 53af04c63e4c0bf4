use crate::gate::{GateError, Short};
use oms_kernel::Violations;
use oms_runtime::idempotency::IdempotencyError;

/// What can go wrong in the inventory service; mapped to gRPC in `grpc.rs`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] Violations),
    /// Resources of one kind a request names (its unknown SKUs, say).
    #[error("{} not found", names.join(", "))]
    NotFound {
        kind: &'static str,
        names: Vec<String>,
    },
    #[error("{name} already exists")]
    AlreadyExists { reason: &'static str, name: String },
    #[error("{message}")]
    Precondition {
        reason: &'static str,
        subject: String,
        message: String,
    },
    #[error("{0}")]
    PermissionDenied(String),
    /// Short of stock, in the network, at nodes, or (a short marked
    /// `channel`) in the share of `channel` (its name), when one applied.
    #[error("not enough stock")]
    Insufficient { short: Vec<Short>, channel: String },
    /// A dependency failed; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// The reservation writer stopped: the service is shutting down, and
    /// another replica (or this one, restarted) answers a retry.
    #[error(transparent)]
    Stopped(#[from] oms_runtime::batch::Stopped),
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Gate(#[from] GateError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<oms_runtime::outbox::FeedError> for Error {
    fn from(e: oms_runtime::outbox::FeedError) -> Self {
        use oms_runtime::outbox::FeedError;
        match e {
            FeedError::Db(e) => Error::Db(e),
            FeedError::Expired { after, .. } => Error::precondition(
                oms_runtime::outbox::CURSOR_EXPIRED,
                after.to_string(),
                e.to_string(),
            ),
            FeedError::Ahead { .. } => {
                Error::Invalid(Violations::one("after_cursor", e.to_string()))
            }
        }
    }
}

impl Error {
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            names: vec![name.into()],
        }
    }

    /// Every one of `names` (not empty) not found.
    pub fn not_found_all(kind: &'static str, names: Vec<String>) -> Self {
        Error::NotFound { kind, names }
    }

    pub fn precondition(
        reason: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Precondition {
            reason,
            subject: subject.into(),
            message: message.into(),
        }
    }
}
