//! Background work of the orders service.
pub mod demand_publisher;
pub mod followers;
pub mod fulfillment_feed;
pub mod held_expiry;
pub mod leases;
pub mod peers;
pub mod reroute;
pub mod saga;
pub mod stock_feed;
pub mod stock_line;
