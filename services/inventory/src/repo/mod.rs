//! SQL of the inventory service, one module per table group.
pub mod backorders;
pub mod give_backs;
pub mod imports;
pub mod inbound;
pub mod items;
pub mod lock;
pub mod nodes;
pub mod replicas;
pub mod reservations;
pub mod rules;
pub mod serials;
pub mod stock;
pub mod transfers;

pub(crate) use oms_runtime::db::decode;
