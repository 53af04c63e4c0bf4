//! Pure order logic: parsing requests into domain values and the state
//! machine. No I/O here.

mod filter;
pub mod lifecycle;
mod new_order;
mod state;
pub mod stock_due;

pub use filter::OrderFilter;
pub use new_order::NewOrder;
pub use state::OrderState;
