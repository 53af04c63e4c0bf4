//! Pure inventory rules: parsing requests into domain values. No I/O.
pub mod availability;
pub mod expiry;
pub mod ids;
pub mod item;
pub mod movement;
pub mod node;
pub mod pairs;
pub mod reservation;
pub mod snapshot;

pub use ids::{check_node_id, check_sku, check_source};
