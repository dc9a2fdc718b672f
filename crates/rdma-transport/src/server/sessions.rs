//! The session table: at most `max` sessions, each dropped (and with it its queue pair)
//! once unused for `idle_timeout`. Generic over what a session holds, so the limits are
//! tested without a device.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sessions by id.
#[derive(Debug)]
pub struct SessionTable<T> {
    max: usize,
    idle_timeout: Duration,
    sessions: HashMap<u64, (Instant, T)>,
}

impl<T> SessionTable<T> {
    pub fn new(max: usize, idle_timeout: Duration) -> Self {
        Self { max, idle_timeout, sessions: HashMap::new() }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Adds a session under a fresh random id (expired ones are dropped first); gives
    /// `value` back when the table is full.
    pub fn insert(&mut self, value: T, now: Instant) -> Result<u64, T> {
        drop(self.expire(now));
        if self.sessions.len() >= self.max {
            return Err(value);
        }
        let id = loop {
            let id = rand::random::<u64>();
            if id != 0 && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.sessions.insert(id, (now, value));
        Ok(id)
    }

    /// The session `id`, marked used at `now`; `None` if unknown or expired (an expired
    /// one is dropped here).
    pub fn touch(&mut self, id: u64, now: Instant) -> Option<&T> {
        let expired = {
            let (last_used, _) = self.sessions.get(&id)?;
            now.duration_since(*last_used) > self.idle_timeout
        };
        if expired {
            self.sessions.remove(&id);
            return None;
        }
        let (last_used, value) = self.sessions.get_mut(&id).expect("present");
        *last_used = now;
        Some(value)
    }

    pub fn remove(&mut self, id: u64) -> Option<T> {
        self.sessions.remove(&id).map(|(_, v)| v)
    }

    /// Removes and returns the sessions unused for longer than the idle timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<T> {
        let idle = self.idle_timeout;
        let ids: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, (t, _))| now.duration_since(*t) > idle)
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_touches_and_expiry() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(10);
        let mut table = SessionTable::new(2, idle);
        let a = table.insert("a", t0).unwrap();
        let b = table.insert("b", t0).unwrap();
        assert_ne!(a, b);
        assert_eq!(table.insert("c", t0), Err("c"), "the table is full");

        // `a` is used at +8 s, `b` is not: at +15 s only `b` has been idle for > 10 s.
        assert_eq!(table.touch(a, t0 + Duration::from_secs(8)), Some(&"a"));
        assert_eq!(table.expire(t0 + Duration::from_secs(15)), vec!["b"]);
        assert_eq!(table.touch(b, t0 + Duration::from_secs(15)), None);
        assert_eq!(table.len(), 1);

        // Room again; and an expired session found by touch is dropped there.
        let c = table.insert("c", t0 + Duration::from_secs(15)).unwrap();
        assert_eq!(table.touch(a, t0 + Duration::from_secs(19)), None, "idle since +8 s");
        assert_eq!(table.len(), 1);
        assert_eq!(table.remove(c), Some("c"));
        assert_eq!(table.remove(c), None);
        assert!(table.is_empty());
    }

    #[test]
    fn a_full_table_makes_room_by_expiring_first() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(1, Duration::from_secs(1));
        table.insert(1, t0).unwrap();
        assert!(table.insert(2, t0 + Duration::from_secs(2)).is_ok());
        assert_eq!(table.len(), 1);
    }
}
