use oms_kernel::Violations;
use oms_runtime::idempotency::IdempotencyError;

/// What can go wrong in the orders service; mapped to gRPC in `grpc.rs`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] Violations),
    #[error("{0} not found")]
    NotFound(String),
    #[error("channel order {channel_order_id} of {channel} already exists as {existing}")]
    DuplicateChannelOrder {
        channel: String,
        channel_order_id: String,
        existing: String,
    },
    #[error("{}", .0.message)]
    Refused(crate::domain::lifecycle::Refused),
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Inventory refused or failed a change the request needs.
    #[error("inventory: {}", .0.message())]
    Inventory(tonic::Status),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
