//! Figures keyed by a pair of names ((node, SKU), (SKU, node)), looked up
//! by borrowed names. A gate rebuild looks up some ten figures for each
//! (node, SKU) pair of the tenant, 100,000 pairs for a tenant of 2,000
//! SKUs at 50 nodes: with `std`'s map each lookup built its owned key, two
//! strings, and that was a tenth of the rebuild, which the tenant's
//! changes wait for.
use hashbrown::Equivalent;

/// A map keyed by a pair of names.
pub type PairMap<V> = hashbrown::HashMap<(String, String), V>;

/// A pair of names to look up by. It hashes as the `(String, String)` it
/// stands for (each field in turn, a `str` as a `String`), as
/// [`Equivalent`] requires.
#[derive(Hash)]
struct Pair<'a>(&'a str, &'a str);

impl Equivalent<(String, String)> for Pair<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// The value of `(a, b)`, if any.
pub fn find<'m, V>(map: &'m PairMap<V>, a: &str, b: &str) -> Option<&'m V> {
    map.get(&Pair(a, b))
}

/// The figure of `(a, b)`; 0 when there is none.
pub fn figure(map: &PairMap<i64>, a: &str, b: &str) -> i64 {
    find(map, a, b).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_names_find_what_owned_ones_keyed() {
        let mut m = PairMap::new();
        m.insert(("DC1".to_string(), "SKU".to_string()), 3);
        m.insert((String::new(), "SKU".to_string()), 5);
        assert_eq!(figure(&m, "DC1", "SKU"), 3);
        assert_eq!(figure(&m, "", "SKU"), 5);
        // The boundary between the names counts.
        assert_eq!(figure(&m, "DC1S", "KU"), 0);
        assert_eq!(figure(&m, "SKU", "DC1"), 0);
    }
}
