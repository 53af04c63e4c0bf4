//! The suite's id rules, as inventory names them.

/// SKUs: as every service checks them.
pub use oms_kernel::check_sku;

/// Node ids: as every id of the suite.
pub use oms_kernel::check_id as check_node_id;

/// A backorder source's name (SetBackorderDemand's `source`, a
/// reservation's `backorders_of`): it is part of the gate's field names
/// (`b:{source}:{channel}`), so it holds no ':'.
pub fn check_source(s: &str) -> Result<(), &'static str> {
    let name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if s.is_empty() || s.len() > 64 || !s.chars().all(name) {
        return Err("1 to 64 letters, digits, '-' or '_'");
    }
    Ok(())
}
