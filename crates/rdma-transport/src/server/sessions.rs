//! The session table: at most `max` sessions in all and `max_per_peer` per client
//! address, each dropped once unused for `idle_timeout`. A place is reserved before the
//! session's queue pair is made (so a refused client costs no verbs object), and every
//! session leaving the table is handed back to the caller, who drops it (destroying its
//! queue pair) after letting the table's lock go. Generic over what a session holds, so
//! the limits are tested without a device.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Why a session was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the server has its most RDMA sessions ({0}) open")]
    Full(usize),
    #[error("this client address has its most RDMA sessions ({0}) open")]
    PeerFull(usize),
}

/// A place in the table, held while the session's queue pair is made; give it to
/// [`SessionTable::insert`] or [`SessionTable::cancel`].
#[derive(Debug)]
#[must_use]
pub struct Reservation {
    peer: Option<IpAddr>,
}

struct Entry<T> {
    last_used: Instant,
    peer: Option<IpAddr>,
    value: T,
}

/// Sessions by id.
pub struct SessionTable<T> {
    max: usize,
    max_per_peer: usize,
    idle_timeout: Duration,
    sessions: HashMap<u64, Entry<T>>,
    /// Open sessions and reservations per client address (`None`: unknown address).
    per_peer: HashMap<Option<IpAddr>, usize>,
    reserved: usize,
}

impl<T> std::fmt::Debug for SessionTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTable").field("sessions", &self.sessions.len()).finish_non_exhaustive()
    }
}

impl<T> SessionTable<T> {
    pub fn new(max: usize, max_per_peer: usize, idle_timeout: Duration) -> Self {
        Self {
            max,
            max_per_peer,
            idle_timeout,
            sessions: HashMap::new(),
            per_peer: HashMap::new(),
            reserved: 0,
        }
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

    /// Reserves a place for a session of `peer` (after dropping the expired ones, which
    /// are returned for the caller to drop), or says why there is none.
    pub fn reserve(&mut self, peer: Option<IpAddr>, now: Instant) -> (Result<Reservation, Refusal>, Vec<T>) {
        let expired = self.expire(now, |_| false);
        if self.sessions.len() + self.reserved >= self.max {
            return (Err(Refusal::Full(self.max)), expired);
        }
        let of_peer = self.per_peer.entry(peer).or_default();
        if *of_peer >= self.max_per_peer {
            return (Err(Refusal::PeerFull(self.max_per_peer)), expired);
        }
        *of_peer += 1;
        self.reserved += 1;
        (Ok(Reservation { peer }), expired)
    }

    /// Gives a reservation back unused.
    pub fn cancel(&mut self, reservation: Reservation) {
        self.reserved -= 1;
        self.release_peer(reservation.peer);
    }

    /// Adds a session in its reserved place, under a fresh random id.
    pub fn insert(&mut self, reservation: Reservation, value: T, now: Instant) -> u64 {
        self.reserved -= 1;
        let id = loop {
            let id = rand::random::<u64>();
            if id != 0 && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.sessions.insert(id, Entry { last_used: now, peer: reservation.peer, value });
        id
    }

    /// The session `id`, marked used at `now`. `Err(Some(session))`: it had expired and
    /// left the table here (the caller drops it); `Err(None)`: unknown.
    pub fn touch(&mut self, id: u64, now: Instant) -> Result<&T, Option<T>> {
        let Some(entry) = self.sessions.get(&id) else { return Err(None) };
        if now.duration_since(entry.last_used) > self.idle_timeout {
            return Err(self.remove(id));
        }
        let entry = self.sessions.get_mut(&id).expect("present");
        entry.last_used = now;
        Ok(&entry.value)
    }

    pub fn remove(&mut self, id: u64) -> Option<T> {
        let entry = self.sessions.remove(&id)?;
        self.release_peer(entry.peer);
        Some(entry.value)
    }

    /// Removes and returns the sessions unused for longer than the idle timeout, and
    /// those `void` says are over (a token past its `exp`).
    pub fn expire(&mut self, now: Instant, void: impl Fn(&T) -> bool) -> Vec<T> {
        let idle = self.idle_timeout;
        let ids: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, e)| now.duration_since(e.last_used) > idle || void(&e.value))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Every session, for a pass over all of them (e.g. to drop expired grants).
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.sessions.values().map(|e| &e.value)
    }

    fn release_peer(&mut self, peer: Option<IpAddr>) {
        if let Some(n) = self.per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    fn open<T>(
        table: &mut SessionTable<T>,
        peer: Option<IpAddr>,
        value: T,
        now: Instant,
    ) -> Result<u64, Refusal> {
        let (reservation, expired) = table.reserve(peer, now);
        drop(expired);
        Ok(table.insert(reservation?, value, now))
    }

    #[test]
    fn limits_touches_and_expiry() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(10);
        let mut table = SessionTable::new(2, 2, idle);
        let a = open(&mut table, A, "a", t0).unwrap();
        let b = open(&mut table, A, "b", t0).unwrap();
        assert_ne!(a, b);
        assert_eq!(open(&mut table, B, "c", t0), Err(Refusal::Full(2)), "the table is full");

        // `a` is used at +8 s, `b` is not: at +15 s only `b` has been idle for > 10 s.
        assert_eq!(table.touch(a, t0 + Duration::from_secs(8)), Ok(&"a"));
        assert_eq!(table.expire(t0 + Duration::from_secs(15), |_| false), vec!["b"]);
        assert_eq!(table.touch(b, t0 + Duration::from_secs(15)), Err(None));
        assert_eq!(table.len(), 1);

        // Room again; and an expired session found by touch leaves the table there.
        let c = open(&mut table, B, "c", t0 + Duration::from_secs(15)).unwrap();
        assert_eq!(table.touch(a, t0 + Duration::from_secs(19)), Err(Some("a")), "idle since +8 s");
        assert_eq!(table.len(), 1);
        assert_eq!(table.remove(c), Some("c"));
        assert_eq!(table.remove(c), None);
        assert!(table.is_empty());
    }

    #[test]
    fn a_full_table_makes_room_by_expiring_first() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(1, 1, Duration::from_secs(1));
        open(&mut table, A, 1, t0).unwrap();
        let (reservation, expired) = table.reserve(A, t0 + Duration::from_secs(2));
        assert_eq!(expired, vec![1], "handed back, to be dropped outside the lock");
        table.insert(reservation.unwrap(), 2, t0 + Duration::from_secs(2));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn one_address_cannot_take_every_place_and_reservations_count() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(4, 2, Duration::from_secs(60));
        open(&mut table, A, 1, t0).unwrap();
        let (held, _) = table.reserve(A, t0);
        let held = held.unwrap();
        assert_eq!(open(&mut table, A, 3, t0), Err(Refusal::PeerFull(2)), "a reservation counts");
        open(&mut table, B, 4, t0).unwrap();
        table.cancel(held);
        let id = open(&mut table, A, 5, t0).unwrap();
        assert_eq!(open(&mut table, A, 6, t0), Err(Refusal::PeerFull(2)));
        table.remove(id);
        open(&mut table, A, 7, t0).unwrap();
        // Sessions whose token ran out go with the idle ones.
        let gone = table.expire(t0, |v| *v == 7);
        assert_eq!(gone, vec![7]);
        assert_eq!(table.len(), 2);
    }
}
