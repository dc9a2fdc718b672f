//! Drop-in SeaweedFS volume server: `.dat`/`.idx`/`.vif` storage, the weed HTTP API,
//! and registration of volume extents for one-sided RDMA READs.
//!
//! Stub: the storage engine and HTTP API arrive with issue #3.
