//! Background work of the orders service.
pub mod saga;
