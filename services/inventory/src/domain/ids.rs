/// SKUs: 1-64 printable characters without spaces (they become parts of
/// Redis keys and resource names).
pub fn check_sku(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is required".into());
    }
    if s.len() > 64 || !s.chars().all(|c| c.is_ascii_graphic() && c != '/') {
        return Err("must be 1-64 printable ASCII characters without spaces or '/'".into());
    }
    Ok(())
}

/// Node ids: as every id of the suite.
pub use oms_kernel::check_id as check_node_id;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_sku("SKU-1").is_ok());
        assert!(check_sku("").is_err());
        assert!(check_sku("a b").is_err());
        assert!(check_sku("a/b").is_err());
    }
}
