//! How a channel's SKUs name items: a channel SKU with a mapping names the
//! mapped item, any other names the item of the same SKU (a canonical
//! order may also name the item itself). Orders resolve their lines one
//! way, the availability feed publishes the other way.
use oms_proto::ingest::Channel;
use std::collections::BTreeMap;

pub struct ChannelSkus {
    /// Channel SKU → item SKU, as mapped.
    items: BTreeMap<String, String>,
    /// Item SKU → the channel SKUs mapped to it.
    channel_skus: BTreeMap<String, Vec<String>>,
}

impl ChannelSkus {
    pub fn of(channel: &Channel) -> ChannelSkus {
        let mut items = BTreeMap::new();
        let mut channel_skus: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in &channel.sku_mappings {
            items.insert(m.channel_sku.clone(), m.sku.clone());
        }
        for (c, s) in &items {
            channel_skus.entry(s.clone()).or_default().push(c.clone());
        }
        ChannelSkus {
            items,
            channel_skus,
        }
    }

    /// The item a channel SKU is mapped to, if it is.
    pub fn mapped(&self, channel_sku: &str) -> Option<&str> {
        self.items.get(channel_sku).map(String::as_str)
    }

    /// The item a channel SKU names.
    #[cfg(test)]
    fn item<'a>(&'a self, channel_sku: &'a str) -> &'a str {
        self.mapped(channel_sku).unwrap_or(channel_sku)
    }

    /// Every channel SKU that names `sku`, in order.
    pub fn channel_skus(&self, sku: &str) -> Vec<String> {
        let mut out = self.channel_skus.get(sku).cloned().unwrap_or_default();
        if !self.items.contains_key(sku) {
            out.push(sku.to_owned());
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_proto::ingest::SkuMapping;

    fn skus(pairs: &[(&str, &str)]) -> ChannelSkus {
        ChannelSkus::of(&Channel {
            sku_mappings: pairs
                .iter()
                .map(|(c, s)| SkuMapping {
                    channel_sku: c.to_string(),
                    sku: s.to_string(),
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn publishing_is_the_inverse_of_resolving() {
        // Two listings of item A; channel SKU "B" is a listing of item C.
        let s = skus(&[("SHOP-A", "A"), ("SHOP-A2", "A"), ("B", "C")]);
        assert_eq!(s.item("SHOP-A"), "A");
        assert_eq!(s.item("D"), "D");
        assert_eq!(s.channel_skus("A"), ["A", "SHOP-A", "SHOP-A2"]);
        // Item B has no listing of its own: "B" names item C.
        assert!(s.channel_skus("B").is_empty());
        assert_eq!(s.channel_skus("C"), ["B", "C"]);
        for item in ["A", "B", "C", "D"] {
            for c in s.channel_skus(item) {
                assert_eq!(s.item(&c), item);
            }
        }
    }
}
