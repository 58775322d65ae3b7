//! A bucket quadtree over planar points (metres), with radius and
//! k-nearest queries, plus the naive full scan.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A point in a local planar frame, in metres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    pub fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }

    /// Squared Euclidean distance.
    pub fn dist2(&self, o: &Point) -> f64 {
        let (dx, dy) = (self.x - o.x, self.y - o.y);
        dx * dx + dy * dy
    }

    fn is_finite(&self) -> bool {
        self.x.is_finite() && self.y.is_finite()
    }
}

/// An axis-aligned rectangle, bounds included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub min: Point,
    pub max: Point,
}

impl Rect {
    /// `None` unless the corners are finite and `min <= max`.
    pub fn new(min_x: f64, min_y: f64, max_x: f64, max_y: f64) -> Option<Self> {
        let (min, max) = (Point::new(min_x, min_y), Point::new(max_x, max_y));
        (min.is_finite() && max.is_finite() && min_x <= max_x && min_y <= max_y)
            .then_some(Self { min, max })
    }

    pub fn contains(&self, p: &Point) -> bool {
        p.x >= self.min.x && p.x <= self.max.x && p.y >= self.min.y && p.y <= self.max.y
    }

    /// Squared distance from `p` to the nearest point of the rectangle (0
    /// inside): no point in the rectangle can be closer.
    pub fn min_dist2(&self, p: &Point) -> f64 {
        let dx = (self.min.x - p.x).max(0.0).max(p.x - self.max.x);
        let dy = (self.min.y - p.y).max(0.0).max(p.y - self.max.y);
        dx * dx + dy * dy
    }

    fn center(&self) -> Point {
        Point::new(
            (self.min.x + self.max.x) / 2.0,
            (self.min.y + self.max.y) / 2.0,
        )
    }

    /// Quadrant `q` (bit 0: east half, bit 1: north half).
    fn quadrant(&self, q: usize) -> Rect {
        let c = self.center();
        let (x0, x1) = if q & 1 == 0 {
            (self.min.x, c.x)
        } else {
            (c.x, self.max.x)
        };
        let (y0, y1) = if q & 2 == 0 {
            (self.min.y, c.y)
        } else {
            (c.y, self.max.y)
        };
        Rect {
            min: Point::new(x0, y0),
            max: Point::new(x1, y1),
        }
    }
}

/// Which quadrant of `r` holds `p` (points on the midlines go east/north).
fn quadrant_of(r: &Rect, p: &Point) -> usize {
    let c = r.center();
    (p.x >= c.x) as usize | ((p.y >= c.y) as usize) << 1
}

/// An `f64` ordered by `total_cmp`, for heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ord64(f64);
impl Eq for Ord64 {}
impl PartialOrd for Ord64 {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ord64 {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0)
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Leaf(Vec<(u32, Point)>),
    Inner([u32; 4]),
}

#[derive(Debug, Clone)]
struct QNode {
    rect: Rect,
    depth: u32,
    kind: Kind,
}

/// Why a point was not inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("point is not finite")]
    NotFinite,
    #[error("point lies outside the tree's bounds")]
    OutOfBounds,
}

/// A bucket (point-region) quadtree: every node covers a rectangle; a leaf
/// holds up to `capacity` points and splits into four equal quadrants when
/// it overflows (unless at `max_depth`, where it just grows, so duplicate
/// points cannot recurse forever). Nodes live in a `Vec` arena.
#[derive(Debug, Clone)]
pub struct QuadTree {
    nodes: Vec<QNode>,
    capacity: usize,
    max_depth: u32,
    len: usize,
}

impl QuadTree {
    /// An empty tree over `bounds`; `capacity` is at least 1.
    pub fn new(bounds: Rect, capacity: usize) -> Self {
        Self {
            nodes: vec![QNode {
                rect: bounds,
                depth: 0,
                kind: Kind::Leaf(Vec::new()),
            }],
            capacity: capacity.max(1),
            max_depth: 24,
            len: 0,
        }
    }

    /// Builds from points numbered by their position; points outside
    /// `bounds` or not finite are skipped (their ids are simply absent).
    pub fn build(bounds: Rect, capacity: usize, points: &[Point]) -> Self {
        let mut t = Self::new(bounds, capacity);
        for (i, p) in points.iter().enumerate() {
            let _ = t.insert(i as u32, *p);
        }
        t
    }

    pub fn bounds(&self) -> Rect {
        self.nodes[0].rect
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of nodes (inner and leaves).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Depth of the deepest node (the root is 0).
    pub fn depth(&self) -> u32 {
        self.nodes.iter().map(|n| n.depth).max().unwrap_or(0)
    }

    /// Inserts point `p` with identifier `id`: `O(depth)`.
    pub fn insert(&mut self, id: u32, p: Point) -> Result<(), InsertError> {
        if !p.is_finite() {
            return Err(InsertError::NotFinite);
        }
        if !self.nodes[0].rect.contains(&p) {
            return Err(InsertError::OutOfBounds);
        }
        let mut n = 0usize;
        loop {
            let rect = self.nodes[n].rect;
            match &mut self.nodes[n].kind {
                Kind::Inner(children) => n = children[quadrant_of(&rect, &p)] as usize,
                Kind::Leaf(items) => {
                    items.push((id, p));
                    let over = items.len() > self.capacity;
                    self.len += 1;
                    if over && self.nodes[n].depth < self.max_depth {
                        self.split(n);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Turns leaf `n` into an inner node with four leaf children, moving
    /// its points down; a child that still overflows splits in turn.
    fn split(&mut self, n: usize) {
        let rect = self.nodes[n].rect;
        let depth = self.nodes[n].depth + 1;
        let first = self.nodes.len() as u32;
        let items = match std::mem::replace(
            &mut self.nodes[n].kind,
            Kind::Inner([first, first + 1, first + 2, first + 3]),
        ) {
            Kind::Leaf(items) => items,
            inner => {
                self.nodes[n].kind = inner;
                return;
            }
        };
        let mut parts: [Vec<(u32, Point)>; 4] = Default::default();
        for (id, p) in items {
            parts[quadrant_of(&rect, &p)].push((id, p));
        }
        for (q, part) in parts.into_iter().enumerate() {
            self.nodes.push(QNode {
                rect: rect.quadrant(q),
                depth,
                kind: Kind::Leaf(part),
            });
        }
        for c in first..first + 4 {
            let over =
                matches!(&self.nodes[c as usize].kind, Kind::Leaf(v) if v.len() > self.capacity);
            if over && depth < self.max_depth {
                self.split(c as usize);
            }
        }
    }

    /// Identifiers of the points within `radius` of `center` (boundary
    /// included), in no particular order. Skips every node whose rectangle
    /// is farther than `radius`.
    pub fn within_radius(&self, center: Point, radius: f64) -> Vec<u32> {
        let r2 = radius * radius;
        let mut out = Vec::new();
        if radius.is_nan() || radius < 0.0 || !center.is_finite() {
            return out;
        }
        let mut stack = vec![0u32];
        while let Some(n) = stack.pop() {
            let node = &self.nodes[n as usize];
            if node.rect.min_dist2(&center) > r2 {
                continue;
            }
            match &node.kind {
                Kind::Inner(c) => stack.extend_from_slice(c),
                Kind::Leaf(items) => out.extend(
                    items
                        .iter()
                        .filter(|(_, p)| p.dist2(&center) <= r2)
                        .map(|&(id, _)| id),
                ),
            }
        }
        out
    }

    /// The `k` points nearest to `center` as `(id, distance)`, nearest
    /// first (ties by id). Best-first search: nodes are visited in order of
    /// their rectangle's distance, and the search stops when the next node
    /// is farther than the current k-th best.
    pub fn nearest(&self, center: Point, k: usize) -> Vec<(u32, f64)> {
        if k == 0 || !center.is_finite() {
            return Vec::new();
        }
        let mut nodes: BinaryHeap<Reverse<(Ord64, u32)>> = BinaryHeap::new();
        // Max-heap of the best k so far, worst on top.
        let mut best: BinaryHeap<(Ord64, u32)> = BinaryHeap::with_capacity(k + 1);
        nodes.push(Reverse((Ord64(self.nodes[0].rect.min_dist2(&center)), 0)));
        while let Some(Reverse((Ord64(d), n))) = nodes.pop() {
            if best.len() == k && best.peek().is_some_and(|w| d > w.0 .0) {
                break;
            }
            match &self.nodes[n as usize].kind {
                Kind::Inner(c) => {
                    for &c in c {
                        let cd = self.nodes[c as usize].rect.min_dist2(&center);
                        nodes.push(Reverse((Ord64(cd), c)));
                    }
                }
                Kind::Leaf(items) => {
                    for &(id, p) in items {
                        let e = (Ord64(p.dist2(&center)), id);
                        if best.len() < k {
                            best.push(e);
                        } else if best.peek().is_some_and(|w| e < *w) {
                            best.pop();
                            best.push(e);
                        }
                    }
                }
            }
        }
        let mut out: Vec<(Ord64, u32)> = best.into_vec();
        out.sort();
        out.into_iter().map(|(d, id)| (id, d.0.sqrt())).collect()
    }
}

/// The naive way: every point within `radius` of `center`, by checking all.
pub fn scan_within_radius(points: &[Point], center: Point, radius: f64) -> Vec<u32> {
    let r2 = radius * radius;
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.dist2(&center) <= r2)
        .map(|(i, _)| i as u32)
        .collect()
}

/// The naive way: the `k` nearest by computing every distance (keeping
/// the best `k` in a bounded max-heap), nearest first (ties by id).
pub fn scan_nearest(points: &[Point], center: Point, k: usize) -> Vec<(u32, f64)> {
    if k == 0 {
        return Vec::new();
    }
    let mut best: BinaryHeap<(Ord64, u32)> = BinaryHeap::with_capacity(k + 1);
    for (i, p) in points.iter().enumerate() {
        let e = (Ord64(p.dist2(&center)), i as u32);
        if best.len() < k {
            best.push(e);
        } else if best.peek().is_some_and(|w| e < *w) {
            best.pop();
            best.push(e);
        }
    }
    let mut out = best.into_vec();
    out.sort();
    out.into_iter().map(|(d, id)| (id, d.0.sqrt())).collect()
}
