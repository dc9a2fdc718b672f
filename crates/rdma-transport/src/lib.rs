//! RDMA connection management and one-sided READs over verbs: the server registers
//! mmap'd volume extents, client engines (sideway, async-rdma) READ needle records.
//!
//! Stub: arrives with issue #5.

#[cfg(feature = "async-rdma")]
pub mod async_rdma_engine;
