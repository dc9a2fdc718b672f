//! weed's IP white list (`[guard] white_list` of `security.toml`, `WEED_GUARD_WHITE_LIST`,
//! weed volume's `-whiteList`): comma-separated IP addresses and CIDR ranges. When it
//! is not empty, uploads (POST/PUT) and deletes from any other address get weed's bare
//! `401`; reads, `/status` and the health pages stay open, as in weed.
//!
//! weed takes the address from the TCP connection only (never `X-Forwarded-For`, which
//! a client can forge), and so do we. Two deliberate differences make a typo fail
//! loudly instead of opening the server: weed skips an entry it cannot parse (so a
//! list of only bad CIDRs guards nothing) and compares plain IP entries as text (so
//! `" 10.0.0.1"` never matches); we trim blanks around entries and refuse to start on
//! an entry that is neither an IP address nor a CIDR range.

use std::fmt;
use std::net::IpAddr;

/// One allowed address or range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Ip(IpAddr),
    /// A network address (host bits cleared) and its prefix length.
    Net(IpAddr, u8),
}

/// The addresses allowed to write and delete. Empty: everyone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WhiteList {
    entries: Vec<Entry>,
}

/// An entry of a white list that is neither an IP address nor a CIDR range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("white list entry {0:?} is neither an IP address nor a CIDR range")]
pub struct BadEntry(pub String);

impl WhiteList {
    /// A comma-separated list; empty entries are skipped.
    pub fn parse(text: &str) -> Result<Self, BadEntry> {
        let entries = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| parse_entry(entry).ok_or_else(|| BadEntry(entry.to_owned())))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Adds the entries of `other` (weed joins `-whiteList` and the file's list).
    pub fn extend(&mut self, other: WhiteList) {
        self.entries.extend(other.entries);
    }

    /// Whether no list is in force (everyone may write).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a connection from `peer` may write and delete.
    pub fn allows(&self, peer: IpAddr) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; Go reports them as
        // plain IPv4, and lists are written that way.
        let peer = peer.to_canonical();
        self.entries.iter().any(|entry| match *entry {
            Entry::Ip(ip) => ip == peer,
            Entry::Net(net, prefix) => masked(peer, prefix) == Some(net),
        })
    }
}

impl fmt::Display for WhiteList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.entries.iter().enumerate() {
            let separator = if i == 0 { "" } else { "," };
            match entry {
                Entry::Ip(ip) => write!(f, "{separator}{ip}")?,
                Entry::Net(net, prefix) => write!(f, "{separator}{net}/{prefix}")?,
            }
        }
        Ok(())
    }
}

fn parse_entry(entry: &str) -> Option<Entry> {
    let Some((addr, prefix)) = entry.split_once('/') else {
        return entry.parse::<IpAddr>().ok().map(|ip| Entry::Ip(ip.to_canonical()));
    };
    let addr: IpAddr = addr.parse().ok()?;
    // Go's ParseCIDR: decimal digits only, at most the address width.
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    Some(Entry::Net(masked(addr, prefix)?, prefix))
}

/// `addr` with all but its first `prefix` bits cleared; None if `prefix` is wider than
/// the address.
fn masked(addr: IpAddr, prefix: u8) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(v4) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::from((u32::from(v4) & mask).to_be_bytes()))
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            Some(IpAddr::from((u128::from(v6) & mask).to_be_bytes()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_empty_list_allows_everyone() {
        for text in ["", " ", ",", " , ,"] {
            let list = WhiteList::parse(text).unwrap();
            assert!(list.is_empty(), "{text:?}");
            assert!(list.allows(ip("203.0.113.9")));
        }
    }

    #[test]
    fn addresses_and_ranges_are_matched() {
        let list = WhiteList::parse("127.0.0.1, 10.1.0.0/16,192.168.7.77/24 ,::1,fd00::/8").unwrap();
        assert_eq!(list.to_string(), "127.0.0.1,10.1.0.0/16,192.168.7.0/24,::1,fd00::/8");
        for allowed in ["127.0.0.1", "10.1.255.3", "192.168.7.1", "::1", "fd12::5", "::ffff:10.1.0.9"] {
            assert!(list.allows(ip(allowed)), "{allowed}");
        }
        for refused in ["127.0.0.2", "10.2.0.1", "192.168.8.1", "::2", "fe80::1", "::ffff:127.0.0.2"] {
            assert!(!list.allows(ip(refused)), "{refused}");
        }
        // /0 is everyone of that family; /32 one address.
        let wide = WhiteList::parse("0.0.0.0/0").unwrap();
        assert!(wide.allows(ip("198.51.100.1")) && !wide.allows(ip("::1")));
        let one = WhiteList::parse("198.51.100.1/32").unwrap();
        assert!(one.allows(ip("198.51.100.1")) && !one.allows(ip("198.51.100.2")));
        // A list given as ::ffff:a.b.c.d means the IPv4 address.
        assert!(WhiteList::parse("::ffff:127.0.0.1").unwrap().allows(ip("127.0.0.1")));
    }

    #[test]
    fn entries_that_are_no_address_stop_the_server_instead_of_opening_it() {
        for bad in
            ["localhost", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0/8", "10.0.0.0/+8", "1.2.3.4/8/8"]
        {
            assert_eq!(WhiteList::parse(&format!("127.0.0.1,{bad}")), Err(BadEntry(bad.to_owned())), "{bad}");
        }
    }

    #[test]
    fn lists_join() {
        let mut list = WhiteList::parse("127.0.0.1").unwrap();
        list.extend(WhiteList::parse("10.0.0.0/8").unwrap());
        assert!(list.allows(ip("127.0.0.1")) && list.allows(ip("10.9.9.9")) && !list.allows(ip("11.0.0.1")));
    }
}
