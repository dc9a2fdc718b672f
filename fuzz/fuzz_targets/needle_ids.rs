//! The small texts of URLs, forms and headers: file ids, volume ids, TTLs, replica
//! placements. Each parses or is a typed error; what parses prints in weed's form,
//! which parses back to the same value (a TTL: the same duration).
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle::{FileId, ReplicaPlacement, Ttl, VolumeId};

fuzz_target!(|text: &str| {
    if let Ok(fid) = text.parse::<FileId>() {
        // Key 0 prints as the cookie alone, which no parser takes (weed never issues it).
        if fid.key.0 != 0 {
            let printed = fid.to_string();
            assert_eq!(printed.parse::<FileId>(), Ok(fid), "{printed}");
            let (_, rest) = printed.split_once(',').unwrap();
            assert_eq!(FileId::parse_in_volume(fid.volume, rest), Ok(fid));
        }
        assert!(fid.key.0.checked_add(fid.delta.unwrap_or(0)).is_some(), "parsing lets no delta overflow");
    }
    if let Ok(volume) = text.parse::<VolumeId>() {
        assert_eq!(volume.to_string().parse::<VolumeId>(), Ok(volume));
    }
    if let Ok(ttl) = text.parse::<Ttl>() {
        // weed stores a TTL no unit holds exactly in the finest unit whose truncated
        // count fits (222222m as 154d), and 154d then reads as 22w: the same duration.
        let reparsed = ttl.to_string().parse::<Ttl>().unwrap_or_else(|e| panic!("{ttl}: {e}"));
        assert_eq!(reparsed.seconds(), ttl.seconds(), "{ttl} -> {reparsed}");
        assert_eq!(reparsed.to_string().parse::<Ttl>(), Ok(reparsed), "printing is stable after one round");
        assert_eq!(Ttl::from_bytes(ttl.to_bytes()), Ok(ttl));
    }
    if let Ok(placement) = text.parse::<ReplicaPlacement>() {
        assert_eq!(placement.to_string().parse::<ReplicaPlacement>(), Ok(placement));
        assert_eq!(ReplicaPlacement::from_byte(placement.to_byte()), Ok(placement));
    }
    if let [a, b] = text.as_bytes() {
        if let Ok(ttl) = Ttl::from_bytes([*a, *b]) {
            assert_eq!(ttl.to_bytes(), [*a, *b]);
        }
    }
    if let [b] = text.as_bytes() {
        if let Ok(placement) = ReplicaPlacement::from_byte(*b) {
            assert_eq!(placement.to_byte(), *b);
        }
    }
});
