//! Distance, and the reference carrier model routing ranks by: what a
//! parcel costs and how many days it travels for a distance and service
//! level. The figures are a documented model (README, "Routing"), not a
//! carrier's rate card; they order nodes sensibly until rate cards per
//! carrier are wired in.
use super::model::Geo;
use oms_proto::common::ServiceLevel;

const EARTH_RADIUS_KM: f64 = 6371.0;
/// Assumed when either end has no coordinates.
pub const UNKNOWN_DISTANCE_KM: f64 = 1000.0;

/// A point as a unit vector from the earth's centre. Nodes keep theirs, so
/// a distance costs one square root and one arcsine, no sines or cosines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit([f64; 3]);

impl Unit {
    pub fn of(g: Geo) -> Unit {
        let (lat, lon) = (g.lat.to_radians(), g.lon.to_radians());
        Unit([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()])
    }
}

/// Great-circle distance in kilometres, from the chord between the points
/// (accurate at every distance, unlike the law of cosines).
pub fn distance_between(a: Unit, b: Unit) -> f64 {
    let [x, y, z] = [a.0[0] - b.0[0], a.0[1] - b.0[1], a.0[2] - b.0[2]];
    let chord = (x * x + y * y + z * z).sqrt();
    // fdlibm's arcsine (libm crate), within an ulp of the platform's: for
    // arguments below 0.5 (distances below about 6,700 km) a few
    // multiplications and one division, where glibc's took 7 % of a
    // 1,000-node decision's clock for 2 % of its instructions (a long
    // chain of dependent steps).
    2.0 * EARTH_RADIUS_KM * libm::asin((chord / 2.0).min(1.0))
}

/// Great-circle distance in kilometres.
pub fn distance_km(a: Geo, b: Geo) -> f64 {
    distance_between(Unit::of(a), Unit::of(b))
}

/// Estimated cost of one parcel in minor units.
pub fn cost_minor(km: f64, level: ServiceLevel) -> f64 {
    let (base, per_km) = match level {
        ServiceLevel::SameDay => (2500.0, 3.0),
        ServiceLevel::NextDay => (1500.0, 1.2),
        ServiceLevel::Expedited => (900.0, 0.8),
        ServiceLevel::Standard | ServiceLevel::Unspecified => (450.0, 0.4),
    };
    base + per_km * km
}

/// Days in transit.
pub fn transit_days(km: f64, level: ServiceLevel) -> i64 {
    let per_day = match level {
        ServiceLevel::SameDay if km <= 50.0 => return 0,
        ServiceLevel::SameDay | ServiceLevel::NextDay => 1500.0,
        ServiceLevel::Expedited => 800.0,
        ServiceLevel::Standard | ServiceLevel::Unspecified => 400.0,
    };
    1 + (km / per_day) as i64
}

/// Days by which a node would miss the promise (0 when on time): work
/// ships today before the node's cut-off, else tomorrow, then travels.
/// Days are counted in the node's local time.
pub fn days_late(
    now_epoch_s: i64,
    utc_offset_minutes: i32,
    cutoff_minute: Option<u32>,
    km: f64,
    level: ServiceLevel,
    promise_epoch_s: i64,
) -> i64 {
    let offset = i64::from(utc_offset_minutes) * 60;
    let local_now = now_epoch_s + offset;
    let mut ship_day = local_now.div_euclid(86_400);
    let minute = local_now.rem_euclid(86_400) / 60;
    if cutoff_minute.is_some_and(|c| minute >= i64::from(c)) {
        ship_day += 1;
    }
    let arrive = ship_day + transit_days(km, level);
    let promised = (promise_epoch_s + offset).div_euclid(86_400);
    (arrive - promised).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_great_circle_kilometres() {
        let berlin = Geo {
            lat: 52.52,
            lon: 13.405,
        };
        let munich = Geo {
            lat: 48.137,
            lon: 11.575,
        };
        let d = distance_km(berlin, munich);
        assert!((d - 504.0).abs() < 5.0, "{d}");
        assert_eq!(distance_km(berlin, berlin), 0.0);
    }

    #[test]
    fn distances_agree_with_the_platform_arcsine() {
        // A grid over the globe, every pair: libm's arcsine against std's
        // (the platform's), within a few ulps of the distance.
        let points: Vec<Unit> = (-8..=8)
            .flat_map(|a| (-17..=17).map(move |o| (f64::from(a) * 11.0, f64::from(o) * 10.5)))
            .map(|(lat, lon)| Unit::of(Geo { lat, lon }))
            .collect();
        for a in &points {
            for b in &points {
                let d = distance_between(*a, *b);
                let [x, y, z] = [a.0[0] - b.0[0], a.0[1] - b.0[1], a.0[2] - b.0[2]];
                let chord = (x * x + y * y + z * z).sqrt();
                let platform = 2.0 * EARTH_RADIUS_KM * (chord / 2.0).min(1.0).asin();
                assert!(
                    (d - platform).abs() <= 4.0 * f64::EPSILON * platform.max(1.0),
                    "{d} {platform}"
                );
            }
        }
    }

    #[test]
    fn the_cut_off_moves_shipping_to_the_next_day() {
        // 2026-11-23 10:00 UTC; node in UTC+1, cut-off 12:00 local.
        let now = 1_795_428_000;
        let promise_tomorrow = now + 86_400;
        let on_time = days_late(
            now,
            60,
            Some(12 * 60),
            100.0,
            ServiceLevel::NextDay,
            promise_tomorrow,
        );
        assert_eq!(on_time, 0);
        // Cut-off 10:30 local is past (11:00 local): ships tomorrow, a day late.
        let late = days_late(
            now,
            60,
            Some(10 * 60 + 30),
            100.0,
            ServiceLevel::NextDay,
            promise_tomorrow,
        );
        assert_eq!(late, 1);
        // Standard over 900 km takes three days.
        assert_eq!(transit_days(900.0, ServiceLevel::Standard), 3);
        assert_eq!(transit_days(20.0, ServiceLevel::SameDay), 0);
    }
}
