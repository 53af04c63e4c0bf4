use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Serialize, de::DeserializeOwned};

/// A page size taken from a request: 0 means the default, anything above
/// the maximum is refused (AIP-158 allows clamping; refusing tells the
/// caller plainly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(pub u32);

impl PageSize {
    pub fn parse(requested: i32, default: u32, max: u32) -> Result<Self, String> {
        match requested {
            0 => Ok(Self(default)),
            n if n < 0 => Err("page_size must not be negative".into()),
            n if n as u32 > max => Err(format!("page_size must be at most {max}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_bounds() {
        assert_eq!(PageSize::parse(0, 50, 500), Ok(PageSize(50)));
        assert_eq!(PageSize::parse(10, 50, 500), Ok(PageSize(10)));
        assert!(PageSize::parse(-1, 50, 500).is_err());
        assert!(PageSize::parse(501, 50, 500).is_err());
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
