//! The stream parser: R's XDR serialization, one item at a time, with the
//! reference table of symbols and environments.

use super::{RObject, RValue, NA_INTEGER};
use crate::{RecsysError, Result};

// SEXP type codes (R's Rinternals.h and serialize.c).
const SYMSXP: u32 = 1;
const LISTSXP: u32 = 2;
const ENVSXP: u32 = 4;
const LANGSXP: u32 = 6;
const CHARSXP: u32 = 9;
const LGLSXP: u32 = 10;
const INTSXP: u32 = 13;
const REALSXP: u32 = 14;
const STRSXP: u32 = 16;
const VECSXP: u32 = 19;
const EXPRSXP: u32 = 20;
const RAWSXP: u32 = 24;
const ALTREP_SXP: u32 = 238;
const BASEENV_SXP: u32 = 241;
const EMPTYENV_SXP: u32 = 242;
const PERSISTSXP: u32 = 247;
const PACKAGESXP: u32 = 248;
const NAMESPACESXP: u32 = 249;
const BASENAMESPACE_SXP: u32 = 250;
const MISSINGARG_SXP: u32 = 251;
const UNBOUNDVALUE_SXP: u32 = 252;
const GLOBALENV_SXP: u32 = 253;
const NILVALUE_SXP: u32 = 254;
const REFSXP: u32 = 255;

// Bit 8 ("is an object") is not needed: the class attribute says as much.
const HAS_ATTR: u32 = 1 << 9;
const HAS_TAG: u32 = 1 << 10;
/// CHARSXP encoding bit (in the flags' "levels" field, shifted by 12).
const LATIN1_MASK: u32 = 1 << 2;

/// Deeper nesting than this is treated as corrupt input (it would otherwise
/// overflow the stack).
const MAX_DEPTH: usize = 256;

/// Parses one serialized R object (`X\n` header, format version 2 or 3).
/// Trailing bytes after the object are ignored, as R does.
pub fn parse(bytes: &[u8]) -> Result<RObject> {
    let mut r = Reader {
        buf: bytes,
        pos: 0,
        refs: Vec::new(),
    };
    match r.take(2)? {
        b"X\n" => {}
        b"A\n" => return Err(r.err("ASCII serialization is not supported (want XDR `X\\n`)")),
        b"B\n" => {
            return Err(r.err("native binary serialization is not supported (want XDR `X\\n`)"))
        }
        _ => return Err(r.err("not an R serialization stream (want the header `X\\n`)")),
    }
    let version = r.int()?;
    let _writer = r.int()?;
    let _min_reader = r.int()?;
    match version {
        2 => {}
        3 => {
            let n = r.len_i32()?;
            r.take(n)?; // the writer's native encoding, e.g. "UTF-8"
        }
        v => return Err(r.err(&format!("serialization format version {v} (want 2 or 3)"))),
    }
    r.item(0)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Symbols, environments and persistent references, in reading order;
    /// a REFSXP names one by its 1-based index.
    refs: Vec<RObject>,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: &str) -> RecsysError {
        RecsysError::Data(format!("R serialization at byte {}: {msg}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(&format!(
                "truncated input: need {n} bytes, {} left",
                self.buf.len() - self.pos
            ))),
        }
    }

    fn int(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-negative 32-bit length.
    fn len_i32(&mut self) -> Result<usize> {
        let n = self.int()?;
        usize::try_from(n).map_err(|_| self.err(&format!("negative length {n}")))
    }

    /// A vector length: -1 announces a 64-bit length in two integers. The
    /// length is checked against the bytes left (each element takes at
    /// least `min_elem` bytes), so corrupt input cannot ask for a huge
    /// allocation.
    fn vec_len(&mut self, min_elem: usize) -> Result<usize> {
        let n = self.int()?;
        let len = if n == -1 {
            let hi = self.int()? as u32 as u64;
            let lo = self.int()? as u32 as u64;
            usize::try_from((hi << 32) | lo).map_err(|_| self.err("vector too long"))?
        } else {
            usize::try_from(n).map_err(|_| self.err(&format!("negative length {n}")))?
        };
        let left = self.buf.len() - self.pos;
        if len.saturating_mul(min_elem) > left {
            return Err(self.err(&format!(
                "truncated input: a vector of {len} elements needs at least {} bytes, {left} left",
                len.saturating_mul(min_elem)
            )));
        }
        Ok(len)
    }

    fn item(&mut self, depth: usize) -> Result<RObject> {
        let at = self.pos;
        let flags = self.int()? as u32;
        self.item_with_flags(flags, at, depth)
    }

    fn item_with_flags(&mut self, flags: u32, at: usize, depth: usize) -> Result<RObject> {
        if depth > MAX_DEPTH {
            return Err(self.err(&format!("nesting deeper than {MAX_DEPTH}")));
        }
        let ty = flags & 0xFF;
        let has_attr = flags & HAS_ATTR != 0;
        let value = match ty {
            NILVALUE_SXP => return Ok(RObject::new(RValue::Null)),
            EMPTYENV_SXP => return Ok(RObject::new(RValue::SpecialEnv("empty"))),
            BASEENV_SXP => return Ok(RObject::new(RValue::SpecialEnv("base"))),
            GLOBALENV_SXP => return Ok(RObject::new(RValue::SpecialEnv("global"))),
            BASENAMESPACE_SXP => return Ok(RObject::new(RValue::SpecialEnv("base namespace"))),
            UNBOUNDVALUE_SXP => return Ok(RObject::new(RValue::UnboundValue)),
            MISSINGARG_SXP => return Ok(RObject::new(RValue::MissingArg)),
            REFSXP => {
                let mut index = (flags >> 8) as usize;
                if index == 0 {
                    index = self.len_i32()?;
                }
                return match index.checked_sub(1).and_then(|i| self.refs.get(i)) {
                    Some(o) => Ok(o.clone()),
                    None => Err(self.err(&format!(
                        "reference {index} out of range ({} read so far)",
                        self.refs.len()
                    ))),
                };
            }
            PERSISTSXP | PACKAGESXP | NAMESPACESXP => {
                let names = self.string_vec()?;
                let o = RObject::new(match ty {
                    PERSISTSXP => RValue::Persist(names),
                    PACKAGESXP => RValue::Package(names),
                    _ => RValue::Namespace(names),
                });
                self.refs.push(o.clone());
                return Ok(o);
            }
            SYMSXP => {
                let name = self.charsxp_item()?.unwrap_or_else(|| "NA".to_string());
                let o = RObject::new(RValue::Symbol(name));
                self.refs.push(o.clone());
                return Ok(o);
            }
            ENVSXP => return self.env(depth),
            LISTSXP | LANGSXP => return self.pairlist(flags, depth),
            ALTREP_SXP => return self.altrep(depth),
            CHARSXP => RValue::Str(vec![self.charsxp(flags)?]),
            LGLSXP => {
                let n = self.vec_len(4)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(match self.int()? {
                        NA_INTEGER => None,
                        x => Some(x != 0),
                    });
                }
                RValue::Logical(v)
            }
            INTSXP => {
                let n = self.vec_len(4)?;
                let b = self.take(n * 4)?;
                RValue::Int(
                    b.chunks_exact(4)
                        .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )
            }
            REALSXP => {
                let n = self.vec_len(8)?;
                let b = self.take(n * 8)?;
                RValue::Real(
                    b.chunks_exact(8)
                        .map(|c| {
                            f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                        })
                        .collect(),
                )
            }
            STRSXP => {
                let n = self.vec_len(4)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.charsxp_item()?);
                }
                RValue::Str(v)
            }
            VECSXP | EXPRSXP => {
                let n = self.vec_len(4)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.item(depth + 1)?);
                }
                RValue::List(v)
            }
            RAWSXP => {
                let n = self.vec_len(1)?;
                RValue::Raw(self.take(n)?.to_vec())
            }
            t => {
                self.pos = at;
                return Err(self.err(&format!(
                    "unknown or unsupported SEXP type {t} ({})",
                    sexp_name(t)
                )));
            }
        };
        let attributes = if has_attr {
            self.attributes(depth)?
        } else {
            Vec::new()
        };
        Ok(RObject { value, attributes })
    }

    /// Reads an attribute pairlist into (name, value) pairs.
    fn attributes(&mut self, depth: usize) -> Result<Vec<(String, RObject)>> {
        let at = self.pos;
        let list = self.item(depth + 1)?;
        match list.value {
            RValue::Null => Ok(Vec::new()),
            RValue::PairList(cells) => cells
                .into_iter()
                .map(|(tag, v)| match tag {
                    Some(t) => Ok((t, v)),
                    None => Err(RecsysError::Data(format!(
                        "R serialization at byte {at}: an attribute without a name"
                    ))),
                })
                .collect(),
            _ => Err(RecsysError::Data(format!(
                "R serialization at byte {at}: attributes are a {}, not a pairlist",
                list.type_name()
            ))),
        }
    }

    /// A CHARSXP body (after its flags): `None` for `NA_STRING`.
    fn charsxp(&mut self, flags: u32) -> Result<Option<String>> {
        let n = self.int()?;
        if n == -1 {
            return Ok(None);
        }
        let n = usize::try_from(n).map_err(|_| self.err(&format!("bad string length {n}")))?;
        let b = self.take(n)?;
        let latin1 = (flags >> 12) & LATIN1_MASK != 0;
        Ok(Some(if latin1 {
            b.iter().map(|&c| c as char).collect()
        } else {
            String::from_utf8_lossy(b).into_owned()
        }))
    }

    /// An item that must be a CHARSXP (a string element, a symbol's name).
    fn charsxp_item(&mut self) -> Result<Option<String>> {
        let at = self.pos;
        let flags = self.int()? as u32;
        if flags & 0xFF != CHARSXP {
            self.pos = at;
            return Err(self.err(&format!(
                "expected a string element (CHARSXP), found SEXP type {} ({})",
                flags & 0xFF,
                sexp_name(flags & 0xFF)
            )));
        }
        self.charsxp(flags)
    }

    /// The string vector of a PERSISTSXP, PACKAGESXP or NAMESPACESXP: a 0,
    /// a length, then the strings as items.
    fn string_vec(&mut self) -> Result<Vec<Option<String>>> {
        if self.int()? != 0 {
            return Err(self.err("a persistent string vector must start with 0"));
        }
        let n = self.vec_len(4)?;
        (0..n).map(|_| self.charsxp_item()).collect()
    }

    /// A pairlist or language object, read cell by cell without recursing
    /// on the tail (pairlists can be long). Attributes on the first cell are
    /// the object's; on later cells they are dropped.
    fn pairlist(&mut self, mut flags: u32, depth: usize) -> Result<RObject> {
        let kind = flags & 0xFF;
        let mut cells = Vec::new();
        let mut attributes = Vec::new();
        loop {
            if flags & HAS_ATTR != 0 {
                let a = self.attributes(depth)?;
                if cells.is_empty() {
                    attributes = a;
                }
            }
            let tag = if flags & HAS_TAG != 0 {
                let at = self.pos;
                match self.item(depth + 1)?.value {
                    RValue::Symbol(s) => Some(s),
                    RValue::Str(mut s) if s.len() == 1 => s.pop().flatten(),
                    RValue::Null => None,
                    _ => {
                        return Err(RecsysError::Data(format!(
                            "R serialization at byte {at}: a pairlist tag is not a symbol"
                        )))
                    }
                }
            } else {
                None
            };
            let car = self.item(depth + 1)?;
            cells.push((tag, car));
            let at = self.pos;
            let next = self.int()? as u32;
            match next & 0xFF {
                LISTSXP => flags = next,
                NILVALUE_SXP => break,
                t => {
                    self.pos = at;
                    return Err(self.err(&format!(
                        "a pairlist tail of SEXP type {t} ({}) is not supported",
                        sexp_name(t)
                    )));
                }
            }
        }
        let value = if kind == LANGSXP {
            RValue::Lang(cells)
        } else {
            RValue::PairList(cells)
        };
        Ok(RObject { value, attributes })
    }

    /// An environment: locked flag, then enclosure, frame, hash table and
    /// attributes. It enters the reference table before its contents are
    /// read (they may refer to it), as a placeholder replaced at the end.
    fn env(&mut self, depth: usize) -> Result<RObject> {
        let locked = self.int()? != 0;
        let slot = self.refs.len();
        self.refs.push(RObject::new(RValue::Env {
            locked,
            bindings: Vec::new(),
        }));
        let _enclos = self.item(depth + 1)?;
        let mut bindings = Vec::new();
        let frame = self.item(depth + 1)?;
        push_bindings(&mut bindings, frame);
        let hashtab = self.item(depth + 1)?;
        if let RValue::List(buckets) = hashtab.value {
            for b in buckets {
                push_bindings(&mut bindings, b);
            }
        }
        let attributes = self.attributes(depth)?;
        let o = RObject {
            value: RValue::Env { locked, bindings },
            attributes,
        };
        self.refs[slot] = o.clone();
        Ok(o)
    }

    /// An ALTREP object: class info, state, attributes. The classes that
    /// base R serializes this way for plain data are expanded to ordinary
    /// vectors; others are refused.
    fn altrep(&mut self, depth: usize) -> Result<RObject> {
        let at = self.pos;
        let info = self.item(depth + 1)?;
        let state = self.item(depth + 1)?;
        let attributes = match self.item(depth + 1)?.value {
            RValue::PairList(cells) => cells
                .into_iter()
                .filter_map(|(t, v)| t.map(|t| (t, v)))
                .collect(),
            _ => Vec::new(),
        };
        let class = match &info.value {
            RValue::PairList(cells) => match cells.first().map(|c| &c.1.value) {
                Some(RValue::Symbol(s)) => s.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let bad = |what: &str| {
            RecsysError::Data(format!(
                "R serialization at byte {at}: ALTREP class `{class}`: {what}"
            ))
        };
        let value = match class.as_str() {
            "compact_intseq" | "compact_realseq" => {
                let (n, start, step) = match &state.value {
                    RValue::Real(v) if v.len() == 3 => (v[0], v[1], v[2]),
                    RValue::Int(v) if v.len() == 3 => (v[0] as f64, v[1] as f64, v[2] as f64),
                    _ => return Err(bad("unexpected state")),
                };
                // A guard against corrupt input asking for a huge vector.
                if !(0.0..=(self.buf.len() as f64 * 64.0 + 1e6)).contains(&n) {
                    return Err(bad("implausible length"));
                }
                let seq = (0..n as usize).map(|i| start + step * i as f64);
                if class == "compact_intseq" {
                    RValue::Int(seq.map(|x| x as i32).collect())
                } else {
                    RValue::Real(seq.collect())
                }
            }
            c if c.starts_with("wrap_") => match state.value {
                RValue::List(mut v) if !v.is_empty() => v.swap_remove(0).value,
                _ => return Err(bad("unexpected state")),
            },
            _ => return Err(bad("not supported")),
        };
        Ok(RObject { value, attributes })
    }
}

/// Appends the tagged cells of an environment frame (a pairlist) to `out`.
fn push_bindings(out: &mut Vec<(String, RObject)>, frame: RObject) {
    if let RValue::PairList(cells) = frame.value {
        out.extend(cells.into_iter().filter_map(|(t, v)| t.map(|t| (t, v))));
    }
}

/// R's name for a SEXP type code, for error messages.
fn sexp_name(t: u32) -> &'static str {
    match t {
        0 => "NILSXP",
        1 => "SYMSXP",
        2 => "LISTSXP",
        3 => "CLOSXP",
        4 => "ENVSXP",
        5 => "PROMSXP",
        6 => "LANGSXP",
        7 => "SPECIALSXP",
        8 => "BUILTINSXP",
        9 => "CHARSXP",
        10 => "LGLSXP",
        13 => "INTSXP",
        14 => "REALSXP",
        15 => "CPLXSXP",
        16 => "STRSXP",
        17 => "DOTSXP",
        19 => "VECSXP",
        20 => "EXPRSXP",
        21 => "BCODESXP",
        22 => "EXTPTRSXP",
        23 => "WEAKREFSXP",
        24 => "RAWSXP",
        25 => "S4SXP",
        238 => "ALTREP_SXP",
        239 => "ATTRLISTSXP",
        240 => "ATTRLANGSXP",
        244 => "BCREPDEF",
        245 => "GENERICREFSXP",
        246 => "CLASSREFSXP",
        _ => "unknown",
    }
}
