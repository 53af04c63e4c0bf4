use crate::gate::Line;
use oms_kernel::Violations;
use oms_proto::inventory::{Allocation, CreateReservationRequest, ReservationLine};
use prost::Message;
use sha2::{Digest, Sha256};
use std::time::Duration;

pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_LINES: usize = 200;
/// Most units of one line or entry: beyond any real order, and far below
/// where the gate's Lua numbers (doubles) lose integer precision.
const MAX_LINE_UNITS: i64 = 1_000_000;

/// Most entries of a change request (allocations over many nodes).
const MAX_ENTRIES: usize = 1000;

/// A reservation's time to live, as a create or a renewal gives it.
pub fn check_ttl(d: &prost_types::Duration) -> Result<Duration, &'static str> {
    Duration::try_from(*d)
        .ok()
        .filter(|t| *t >= Duration::from_millis(100) && *t <= MAX_TTL)
        .ok_or("must be between 100ms and 7 days")
}

/// A parsed CreateReservation request.
#[derive(Debug, Clone)]
pub struct NewReservation {
    pub id: String,
    pub lines: Vec<ReservationLine>,
    pub ttl: Duration,
    pub reference: String,
    /// Channel id (without `channels/`), when the channel's rule applies.
    pub channel: Option<String>,
    /// The backorder source it is for (`backorders_of`); empty: none.
    pub backorders_of: String,
    /// Fingerprint of the request: a reused id with another request is refused.
    pub request_hash: String,
}

impl NewReservation {
    pub fn parse(req: &CreateReservationRequest) -> Result<NewReservation, Violations> {
        let mut v = Violations::new();
        let id = &req.reservation_id;
        if id.is_empty() {
            v.add("reservation_id", "is required");
        } else if id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic() && c != '/') {
            v.add(
                "reservation_id",
                "must be 1-128 printable ASCII characters without spaces or '/'",
            );
        }
        if req.lines.is_empty() {
            v.add("lines", "at least one line is required");
        }
        if req.lines.len() > MAX_LINES {
            v.add("lines", format!("at most {MAX_LINES} lines"));
        }
        let mut lines = Vec::with_capacity(req.lines.len());
        for (i, l) in req.lines.iter().enumerate() {
            v.check(format!("lines[{i}].sku"), super::check_sku(&l.sku));
            if !l.node_id.is_empty() {
                v.check(
                    format!("lines[{i}].node_id"),
                    super::check_node_id(&l.node_id),
                );
            }
            if l.quantity <= 0 {
                v.add(format!("lines[{i}].quantity"), "must be positive");
            } else if l.quantity > MAX_LINE_UNITS {
                v.add(
                    format!("lines[{i}].quantity"),
                    format!("must be at most {MAX_LINE_UNITS}"),
                );
            }
            lines.push(ReservationLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                node_id: l.node_id.clone(),
                quantity_released: 0,
                allocations: vec![],
            });
        }
        let ttl = match &req.ttl {
            None => DEFAULT_TTL,
            Some(d) if d.seconds == 0 && d.nanos == 0 => DEFAULT_TTL,
            Some(d) => v.check("ttl", check_ttl(d)).unwrap_or(DEFAULT_TTL),
        };
        let channel = if req.channel.is_empty() {
            None
        } else {
            v.check("channel", oms_kernel::parse_name(&req.channel, "channels"))
                .map(str::to_owned)
        };
        if req.reference.len() > 200 {
            v.add("reference", "must be at most 200 characters");
        }
        if !req.backorders_of.is_empty() {
            v.check("backorders_of", super::check_source(&req.backorders_of));
        }
        let request_hash = hex::encode(&Sha256::digest(req.encode_to_vec())[..16]);
        v.into_result(NewReservation {
            id: id.clone(),
            lines,
            ttl,
            reference: req.reference.clone(),
            channel,
            backorders_of: req.backorders_of.clone(),
            request_hash,
        })
    }

    pub fn gate_lines(&self) -> Vec<Line> {
        self.lines
            .iter()
            .map(|l| Line {
                sku: l.sku.clone(),
                node: l.node_id.clone(),
                q: l.quantity,
                lot: String::new(),
                serials: vec![],
            })
            .collect()
    }

    pub fn skus(&self) -> Vec<String> {
        let mut s: Vec<String> = self.lines.iter().map(|l| l.sku.clone()).collect();
        s.sort();
        s.dedup();
        s
    }
}

/// What the entries of a change request are for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Entries {
    /// ConfirmReservation's `allocations`.
    Allocations,
    /// ReleaseReservation's `lines`; none releases everything left.
    Release,
    /// ConsumeAllocations' `shipped`.
    Shipped,
    /// ExtendReservation's `lines`.
    Extension,
}

impl Entries {
    pub fn field(self) -> &'static str {
        match self {
            Entries::Allocations => "allocations",
            Entries::Shipped => "shipped",
            Entries::Release | Entries::Extension => "lines",
        }
    }
}

/// Parses the allocation entries of a change request. Allocations and
/// shipments name their node; only shipments name lots and serial numbers
/// (the units that left), which elsewhere would be silently ignored.
pub fn parse_entries(kind: Entries, entries: &[Allocation]) -> Result<Vec<Line>, Violations> {
    let field = kind.field();
    let need_node = matches!(kind, Entries::Allocations | Entries::Shipped);
    let mut v = Violations::new();
    match kind {
        _ if !entries.is_empty() => {}
        Entries::Release => {}
        Entries::Extension => v.add(field, "at least one entry is required (or a ttl, to renew)"),
        _ => v.add(field, "at least one entry is required"),
    }
    if entries.len() > MAX_ENTRIES {
        v.add(field, format!("at most {MAX_ENTRIES} entries"));
    }
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        v.check(format!("{field}[{i}].sku"), super::check_sku(&e.sku));
        if need_node || !e.node_id.is_empty() {
            v.check(
                format!("{field}[{i}].node_id"),
                super::check_node_id(&e.node_id),
            );
        }
        if e.quantity <= 0 {
            v.add(format!("{field}[{i}].quantity"), "must be positive");
        } else if e.quantity > MAX_LINE_UNITS {
            v.add(
                format!("{field}[{i}].quantity"),
                format!("must be at most {MAX_LINE_UNITS}"),
            );
        }
        if kind != Entries::Shipped {
            if !e.lot.is_empty() {
                v.add(
                    format!("{field}[{i}].lot"),
                    "only shipped units name a lot (ConsumeAllocations)",
                );
            }
            if !e.serial_numbers.is_empty() {
                v.add(
                    format!("{field}[{i}].serial_numbers"),
                    "only shipped units name serial numbers (ConsumeAllocations)",
                );
            }
        }
        out.push(Line {
            sku: e.sku.clone(),
            node: e.node_id.clone(),
            q: e.quantity,
            lot: e.lot.clone(),
            serials: e.serial_numbers.clone(),
        });
    }
    v.into_result(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> CreateReservationRequest {
        CreateReservationRequest {
            reservation_id: "r-1".into(),
            lines: vec![ReservationLine {
                sku: "SKU-1".into(),
                quantity: 2,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_hash() {
        let r = NewReservation::parse(&req()).unwrap();
        assert_eq!(r.ttl, DEFAULT_TTL);
        assert_eq!(
            r.request_hash,
            NewReservation::parse(&req()).unwrap().request_hash
        );
        let mut other = req();
        other.lines[0].quantity = 3;
        assert_ne!(
            r.request_hash,
            NewReservation::parse(&other).unwrap().request_hash
        );
    }

    #[test]
    fn refuses_bad_lines() {
        let mut r = req();
        r.reservation_id.clear();
        r.lines[0].quantity = 0;
        r.lines.push(ReservationLine {
            sku: "".into(),
            quantity: -1,
            node_id: "bad node".into(),
            ..Default::default()
        });
        r.ttl = Some(prost_types::Duration {
            seconds: -5,
            nanos: 0,
        });
        let err = NewReservation::parse(&r).unwrap_err();
        let f: Vec<_> = err.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(err.0[0].description, "is required");
        assert_eq!(
            f,
            [
                "reservation_id",
                "lines[0].quantity",
                "lines[1].sku",
                "lines[1].node_id",
                "lines[1].quantity",
                "ttl"
            ]
        );
    }

    #[test]
    fn a_reservation_id_given_but_malformed_says_what_it_must_be() {
        for id in ["a b", "a/b", &"x".repeat(129)] {
            let mut r = req();
            r.reservation_id = id.to_owned();
            let err = NewReservation::parse(&r).unwrap_err();
            assert_eq!(err.0[0].field, "reservation_id");
            assert_eq!(
                err.0[0].description,
                "must be 1-128 printable ASCII characters without spaces or '/'"
            );
        }
    }

    #[test]
    fn only_shipped_units_name_lots_and_serials() {
        let entry = Allocation {
            sku: "S".into(),
            node_id: "DC1".into(),
            quantity: 1,
            lot: "L1".into(),
            serial_numbers: vec!["X".into()],
            ..Default::default()
        };
        let fields = |kind: Entries| -> Vec<String> {
            match parse_entries(kind, std::slice::from_ref(&entry)) {
                Ok(_) => vec![],
                Err(v) => v.0.into_iter().map(|v| v.field).collect(),
            }
        };
        assert!(fields(Entries::Shipped).is_empty());
        assert_eq!(
            fields(Entries::Allocations),
            ["allocations[0].lot", "allocations[0].serial_numbers"]
        );
        assert_eq!(
            fields(Entries::Release),
            ["lines[0].lot", "lines[0].serial_numbers"]
        );
        assert_eq!(fields(Entries::Extension).len(), 2);
        assert!(parse_entries(Entries::Release, &[]).is_ok());
        // Beyond what the gate's numbers hold exactly: refused up front
        // (it answered "unavailable" to an extension of i64::MAX).
        let huge = Allocation {
            quantity: i64::MAX,
            ..Default::default()
        };
        let err = parse_entries(Entries::Extension, &[huge]).unwrap_err();
        let found: Vec<String> = err.0.into_iter().map(|v| v.field).collect();
        assert_eq!(found, ["lines[0].sku", "lines[0].quantity"]);
        assert!(parse_entries(Entries::Extension, &[]).is_err());
    }
}
