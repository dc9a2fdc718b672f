//! Replica placement: `"xyz"` = copies in other data centers, other racks, same rack,
//! each 0..=2, stored in one byte as `x*100 + y*10 + z`.

use crate::FormatError;
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ReplicaPlacement {
    pub other_data_centers: u8,
    pub other_racks: u8,
    pub same_rack: u8,
}

impl ReplicaPlacement {
    pub fn from_byte(b: u8) -> Result<Self, FormatError> {
        format!("{b:03}").parse()
    }

    pub fn to_byte(self) -> u8 {
        self.other_data_centers * 100 + self.other_racks * 10 + self.same_rack
    }

    /// How many copies of each volume exist in total.
    pub fn copy_count(self) -> u32 {
        u32::from(self.other_data_centers) + u32::from(self.other_racks) + u32::from(self.same_rack) + 1
    }
}

impl FromStr for ReplicaPlacement {
    type Err = FormatError;

    /// Up to three digits 0..=2, as weed accepts them; missing trailing digits are 0
    /// (so "" is "000").
    fn from_str(s: &str) -> Result<Self, FormatError> {
        let bad = || FormatError::BadReplicaPlacement(s.to_owned());
        if s.len() > 3 {
            return Err(bad());
        }
        let mut digits = [0u8; 3];
        for (slot, c) in digits.iter_mut().zip(s.bytes()) {
            match c {
                b'0'..=b'2' => *slot = c - b'0',
                _ => return Err(bad()),
            }
        }
        Ok(ReplicaPlacement { other_data_centers: digits[0], other_racks: digits[1], same_rack: digits[2] })
    }
}

impl fmt::Display for ReplicaPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.other_data_centers, self.other_racks, self.same_rack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_bytes() {
        let rp: ReplicaPlacement = "012".parse().unwrap();
        assert_eq!(rp.to_byte(), 12);
        assert_eq!(rp.copy_count(), 4);
        assert_eq!(rp.to_string(), "012");
        assert_eq!(ReplicaPlacement::from_byte(200).unwrap().to_string(), "200");
        assert_eq!("".parse::<ReplicaPlacement>().unwrap(), ReplicaPlacement::default());
        assert!(ReplicaPlacement::from_byte(3).is_err());
        assert!(ReplicaPlacement::from_byte(255).is_err());
        assert!("0003".parse::<ReplicaPlacement>().is_err());
        assert!("00x".parse::<ReplicaPlacement>().is_err());
    }
}
