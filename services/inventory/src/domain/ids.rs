//! The suite's id rules, as inventory names them.

/// SKUs: as every service checks them.
pub use oms_kernel::check_sku;

/// Node ids: as every id of the suite.
pub use oms_kernel::check_id as check_node_id;
