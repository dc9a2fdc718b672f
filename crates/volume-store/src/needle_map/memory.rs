//! The default needle map: a hash map in memory, rebuilt from the whole `.idx` at load.

use std::collections::HashMap;
use std::sync::RwLock;

use needle::{IdxEntry, NeedleId};

use super::{MapStats, NeedleMap, NeedleValue};
use crate::error::Result;

#[derive(Default)]
pub struct MemoryMap {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, NeedleValue>,
    stats: MapStats,
}

impl MemoryMap {
    pub fn new() -> Self {
        Self::default()
    }
}

impl NeedleMap for MemoryMap {
    fn get(&self, key: NeedleId) -> Result<Option<NeedleValue>> {
        Ok(self.inner.read().unwrap_or_else(|e| e.into_inner()).entries.get(&key.0).copied())
    }

    fn apply(&self, entry: &IdxEntry, idx_end: u64) -> Result<()> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let old = inner.entries.get(&entry.key.0).copied();
        if let Some(new) = inner.stats.account(old, entry, idx_end) {
            inner.entries.insert(entry.key.0, new);
        }
        Ok(())
    }

    fn stats(&self) -> MapStats {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).stats
    }

    fn reset(&self) -> Result<()> {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = Inner::default();
        Ok(())
    }
}
