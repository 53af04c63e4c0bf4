//! `oms-proto`: the one generated crate of the OMS gRPC contract.
//!
//! Messages, clients and servers of every service under `proto/oms`, the
//! vendored `google.rpc` error types, and the encoded descriptor set that
//! servers register for reflection (so grpcurl can call every method and
//! decode error details).
#![allow(clippy::all, clippy::pedantic, clippy::unwrap_used, missing_docs)]

/// Encoded `FileDescriptorSet` of every file in this crate, imports
/// included (google.protobuf well-known types and google.rpc).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/oms_descriptor.bin"));

/// The `oms.*.v1` packages.
pub mod oms {
    macro_rules! package {
        ($name:ident, $pkg:literal) => {
            pub mod $name {
                pub mod v1 {
                    tonic::include_proto!($pkg);
                }
            }
        };
    }
    package!(common, "oms.common.v1");
    package!(ingest, "oms.ingest.v1");
    package!(orders, "oms.orders.v1");
    package!(inventory, "oms.inventory.v1");
    package!(routing, "oms.routing.v1");
    package!(fulfillment, "oms.fulfillment.v1");
    package!(returns, "oms.returns.v1");
    package!(billing, "oms.billing.v1");
    package!(notifications, "oms.notifications.v1");
}

/// Vendored `google.rpc` error types (Status, ErrorInfo, BadRequest...).
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub use oms::{
    billing::v1 as billing, common::v1 as common, fulfillment::v1 as fulfillment,
    ingest::v1 as ingest, inventory::v1 as inventory, notifications::v1 as notifications,
    orders::v1 as orders, returns::v1 as returns, routing::v1 as routing,
};
