//! Time-to-live as SeaweedFS stores it: two bytes, `[count, unit]`, in the superblock
//! and in needles that carry the TTL flag.

use crate::FormatError;
use std::fmt;
use std::str::FromStr;

/// The stored TTL units (byte values 0..=6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum TtlUnit {
    #[default]
    Empty = 0,
    Minute = 1,
    Hour = 2,
    Day = 3,
    Week = 4,
    /// 30 days.
    Month = 5,
    /// 365 days.
    Year = 6,
}

impl TtlUnit {
    const ALL: [TtlUnit; 7] = [
        TtlUnit::Empty,
        TtlUnit::Minute,
        TtlUnit::Hour,
        TtlUnit::Day,
        TtlUnit::Week,
        TtlUnit::Month,
        TtlUnit::Year,
    ];

    pub fn from_byte(b: u8) -> Result<Self, FormatError> {
        Self::ALL.get(b as usize).copied().ok_or(FormatError::BadTtlUnit(b))
    }

    pub fn seconds(self) -> u64 {
        match self {
            TtlUnit::Empty => 0,
            TtlUnit::Minute => 60,
            TtlUnit::Hour => 3600,
            TtlUnit::Day => 86_400,
            TtlUnit::Week => 7 * 86_400,
            TtlUnit::Month => 30 * 86_400,
            TtlUnit::Year => 365 * 86_400,
        }
    }

    fn suffix(self) -> Option<char> {
        match self {
            TtlUnit::Empty => None,
            TtlUnit::Minute => Some('m'),
            TtlUnit::Hour => Some('h'),
            TtlUnit::Day => Some('d'),
            TtlUnit::Week => Some('w'),
            TtlUnit::Month => Some('M'),
            TtlUnit::Year => Some('y'),
        }
    }
}

/// A stored TTL. `Ttl::EMPTY` (or a zero count) means "never expires".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Ttl {
    pub count: u8,
    pub unit: TtlUnit,
}

impl Ttl {
    pub const EMPTY: Ttl = Ttl { count: 0, unit: TtlUnit::Empty };

    pub fn from_bytes(bytes: [u8; 2]) -> Result<Self, FormatError> {
        Ok(Ttl { count: bytes[0], unit: TtlUnit::from_byte(bytes[1])? })
    }

    pub fn to_bytes(self) -> [u8; 2] {
        [self.count, self.unit as u8]
    }

    pub fn is_empty(self) -> bool {
        self.seconds() == 0
    }

    pub fn seconds(self) -> u64 {
        u64::from(self.count) * self.unit.seconds()
    }

    /// Re-expresses a duration the way weed's `fitTtlCount` does: the coarsest unit that
    /// divides it exactly with a count below 256, else the finest unit whose (truncated)
    /// count fits, else empty. So `7d` is stored as `1w` and `120m` as `2h`.
    pub fn fit_seconds(seconds: u64) -> Ttl {
        use TtlUnit::*;
        if seconds == 0 {
            return Ttl::EMPTY;
        }
        let exact = [Year, Month, Week, Day, Hour];
        for unit in exact {
            if seconds % unit.seconds() == 0 && seconds / unit.seconds() < 256 {
                return Ttl { count: (seconds / unit.seconds()) as u8, unit };
            }
        }
        for unit in [Minute, Hour, Day, Week, Month, Year] {
            if seconds / unit.seconds() < 256 {
                return Ttl { count: (seconds / unit.seconds()) as u8, unit };
            }
        }
        Ttl::EMPTY
    }
}

impl FromStr for Ttl {
    type Err = FormatError;

    /// `3m`, `4h`, `5d`, `6w`, `7M`, `8y`; digits alone mean minutes; "" is empty.
    fn from_str(s: &str) -> Result<Self, FormatError> {
        if s.is_empty() {
            return Ok(Ttl::EMPTY);
        }
        let bad = || FormatError::BadTtl(s.to_owned());
        let (count, unit) = match s.as_bytes()[s.len() - 1] {
            b'0'..=b'9' => (s, TtlUnit::Minute),
            b'm' => (&s[..s.len() - 1], TtlUnit::Minute),
            b'h' => (&s[..s.len() - 1], TtlUnit::Hour),
            b'd' => (&s[..s.len() - 1], TtlUnit::Day),
            b'w' => (&s[..s.len() - 1], TtlUnit::Week),
            b'M' => (&s[..s.len() - 1], TtlUnit::Month),
            b'y' => (&s[..s.len() - 1], TtlUnit::Year),
            _ => return Err(bad()),
        };
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let count: u32 = count.parse().map_err(|_| bad())?;
        Ok(Ttl::fit_seconds(u64::from(count) * unit.seconds()))
    }
}

impl fmt::Display for Ttl {
    /// weed's `TTL.String()`: `5d`, or "" when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unit.suffix() {
            Some(suffix) if self.count > 0 => write!(f, "{}{suffix}", self.count),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl(s: &str) -> Ttl {
        s.parse().unwrap()
    }

    #[test]
    fn parsing_fits_the_coarsest_exact_unit() {
        assert_eq!(ttl("7d").to_bytes(), [1, 4], "7d is stored as 1w (seen from weed 4.48)");
        assert_eq!(ttl("5d").to_bytes(), [5, 3]);
        assert_eq!(ttl("120m").to_bytes(), [2, 2]);
        assert_eq!(ttl("90").to_bytes(), [90, 1]);
        assert_eq!(ttl("300m").to_bytes(), [5, 2]);
        assert_eq!(ttl("301m").to_bytes(), [5, 2], "no exact unit: truncated hours");
        assert_eq!(ttl("12M").to_bytes(), [12, 5], "360 days is not a whole year");
        assert_eq!(ttl("365d").to_bytes(), [1, 6]);
        assert_eq!(ttl(""), Ttl::EMPTY);
        assert_eq!(ttl("0m"), Ttl::EMPTY);
        assert_eq!(ttl("3m").to_string(), "3m");
        assert_eq!(Ttl::EMPTY.to_string(), "");
    }

    #[test]
    fn malformed_ttls_are_errors() {
        for bad in ["m", "5x", "-5m", "+5m", "5 m", "99999999999m"] {
            assert_eq!(bad.parse::<Ttl>(), Err(FormatError::BadTtl(bad.into())), "{bad:?}");
        }
        assert_eq!(Ttl::from_bytes([1, 7]), Err(FormatError::BadTtlUnit(7)));
    }
}
