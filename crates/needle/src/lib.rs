//! SeaweedFS on-disk formats (in progress).
