//! MovieLens ml-latest-small (the 2016 snapshot: 100,004 ratings by 671
//! users of 9,066 movies) as typed records, read from the `movielens` data
//! frame in the R package dslabs (Debian `r-cran-dslabs`, see
//! `shared/DATA.md`), so no CSV download is needed.
//!
//! The data frame has one row per rating, with the movie's fields repeated
//! on every row: movieId, title, year, genres (a factor of `|`-joined genre
//! lists), userId, rating, timestamp. We split it into one [`Movie`] per
//! distinct movieId and the [`Rating`]s in file order. The reader accepts
//! either storage R may use for a column: title and genres as a factor
//! (integer codes into `levels`) or as a character vector, numbers as
//! integers or doubles. `NA`s: a movie takes the first title and year that
//! are not `NA` among its rows (a title that is `NA` everywhere becomes
//! "", a year `None`); an `NA` genre list means no genres; an `NA` in an id,
//! a rating or a timestamp is an error.

use crate::rdata::{self, RObject, RValue, NA_INTEGER};
use crate::{RecsysError, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// One movie.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Movie {
    pub id: u32,
    pub title: String,
    pub year: Option<u16>,
    /// Genre names, as listed ("(no genres listed)" gives none).
    pub genres: Vec<String>,
}

/// One rating: a user gave a movie 0.5 to 5 stars at a Unix time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    pub user_id: u32,
    pub movie_id: u32,
    pub rating: f32,
    /// Seconds since 1970-01-01 UTC.
    pub timestamp: i64,
}

/// The data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovieLens {
    /// One per distinct movieId, by ascending id.
    pub movies: Vec<Movie>,
    /// In file order.
    pub ratings: Vec<Rating>,
}

/// The name of the object in the dslabs lazy-load database.
const OBJECT: &str = "movielens";
/// The genre list of a movie without genres.
const NO_GENRES: &str = "(no genres listed)";

impl MovieLens {
    /// Reads the dslabs `data` folder (the one holding `Rdata.rdx` and
    /// `Rdata.rdb`).
    pub fn load(dir: &Path) -> Result<Self> {
        let df = rdata::read_lazy_load(dir, OBJECT)?;
        Self::from_data_frame(&df)
            .map_err(|e| RecsysError::Data(format!("{} `{OBJECT}`: {e}", dir.display())))
    }

    /// Where `make models` puts the dslabs data: `<cache>/data/dslabs`.
    pub fn default_dir() -> PathBuf {
        models::loader::cache_dir().join("data/dslabs")
    }

    /// [`load`](Self::load) from [`default_dir`](Self::default_dir), with a
    /// clear error when the data has not been fetched.
    pub fn load_default() -> Result<Self> {
        let dir = Self::default_dir();
        if !dir.join("Rdata.rdb").is_file() || !dir.join("Rdata.rdx").is_file() {
            return Err(RecsysError::Data(format!(
                "MovieLens (the dslabs R data) is not in {} yet: run `make models` to fetch it",
                dir.display()
            )));
        }
        Self::load(&dir)
    }

    /// Builds the records from the `movielens` data frame.
    pub fn from_data_frame(df: &RObject) -> Result<Self> {
        let movie_ids = ids(df, "movieId")?;
        let titles = strings(df, "title")?;
        let years = numbers(df, "year")?;
        let genres = strings(df, "genres")?;
        let user_ids = ids(df, "userId")?;
        let stars = numbers(df, "rating")?;
        let times = numbers(df, "timestamp")?;
        let n = movie_ids.len();
        for (name, len) in [
            ("title", titles.len()),
            ("year", years.len()),
            ("genres", genres.len()),
            ("userId", user_ids.len()),
            ("rating", stars.len()),
            ("timestamp", times.len()),
        ] {
            if len != n {
                return Err(RecsysError::Data(format!(
                    "column `{name}` has {len} rows, `movieId` has {n}"
                )));
            }
        }

        let mut ratings = Vec::with_capacity(n);
        let mut movies: BTreeMap<u32, Movie> = BTreeMap::new();
        for row in 0..n {
            let missing = |col: &str| RecsysError::Data(format!("row {}: `{col}` is NA", row + 1));
            let rating = stars[row].ok_or_else(|| missing("rating"))?;
            let timestamp = times[row].ok_or_else(|| missing("timestamp"))?;
            if timestamp.fract() != 0.0 || timestamp.abs() > 1e15 {
                return Err(RecsysError::Data(format!(
                    "row {}: bad timestamp {timestamp}",
                    row + 1
                )));
            }
            ratings.push(Rating {
                user_id: user_ids[row],
                movie_id: movie_ids[row],
                rating: rating as f32,
                timestamp: timestamp as i64,
            });
            let movie = movies.entry(movie_ids[row]).or_insert_with(|| Movie {
                id: movie_ids[row],
                title: String::new(),
                year: None,
                genres: split_genres(genres[row]),
            });
            if movie.title.is_empty() {
                if let Some(t) = titles[row] {
                    movie.title = t.to_string();
                }
            }
            if movie.year.is_none() {
                movie.year = years[row]
                    .filter(|y| y.fract() == 0.0)
                    .and_then(|y| u16::try_from(y as i64).ok());
            }
        }
        Ok(Self {
            movies: movies.into_values().collect(),
            ratings,
        })
    }

    /// The number of distinct users.
    pub fn num_users(&self) -> usize {
        self.ratings
            .iter()
            .map(|r| r.user_id)
            .collect::<HashSet<_>>()
            .len()
    }

    /// Every genre that some movie has, sorted.
    pub fn all_genres(&self) -> Vec<String> {
        self.movies
            .iter()
            .flat_map(|m| m.genres.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The movie with this id (binary search over the sorted movies).
    pub fn movie(&self, id: u32) -> Option<&Movie> {
        self.movies
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| &self.movies[i])
    }
}

/// Splits a `|`-joined genre list; `NA` and "(no genres listed)" give none.
fn split_genres(list: Option<&str>) -> Vec<String> {
    match list {
        None | Some(NO_GENRES) | Some("") => Vec::new(),
        Some(s) => s.split('|').map(str::to_string).collect(),
    }
}

/// The column `name` of a data frame.
fn column<'a>(df: &'a RObject, name: &str) -> Result<&'a RObject> {
    if !matches!(df.value, RValue::List(_)) {
        return Err(RecsysError::Data(format!(
            "expected a data frame, found a {}",
            df.type_name()
        )));
    }
    df.get(name)
        .ok_or_else(|| RecsysError::Data(format!("no column `{name}`")))
}

/// A numeric column (integer or double) as `f64`s, `NA` as `None`.
fn numbers(df: &RObject, name: &str) -> Result<Vec<Option<f64>>> {
    let col = column(df, name)?;
    match &col.value {
        RValue::Int(v) if !col.is_factor() => Ok(v
            .iter()
            .map(|&x| (x != NA_INTEGER).then_some(x as f64))
            .collect()),
        RValue::Real(v) => Ok(v.iter().map(|&x| (!x.is_nan()).then_some(x)).collect()),
        _ => Err(RecsysError::Data(format!(
            "column `{name}` is a {}{}, not numbers",
            col.type_name(),
            if col.is_factor() { " factor" } else { "" }
        ))),
    }
}

/// An id column: numbers that must be present, whole and fit a `u32`.
fn ids(df: &RObject, name: &str) -> Result<Vec<u32>> {
    numbers(df, name)?
        .into_iter()
        .enumerate()
        .map(|(row, x)| match x {
            Some(x) if x.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&x) => Ok(x as u32),
            Some(x) => Err(RecsysError::Data(format!(
                "row {}: `{name}` {x} is not an id",
                row + 1
            ))),
            None => Err(RecsysError::Data(format!(
                "row {}: `{name}` is NA",
                row + 1
            ))),
        })
        .collect()
}

/// A text column, stored as a factor (codes into `levels`, 1-based) or as a
/// character vector; `NA` as `None`.
fn strings<'a>(df: &'a RObject, name: &str) -> Result<Vec<Option<&'a str>>> {
    let col = column(df, name)?;
    match &col.value {
        RValue::Str(v) => Ok(v.iter().map(|s| s.as_deref()).collect()),
        RValue::Int(codes) => {
            let Some(RValue::Str(levels)) = col.attr("levels").map(|l| &l.value) else {
                return Err(RecsysError::Data(format!(
                    "column `{name}` is integers without factor levels"
                )));
            };
            codes
                .iter()
                .enumerate()
                .map(|(row, &c)| {
                    if c == NA_INTEGER {
                        return Ok(None);
                    }
                    usize::try_from(c)
                        .ok()
                        .and_then(|c| c.checked_sub(1))
                        .and_then(|i| levels.get(i))
                        .map(|l| l.as_deref())
                        .ok_or_else(|| {
                            RecsysError::Data(format!(
                                "row {}: `{name}` code {c} is not one of its {} levels",
                                row + 1,
                                levels.len()
                            ))
                        })
                })
                .collect()
        }
        _ => Err(RecsysError::Data(format!(
            "column `{name}` is a {}, not text",
            col.type_name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(value: RValue) -> RObject {
        RObject::new(value)
    }

    fn strs(v: &[Option<&str>]) -> RValue {
        RValue::Str(v.iter().map(|s| s.map(str::to_string)).collect())
    }

    /// A 3-row `movielens`-shaped data frame, title as a factor this time.
    fn frame(title_na: bool) -> RObject {
        let mut title = obj(RValue::Int(vec![
            if title_na { NA_INTEGER } else { 2 },
            1,
            2,
        ]));
        title.attributes = vec![
            ("levels".into(), obj(strs(&[Some("Heat"), Some("Up")]))),
            ("class".into(), obj(strs(&[Some("factor")]))),
        ];
        let mut genres = obj(RValue::Int(vec![2, 1, 2]));
        genres.attributes = vec![
            (
                "levels".into(),
                obj(strs(&[Some(NO_GENRES), Some("Adventure|Animation")])),
            ),
            ("class".into(), obj(strs(&[Some("factor")]))),
        ];
        let cols = vec![
            obj(RValue::Int(vec![20, 10, 20])),
            title,
            obj(RValue::Int(vec![NA_INTEGER, 1995, 2009])),
            genres,
            obj(RValue::Int(vec![1, 1, 2])),
            obj(RValue::Real(vec![4.5, 3.0, 5.0])),
            obj(RValue::Real(vec![1e9, 1e9 + 1.0, 1.2e9])),
        ];
        let mut df = obj(RValue::List(cols));
        df.attributes = vec![(
            "names".into(),
            obj(strs(&[
                Some("movieId"),
                Some("title"),
                Some("year"),
                Some("genres"),
                Some("userId"),
                Some("rating"),
                Some("timestamp"),
            ])),
        )];
        df
    }

    #[test]
    fn builds_movies_and_ratings_from_a_frame() {
        let ml = MovieLens::from_data_frame(&frame(true)).unwrap();
        assert_eq!(ml.ratings.len(), 3);
        assert_eq!(
            ml.ratings[0],
            Rating {
                user_id: 1,
                movie_id: 20,
                rating: 4.5,
                timestamp: 1_000_000_000
            }
        );
        assert_eq!(ml.movies.len(), 2);
        assert_eq!(ml.movies[0].id, 10);
        assert!(ml.movies[0].genres.is_empty());
        let up = ml.movie(20).unwrap();
        // Title and year come from the first row where they are not NA.
        assert_eq!(up.title, "Up");
        assert_eq!(up.year, Some(2009));
        assert_eq!(up.genres, vec!["Adventure", "Animation"]);
        assert!(ml.movie(15).is_none());
        assert_eq!(ml.num_users(), 2);
        assert_eq!(ml.all_genres(), vec!["Adventure", "Animation"]);
    }

    #[test]
    fn refuses_na_ids_and_missing_columns() {
        let mut df = frame(false);
        if let RValue::List(cols) = &mut df.value {
            cols[4] = obj(RValue::Int(vec![1, NA_INTEGER, 2]));
        }
        let e = MovieLens::from_data_frame(&df).unwrap_err().to_string();
        assert!(e.contains("row 2") && e.contains("userId"), "{e}");
        if let RValue::List(cols) = &mut df.value {
            cols[4] = obj(RValue::Int(vec![1, 1, 2]));
            cols.pop();
        }
        let e = MovieLens::from_data_frame(&df).unwrap_err().to_string();
        assert!(e.contains("timestamp"), "{e}");
        let e = MovieLens::from_data_frame(&obj(RValue::Int(vec![1])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("data frame"), "{e}");
    }

    #[test]
    fn a_missing_folder_is_an_error() {
        let e = MovieLens::load(Path::new("/nonexistent/dslabs")).unwrap_err();
        assert!(e.to_string().contains("Rdata.rdx"), "{e}");
    }
}
