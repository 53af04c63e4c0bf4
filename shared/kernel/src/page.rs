use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Serialize, de::DeserializeOwned};

/// A page size taken from a request: 0 means the default, anything above
/// the maximum is the maximum (AIP-158: a generic client asking for a
/// thousand gets the pages the API gives, not an error), a negative one is
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(pub u32);

impl PageSize {
    pub fn parse(requested: i32, default: u32, max: u32) -> Result<Self, String> {
        match requested {
            0 => Ok(Self(default)),
            n if n < 0 => Err("page_size must not be negative".into()),
            n if n as u32 > max => Ok(Self(max)),
            n => Ok(Self(n as u32)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A stable fingerprint of a request's filters (its encoding with the
/// paging fields cleared), bound into page tokens.
pub fn fingerprint<M: prost::Message>(filters: &M) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(filters.encode_to_vec());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// An opaque page token: a keyset cursor plus a fingerprint of the filters
/// it was issued for, so a token reused with other filters is refused
/// instead of returning a wrong page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken<C> {
    pub cursor: C,
    pub filter_hash: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Wire<C> {
    c: C,
    f: u64,
}

impl<C: Serialize + DeserializeOwned> PageToken<C> {
    pub fn encode(cursor: C, filter_hash: u64) -> String {
        let json = serde_json::to_vec(&Wire {
            c: cursor,
            f: filter_hash,
        })
        .expect("page cursors serialize");
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes `token` issued for the same filters; empty means first page.
    pub fn decode(token: &str, filter_hash: u64) -> Result<Option<C>, String> {
        if token.is_empty() {
            return Ok(None);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| "page_token is not a token this API issued".to_string())?;
        let wire: Wire<C> = serde_json::from_slice(&bytes)
            .map_err(|_| "page_token is not a token this API issued".to_string())?;
        if wire.f != filter_hash {
            return Err("page_token was issued for other filters; repeat the first request".into());
        }
        Ok(Some(wire.c))
    }
}

/// One list request's paging: its limit and where it starts, parsed from
/// `page_size` and `page_token` (problems go to `v`), and the cutting of
/// the rows read (`limit + 1`, to know whether a next page exists).
#[derive(Debug, Clone)]
pub struct Paging<C> {
    pub limit: i64,
    pub after: Option<C>,
    filter_hash: u64,
}

impl<C: Serialize + DeserializeOwned> Paging<C> {
    pub fn parse(
        v: &mut crate::Violations,
        page_size: i32,
        page_token: &str,
        (default, max): (u32, u32),
        filter_hash: u64,
    ) -> Self {
        let size = v.check("page_size", PageSize::parse(page_size, default, max));
        let after = v
            .check(
                "page_token",
                PageToken::<C>::decode(page_token, filter_hash),
            )
            .flatten();
        Paging {
            limit: i64::from(size.unwrap_or(PageSize(default)).get()),
            after,
            filter_hash,
        }
    }

    /// How many rows to read: one more than a page.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// Cuts `rows` (read with [`Paging::fetch`]) to a page and returns the
    /// token of the next page, empty on the last.
    pub fn page<T>(&self, mut rows: Vec<T>, cursor: impl Fn(&T) -> C) -> (Vec<T>, String) {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let token = match rows.last() {
            Some(last) if more => PageToken::encode(cursor(last), self.filter_hash),
            _ => String::new(),
        };
        (rows, token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_cuts_pages_and_chains_tokens() {
        let mut v = crate::Violations::new();
        let p = Paging::<i64>::parse(&mut v, 2, "", (50, 500), 7);
        assert!(v.is_empty());
        assert_eq!(p.fetch(), 3);
        let (rows, token) = p.page(vec![1, 2, 3], |r| *r);
        assert_eq!(rows, [1, 2]);
        let next = Paging::<i64>::parse(&mut v, 2, &token, (50, 500), 7);
        assert_eq!(next.after, Some(2));
        let (rows, token) = next.page(vec![3], |r| *r);
        assert_eq!((rows, token), (vec![3], String::new()));
        Paging::<i64>::parse(&mut v, -1, "x", (50, 500), 7);
        assert_eq!(v.0.len(), 2);
    }

    #[test]
    fn page_size_bounds() {
        assert_eq!(PageSize::parse(0, 50, 500), Ok(PageSize(50)));
        assert_eq!(PageSize::parse(10, 50, 500), Ok(PageSize(10)));
        assert!(PageSize::parse(-1, 50, 500).is_err());
        assert_eq!(PageSize::parse(501, 50, 500), Ok(PageSize(500)));
        assert_eq!(PageSize::parse(i32::MAX, 50, 500), Ok(PageSize(500)));
    }

    #[test]
    fn token_round_trip_and_filter_guard() {
        let t = PageToken::encode(("2026-01-01".to_string(), 7u64), 42);
        assert_eq!(
            PageToken::<(String, u64)>::decode(&t, 42),
            Ok(Some(("2026-01-01".to_string(), 7)))
        );
        assert!(PageToken::<(String, u64)>::decode(&t, 43).is_err());
        assert!(PageToken::<(String, u64)>::decode("garbage!", 42).is_err());
        assert_eq!(PageToken::<(String, u64)>::decode("", 42), Ok(None));
    }
}
