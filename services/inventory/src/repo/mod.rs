//! SQL of the inventory service, one module per table group.
pub mod items;
pub mod lock;
pub mod nodes;
pub mod reservations;
pub mod rules;
pub mod stock;

use prost::Message;

pub(crate) fn decode<M: Message + Default>(doc: &[u8]) -> sqlx::Result<M> {
    M::decode(doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
