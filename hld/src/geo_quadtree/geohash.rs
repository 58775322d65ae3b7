//! Geohash: latitude/longitude to a cell code by bit interleaving, and an
//! index that buckets points by cell (the way Redis GEO stores them).

use std::collections::HashMap;

use super::quadtree::{InsertError, Point};

/// A position in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

impl LatLon {
    pub fn new(lat: f64, lon: f64) -> Self {
        Self { lat, lon }
    }

    /// Finite, latitude in `[-90, 90]`, longitude in `[-180, 180]`.
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }
}

/// Metres per degree of latitude (WGS84 mean).
const M_PER_DEG_LAT: f64 = 110_574.0;
/// Metres per degree of longitude at the equator.
const M_PER_DEG_LON: f64 = 111_320.0;

/// Equirectangular projection around an origin: degrees to local metres.
/// Linear, and accurate to well under 1% across a city (tens of km).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Projection {
    origin: LatLon,
    kx: f64,
    ky: f64,
}

impl Projection {
    pub fn new(origin: LatLon) -> Self {
        Self {
            origin,
            kx: M_PER_DEG_LON * origin.lat.to_radians().cos(),
            ky: M_PER_DEG_LAT,
        }
    }

    pub fn to_point(&self, p: LatLon) -> Point {
        Point::new(
            (p.lon - self.origin.lon) * self.kx,
            (p.lat - self.origin.lat) * self.ky,
        )
    }

    pub fn to_latlon(&self, p: Point) -> LatLon {
        LatLon::new(
            self.origin.lat + p.y / self.ky,
            self.origin.lon + p.x / self.kx,
        )
    }

    /// `(degrees of latitude, degrees of longitude)` spanned by `m` metres.
    pub fn metres_to_degrees(&self, m: f64) -> (f64, f64) {
        (m / self.ky, m / self.kx)
    }
}

const BASE32: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// The cell number of `v` in `[lo, hi]` cut into `2^bits` equal cells.
fn cell_index(v: f64, lo: f64, hi: f64, bits: u32) -> u64 {
    let cells = (1u64 << bits) as f64;
    let i = ((v - lo) / (hi - lo) * cells).floor();
    (i.max(0.0) as u64).min((1u64 << bits) - 1)
}

/// Interleaves `lon_bits` bits of `lon_i` and `lat_bits` bits of `lat_i`,
/// longitude first (most significant).
fn interleave(lon_i: u64, lat_i: u64, lon_bits: u32, lat_bits: u32) -> u64 {
    let mut h = 0u64;
    for i in 0..lon_bits + lat_bits {
        let bit = if i % 2 == 0 {
            (lon_i >> (lon_bits - 1 - i / 2)) & 1
        } else {
            (lat_i >> (lat_bits - 1 - i / 2)) & 1
        };
        h = (h << 1) | bit;
    }
    h
}

/// Longitude and latitude bits of a `bits`-bit geohash.
fn split_bits(bits: u32) -> (u32, u32) {
    (bits.div_ceil(2), bits / 2)
}

/// The geohash of `p` as an integer of `bits` bits (1..=60): longitude and
/// latitude are halved alternately, each halving one bit (1 = upper half).
pub fn encode_bits(p: LatLon, bits: u32) -> Option<u64> {
    if !p.is_valid() || !(1..=60).contains(&bits) {
        return None;
    }
    let (lb, tb) = split_bits(bits);
    let lon_i = cell_index(p.lon, -180.0, 180.0, lb);
    let lat_i = if tb == 0 {
        0
    } else {
        cell_index(p.lat, -90.0, 90.0, tb)
    };
    Some(interleave(lon_i, lat_i, lb, tb))
}

/// The geohash of `p` as `chars` base-32 characters (1..=12).
pub fn encode(p: LatLon, chars: usize) -> Option<String> {
    if !(1..=12).contains(&chars) {
        return None;
    }
    let bits = 5 * chars as u32;
    let h = encode_bits(p, bits)?;
    Some(
        (0..chars)
            .map(|c| BASE32[((h >> (bits - 5 * (c as u32 + 1))) & 31) as usize] as char)
            .collect(),
    )
}

/// The cell a geohash names, as its `(south-west, north-east)` corners.
/// `None` for an empty, too long or non-base-32 code.
pub fn decode(hash: &str) -> Option<(LatLon, LatLon)> {
    if hash.is_empty() || hash.len() > 12 {
        return None;
    }
    let (mut lat, mut lon) = ((-90.0f64, 90.0f64), (-180.0f64, 180.0f64));
    let mut even = true;
    for ch in hash.bytes() {
        let v = BASE32.iter().position(|&b| b == ch.to_ascii_lowercase())?;
        for shift in (0..5).rev() {
            let bit = (v >> shift) & 1 == 1;
            let r = if even { &mut lon } else { &mut lat };
            let mid = (r.0 + r.1) / 2.0;
            if bit {
                r.0 = mid;
            } else {
                r.1 = mid;
            }
            even = !even;
        }
    }
    Some((LatLon::new(lat.0, lon.0), LatLon::new(lat.1, lon.1)))
}

/// Points bucketed by geohash cell. A radius query visits the cells that
/// the circle's bounding box overlaps and filters their points by exact
/// distance; a k-nearest query doubles the radius until `k` are found.
#[derive(Debug, Clone)]
pub struct GeohashIndex {
    proj: Projection,
    lon_bits: u32,
    lat_bits: u32,
    buckets: HashMap<u64, Vec<(u32, Point)>>,
    /// Occupied cell range: (lon min, lon max, lat min, lat max).
    occupied: Option<(u64, u64, u64, u64)>,
    len: usize,
}

impl GeohashIndex {
    /// An empty index with cells of `chars` geohash characters (clamped to
    /// 1..=12; 6 gives about 1.2 km x 0.6 km cells). Distances use `proj`.
    pub fn new(proj: Projection, chars: usize) -> Self {
        let (lon_bits, lat_bits) = split_bits(5 * chars.clamp(1, 12) as u32);
        Self {
            proj,
            lon_bits,
            lat_bits,
            buckets: HashMap::new(),
            occupied: None,
            len: 0,
        }
    }

    fn cell(&self, p: LatLon) -> (u64, u64) {
        (
            cell_index(p.lon, -180.0, 180.0, self.lon_bits),
            cell_index(p.lat, -90.0, 90.0, self.lat_bits),
        )
    }

    /// Cell width and height in metres (under the projection).
    pub fn cell_size_m(&self) -> (f64, f64) {
        let dlon = 360.0 / (1u64 << self.lon_bits) as f64;
        let dlat = 180.0 / (1u64 << self.lat_bits) as f64;
        (dlon * self.proj.kx, dlat * self.proj.ky)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of non-empty cells.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Adds point `id` at `p`: `O(1)`.
    pub fn insert(&mut self, id: u32, p: LatLon) -> Result<(), InsertError> {
        if !p.lat.is_finite() || !p.lon.is_finite() {
            return Err(InsertError::NotFinite);
        }
        if !p.is_valid() {
            return Err(InsertError::OutOfBounds);
        }
        let (x, y) = self.cell(p);
        let key = interleave(x, y, self.lon_bits, self.lat_bits);
        self.buckets
            .entry(key)
            .or_default()
            .push((id, self.proj.to_point(p)));
        self.occupied = Some(match self.occupied {
            None => (x, x, y, y),
            Some((a, b, c, d)) => (a.min(x), b.max(x), c.min(y), d.max(y)),
        });
        self.len += 1;
        Ok(())
    }

    /// `(squared distance, id)` of every point within `radius` metres, and
    /// whether the cells searched covered every occupied cell.
    fn within(&self, center: LatLon, radius: f64) -> (Vec<(f64, u32)>, bool) {
        let mut out = Vec::new();
        let Some((x0, x1, y0, y1)) = self.occupied else {
            return (out, true);
        };
        let c = self.proj.to_point(center);
        let r2 = radius * radius;
        // A hair wider than the circle, against rounding at the edge.
        let (dlat, dlon) = self.proj.metres_to_degrees(radius * (1.0 + 1e-9) + 1e-9);
        let lo = self.cell(LatLon::new(
            (center.lat - dlat).max(-90.0),
            (center.lon - dlon).max(-180.0),
        ));
        let hi = self.cell(LatLon::new(
            (center.lat + dlat).min(90.0),
            (center.lon + dlon).min(180.0),
        ));
        let (ax, bx) = (lo.0.max(x0), hi.0.min(x1));
        let (ay, by) = (lo.1.max(y0), hi.1.min(y1));
        let covered_all = lo.0 <= x0 && hi.0 >= x1 && lo.1 <= y0 && hi.1 >= y1;
        if ax > bx || ay > by {
            return (out, covered_all);
        }
        for x in ax..=bx {
            for y in ay..=by {
                let key = interleave(x, y, self.lon_bits, self.lat_bits);
                if let Some(items) = self.buckets.get(&key) {
                    for &(id, p) in items {
                        let d = p.dist2(&c);
                        if d <= r2 {
                            out.push((d, id));
                        }
                    }
                }
            }
        }
        (out, covered_all)
    }

    /// Identifiers of the points within `radius` metres, in no particular
    /// order.
    pub fn within_radius(&self, center: LatLon, radius: f64) -> Vec<u32> {
        if !center.is_valid() || radius.is_nan() || radius < 0.0 {
            return Vec::new();
        }
        self.within(center, radius)
            .0
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    }

    /// The `k` nearest points as `(id, metres)`, nearest first (ties by
    /// id): radius queries from one cell size, doubling until `k` points are
    /// inside (then the `k` nearest are all inside) or every cell was seen.
    pub fn nearest(&self, center: LatLon, k: usize) -> Vec<(u32, f64)> {
        if k == 0 || !center.is_valid() {
            return Vec::new();
        }
        let (w, h) = self.cell_size_m();
        let mut r = w.max(h);
        loop {
            let (mut found, all) = self.within(center, r);
            if all && found.len() < k {
                // Every cell was seen but some points lie beyond `r`: take
                // them all.
                let c = self.proj.to_point(center);
                found = self
                    .buckets
                    .values()
                    .flatten()
                    .map(|&(id, p)| (p.dist2(&c), id))
                    .collect();
            }
            if found.len() >= k || all || !r.is_finite() {
                let cmp = |a: &(f64, u32), b: &(f64, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                if found.len() > k {
                    found.select_nth_unstable_by(k - 1, cmp);
                    found.truncate(k);
                }
                found.sort_by(cmp);
                return found.into_iter().map(|(d, id)| (id, d.sqrt())).collect();
            }
            r *= 2.0;
        }
    }
}
