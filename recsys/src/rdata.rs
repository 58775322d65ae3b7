//! A reader for R's serialization format and its lazy-load databases, enough
//! to read data sets that R packages ship (data frames, factors, vectors,
//! lists), without R.
//!
//! Why: the MovieLens snapshot we use ships inside the Debian package
//! `r-cran-dslabs`, as an R lazy-load database: `Rdata.rdx`, a gzip-compressed
//! serialized index, and `Rdata.rdb`, the objects, each one a 4-byte
//! big-endian uncompressed length followed by a zlib stream holding a
//! serialized object.
//!
//! The format (R's `serialize.c`, "XDR" binary, versions 2 and 3): the bytes
//! `X\n`, then three big-endian integers (format version, writer's R version,
//! oldest R version that can read it); version 3 adds the native encoding as
//! a length-prefixed string. Then one item. Every item starts with an integer
//! of flags: the SEXP type in the low 8 bits, bit 8 "is an object", bit 9
//! "has attributes", bit 10 "has a tag" (pairlist cells), and for a
//! reference (type 255) the 1-based index into the table of symbols and
//! environments read so far in the high bits (0 means the index follows as
//! its own integer). Vectors are a length (-1 announces a 64-bit length in two
//! integers) and their elements, all big-endian; a string element is a
//! CHARSXP whose length -1 is `NA`; attributes follow the vector as a
//! pairlist whose tags are the attribute names.
//!
//! Not supported, with a clear error: functions, bytecode, external
//! pointers, S4 objects, bzip2 or xz compressed databases, and the ASCII and
//! native-binary formats. Bad bytes give an error naming the byte offset,
//! never a panic.

mod lazyload;
mod parse;

pub use lazyload::{lazy_load_names, read_lazy_load};
pub use parse::parse;

/// R's integer `NA`, as it appears in [`RValue::Int`] (and in factor codes).
pub const NA_INTEGER: i32 = i32::MIN;

/// One R value without its attributes. Element `NA`s: `None` for logicals
/// and strings, [`NA_INTEGER`] for integers, a NaN for reals.
#[derive(Debug, Clone, PartialEq)]
pub enum RValue {
    /// `NULL`.
    Null,
    /// A symbol (a name), e.g. a pairlist tag.
    Symbol(String),
    Logical(Vec<Option<bool>>),
    Int(Vec<i32>),
    Real(Vec<f64>),
    Str(Vec<Option<String>>),
    Raw(Vec<u8>),
    /// A generic vector (`list()`, data frames).
    List(Vec<RObject>),
    /// A pairlist: cells with optional tags (attribute lists, env frames).
    PairList(Vec<(Option<String>, RObject)>),
    /// A language object (an unevaluated call), stored as its cells.
    Lang(Vec<(Option<String>, RObject)>),
    /// An environment: its bindings (frame and hash table merged, in stream
    /// order) and whether it was locked. Its enclosing environment is read
    /// and dropped.
    Env {
        locked: bool,
        bindings: Vec<(String, RObject)>,
    },
    /// One of R's built-in environments: `global`, `base`, `empty` or
    /// `base namespace`.
    SpecialEnv(&'static str),
    /// A package environment, named by its specification strings.
    Package(Vec<Option<String>>),
    /// A namespace, named by its specification strings (name, version).
    Namespace(Vec<Option<String>>),
    /// A value written by a persistence hook (lazy-load writes environments
    /// this way), named by its strings; the hook is not run.
    Persist(Vec<Option<String>>),
    /// R's missing-argument marker.
    MissingArg,
    /// R's unbound-value marker.
    UnboundValue,
}

/// A value with its attributes (`names`, `class`, `levels`, `row.names`, …)
/// in stream order.
#[derive(Debug, Clone, PartialEq)]
pub struct RObject {
    pub value: RValue,
    pub attributes: Vec<(String, RObject)>,
}

impl RObject {
    /// A value without attributes.
    pub fn new(value: RValue) -> Self {
        Self {
            value,
            attributes: Vec::new(),
        }
    }

    /// The attribute `name`, if set.
    pub fn attr(&self, name: &str) -> Option<&RObject> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The `names` attribute as strings, if it is a character vector.
    pub fn names(&self) -> Option<&[Option<String>]> {
        match self.attr("names").map(|a| &a.value) {
            Some(RValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The `class` attribute (empty when unset).
    pub fn class(&self) -> Vec<&str> {
        match self.attr("class").map(|a| &a.value) {
            Some(RValue::Str(s)) => s.iter().flatten().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether this is a factor: integer codes with a `levels` attribute.
    pub fn is_factor(&self) -> bool {
        matches!(self.value, RValue::Int(_)) && self.class().contains(&"factor")
    }

    /// The element named `name` of a named list, or the cell tagged `name`
    /// of a pairlist.
    pub fn get(&self, name: &str) -> Option<&RObject> {
        match &self.value {
            RValue::List(items) => {
                let i = self
                    .names()?
                    .iter()
                    .position(|n| n.as_deref() == Some(name))?;
                items.get(i)
            }
            RValue::PairList(cells) => cells
                .iter()
                .find(|(t, _)| t.as_deref() == Some(name))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The number of elements of a vector, list or pairlist (0 otherwise).
    pub fn len(&self) -> usize {
        match &self.value {
            RValue::Logical(v) => v.len(),
            RValue::Int(v) => v.len(),
            RValue::Real(v) => v.len(),
            RValue::Str(v) => v.len(),
            RValue::Raw(v) => v.len(),
            RValue::List(v) => v.len(),
            RValue::PairList(v) | RValue::Lang(v) => v.len(),
            _ => 0,
        }
    }

    /// Whether [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A short name of the value's kind, for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            RValue::Null => "NULL",
            RValue::Symbol(_) => "symbol",
            RValue::Logical(_) => "logical",
            RValue::Int(_) => "integer",
            RValue::Real(_) => "double",
            RValue::Str(_) => "character",
            RValue::Raw(_) => "raw",
            RValue::List(_) => "list",
            RValue::PairList(_) => "pairlist",
            RValue::Lang(_) => "language",
            RValue::Env { .. } | RValue::SpecialEnv(_) => "environment",
            RValue::Package(_) | RValue::Namespace(_) => "environment",
            RValue::Persist(_) => "persistent reference",
            RValue::MissingArg | RValue::UnboundValue => "marker",
        }
    }
}

#[cfg(test)]
mod tests;
