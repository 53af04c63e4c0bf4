//! Small pure types shared by every OMS service. Nothing here does I/O.
//!
//! Requests are parsed into these types once, at the gRPC edge; problems are
//! collected as [`Violations`] so a caller learns every bad field at once.

mod dates;
mod ids;
mod page;
mod violations;

pub use dates::check_date;
pub use ids::{
    RequestId, Tenant, check_country_code, check_id, check_label, check_sku, parse_name,
    parse_skus, parse_uuid_name, target_id,
};
pub use page::{PageSize, PageToken, Paging, fingerprint};
pub use violations::{Violation, Violations};
