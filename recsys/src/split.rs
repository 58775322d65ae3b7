//! The leave-last-out split of `shared/BASELINES.md`, over dense indices.
//!
//! Every rating is an interaction (its value is ignored). Per user, the
//! interactions are sorted by (timestamp, movieId); a user with at least
//! `min_interactions` of them holds out the last one as the test item and
//! trains on the rest; a user with fewer trains on all of them and has no
//! test item. On MovieLens with a minimum of 5 this gives 671 test pairs
//! and 99,333 training pairs over all 9,066 movies.
//!
//! Why dense indices: models want embedding rows, not ids, so users and
//! items are numbered 0.. in ascending id order, and [`Split`] keeps the
//! maps back to ids.
//!
//! Duplicate (user, movie) pairs, if the data had any, would count once:
//! the earliest by (timestamp, movieId) is kept and the later ones dropped,
//! so a held-out movie never also sits in that user's training list.
//! (ml-latest-small has none.)

use crate::movielens::MovieLens;
use std::collections::{HashMap, HashSet};

/// Users and items as dense indices, with each user's training items and
/// held-out test item.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// User index -> userId, ascending.
    pub user_ids: Vec<u32>,
    /// Item index -> movieId, ascending: every movie of the data set, rated
    /// in training or not.
    pub item_ids: Vec<u32>,
    /// Per user index: training item indices in time order (timestamp, then
    /// movieId).
    pub train: Vec<Vec<u32>>,
    /// Per user index: the held-out item index, `None` for a user with
    /// fewer than the minimum interactions (all of theirs are training).
    pub test: Vec<Option<u32>>,
}

impl Split {
    /// Splits `ml` leaving each user's last interaction out when the user
    /// has at least `min_interactions` distinct movies (a minimum of 0 acts
    /// as 1; a minimum of 1 can leave a user with no training item).
    pub fn leave_last_out(ml: &MovieLens, min_interactions: usize) -> Split {
        let mut item_ids: Vec<u32> = ml.movies.iter().map(|m| m.id).collect();
        // Ratings of a movie missing from `movies` still get an item index.
        item_ids.extend(ml.ratings.iter().map(|r| r.movie_id));
        item_ids.sort_unstable();
        item_ids.dedup();
        let mut user_ids: Vec<u32> = ml.ratings.iter().map(|r| r.user_id).collect();
        user_ids.sort_unstable();
        user_ids.dedup();

        let user_index: HashMap<u32, usize> =
            user_ids.iter().enumerate().map(|(i, &u)| (u, i)).collect();
        let mut events: Vec<Vec<(i64, u32)>> = vec![Vec::new(); user_ids.len()];
        for r in &ml.ratings {
            // Every user id was collected above.
            if let Some(&u) = user_index.get(&r.user_id) {
                events[u].push((r.timestamp, r.movie_id));
            }
        }

        let index_of = |movie: u32| item_ids.binary_search(&movie).ok().map(|i| i as u32);
        let mut train = Vec::with_capacity(user_ids.len());
        let mut test = Vec::with_capacity(user_ids.len());
        for mut ev in events {
            ev.sort_unstable();
            let mut seen = HashSet::with_capacity(ev.len());
            let mut items: Vec<u32> = ev
                .into_iter()
                .filter(|&(_, m)| seen.insert(m))
                .filter_map(|(_, m)| index_of(m))
                .collect();
            let held = if items.len() >= min_interactions.max(1) {
                items.pop()
            } else {
                None
            };
            train.push(items);
            test.push(held);
        }
        Split {
            user_ids,
            item_ids,
            train,
            test,
        }
    }

    /// The number of users.
    pub fn num_users(&self) -> usize {
        self.user_ids.len()
    }

    /// The number of items.
    pub fn num_items(&self) -> usize {
        self.item_ids.len()
    }

    /// The dense index of a movieId.
    pub fn item_index(&self, movie_id: u32) -> Option<u32> {
        self.item_ids
            .binary_search(&movie_id)
            .ok()
            .map(|i| i as u32)
    }

    /// The dense index of a userId.
    pub fn user_index(&self, user_id: u32) -> Option<usize> {
        self.user_ids.binary_search(&user_id).ok()
    }

    /// The number of training (user, item) pairs.
    pub fn num_train(&self) -> usize {
        self.train.iter().map(Vec::len).sum()
    }

    /// (user index, held-out item index) for every user with a test item.
    pub fn test_users(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.test
            .iter()
            .enumerate()
            .filter_map(|(u, t)| t.map(|t| (u, t)))
    }

    /// Per item index: how many training pairs it appears in.
    pub fn item_popularity(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.item_ids.len()];
        for &i in self.train.iter().flatten() {
            counts[i as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::movielens::{Movie, Rating};

    fn movie(id: u32) -> Movie {
        Movie {
            id,
            title: format!("m{id}"),
            year: None,
            genres: Vec::new(),
        }
    }

    fn rating(user_id: u32, movie_id: u32, timestamp: i64) -> Rating {
        Rating {
            user_id,
            movie_id,
            rating: 3.0,
            timestamp,
        }
    }

    /// User 7: five ratings with a timestamp tie at the end (movies 30 and
    /// 20 at t=50: movie 30 is last). User 3: three ratings. User 9: five
    /// ratings including movie 10 twice. Movie 99 is never rated.
    fn tiny() -> MovieLens {
        MovieLens {
            movies: [10, 20, 30, 40, 50, 60, 99].map(movie).to_vec(),
            ratings: vec![
                rating(7, 30, 50),
                rating(7, 10, 10),
                rating(3, 40, 5),
                rating(7, 20, 50),
                rating(7, 40, 20),
                rating(7, 50, 30),
                rating(3, 10, 6),
                rating(9, 10, 1),
                rating(9, 20, 2),
                rating(9, 10, 3),
                rating(9, 30, 4),
                rating(9, 40, 5),
                rating(9, 50, 6),
                rating(3, 50, 7),
            ],
        }
    }

    #[test]
    fn holds_out_each_eligible_users_latest_item() {
        let ml = tiny();
        let s = Split::leave_last_out(&ml, 5);
        assert_eq!(s.user_ids, vec![3, 7, 9]);
        assert_eq!(s.item_ids, vec![10, 20, 30, 40, 50, 60, 99]);
        let ids = |v: &[u32]| {
            v.iter()
                .map(|&i| s.item_ids[i as usize])
                .collect::<Vec<_>>()
        };

        // User 7: sorted (10,10) (20,40) (30,50) (50,20) (50,30): the tie at
        // t=50 goes to the larger movieId.
        let u7 = s.user_index(7).unwrap();
        assert_eq!(s.test[u7], s.item_index(30));
        assert_eq!(ids(&s.train[u7]), vec![10, 40, 50, 20]);

        // User 3 has 3 interactions: no test item, all are training.
        let u3 = s.user_index(3).unwrap();
        assert_eq!(s.test[u3], None);
        assert_eq!(ids(&s.train[u3]), vec![40, 10, 50]);

        // User 9 rated movie 10 twice: it counts once (the first time), so
        // 5 distinct movies remain and the last, 50, is held out.
        let u9 = s.user_index(9).unwrap();
        assert_eq!(s.test[u9], s.item_index(50));
        assert_eq!(ids(&s.train[u9]), vec![10, 20, 30, 40]);

        for (u, t) in s.test_users() {
            assert!(!s.train[u].contains(&t), "user {u} trains on its test item");
        }
        assert_eq!(s.test_users().count(), 2);
        assert_eq!(s.num_train(), 4 + 3 + 4);
        assert_eq!(s.item_popularity(), vec![3, 2, 1, 3, 2, 0, 0]);
        assert_eq!(s.item_index(99), Some(6));
        assert_eq!(s.item_index(15), None);
    }

    #[test]
    fn the_minimum_decides_who_is_tested() {
        let ml = tiny();
        let s = Split::leave_last_out(&ml, 3);
        assert_eq!(s.test_users().count(), 3);
        let u3 = s.user_index(3).unwrap();
        assert_eq!(s.test[u3], s.item_index(50));
        let s = Split::leave_last_out(&ml, 6);
        assert_eq!(s.test_users().count(), 0);
        assert_eq!(s.num_train(), 5 + 3 + 5);
        // A minimum of 0 acts as 1: a single interaction is held out.
        let one = MovieLens {
            movies: vec![movie(1)],
            ratings: vec![rating(1, 1, 0)],
        };
        let s = Split::leave_last_out(&one, 0);
        assert_eq!(s.test, vec![Some(0)]);
        assert_eq!(s.train, vec![Vec::<u32>::new()]);
    }
}
