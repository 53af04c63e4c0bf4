//! SQL of the orders service, one module per table group.
pub mod feeds;
pub mod history;
pub mod orders;
pub mod published_demand;
pub mod saga;
pub mod stock_waits;
