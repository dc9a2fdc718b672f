//! The store: every volume in one or more data directories, and where new ones go.
//!
//! The volume table is read-mostly: a lookup takes a read lock just long enough to
//! clone the volume's `Arc`; only creating a volume takes the write lock. Reads and
//! writes of different volumes therefore never wait for each other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use needle::{ReplicaPlacement, Ttl, VolumeId};

use crate::error::{Error, Result};
use crate::volume::{Volume, VolumeOptions, parse_dat_name};

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub dirs: Vec<PathBuf>,
    /// Most volumes each directory may hold (one value per directory).
    pub max_volumes: Vec<usize>,
    /// A volume whose `.dat` reaches this many bytes gets no more assignments.
    pub volume_size_limit: u64,
    pub volume: VolumeOptions,
}

pub struct Store {
    config: StoreConfig,
    volumes: RwLock<BTreeMap<u32, (usize, Arc<Volume>)>>,
    /// Serializes volume creation (id choice and directory choice).
    create: Mutex<()>,
}

impl Store {
    /// Loads every volume found in the configured directories (creating missing
    /// directories). The same volume id in two places is an error.
    pub fn open(config: StoreConfig) -> Result<Self> {
        let mut volumes = BTreeMap::new();
        for (dir_index, dir) in config.dirs.iter().enumerate() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let mut found = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
                let entry = entry.map_err(|e| Error::io(dir, e))?;
                if let Some((collection, id)) = entry.file_name().to_str().and_then(parse_dat_name) {
                    found.push((collection, id));
                }
            }
            found.sort_by_key(|(_, id)| *id);
            for (collection, id) in found {
                if volumes.contains_key(&id.0) {
                    return Err(Error::BadVolume {
                        path: dir.join(crate::volume::base_name(&collection, id)),
                        reason: format!("volume {id} exists in two places"),
                    });
                }
                let volume = Volume::load(dir, &collection, id, config.volume)?;
                tracing::info!(volume = id.0, collection, dir = %dir.display(), report = ?volume.load_report(), "loaded");
                volumes.insert(id.0, (dir_index, Arc::new(volume)));
            }
        }
        Ok(Self { config, volumes: RwLock::new(volumes), create: Mutex::new(()) })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn volume(&self, id: VolumeId) -> Result<Arc<Volume>> {
        self.volumes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id.0)
            .map(|(_, v)| Arc::clone(v))
            .ok_or(Error::VolumeNotFound(id))
    }

    /// Every volume, by id.
    pub fn volumes(&self) -> Vec<Arc<Volume>> {
        self.volumes.read().unwrap_or_else(|e| e.into_inner()).values().map(|(_, v)| Arc::clone(v)).collect()
    }

    /// The directory a volume lives in.
    pub fn dir_of(&self, id: VolumeId) -> Option<&Path> {
        let index = self.volumes.read().unwrap_or_else(|e| e.into_inner()).get(&id.0).map(|(d, _)| *d)?;
        self.config.dirs.get(index).map(PathBuf::as_path)
    }

    /// Whether a volume may take more assignments.
    pub fn is_writable(&self, volume: &Volume) -> bool {
        !volume.is_read_only() && volume.dat_size() < self.config.volume_size_limit
    }

    /// Creates a volume with the next free id, in the directory with the most free
    /// slots; fails when every directory is at its `--max`.
    pub fn create_volume(
        &self,
        collection: &str,
        replica: ReplicaPlacement,
        ttl: Ttl,
    ) -> Result<Arc<Volume>> {
        let _creating = self.create.lock().unwrap_or_else(|e| e.into_inner());
        let (id, dir_index) = {
            let volumes = self.volumes.read().unwrap_or_else(|e| e.into_inner());
            let id = volumes.keys().next_back().map_or(1, |last| last + 1);
            let free = |d: usize| {
                let used = volumes.values().filter(|(dir, _)| *dir == d).count();
                self.max_for(d).saturating_sub(used)
            };
            let dir_index = (0..self.config.dirs.len())
                .filter(|&d| free(d) > 0)
                .max_by_key(|&d| (free(d), std::cmp::Reverse(d)))
                .ok_or(Error::NoFreeSlot)?;
            (VolumeId(id), dir_index)
        };
        let dir = &self.config.dirs[dir_index];
        let volume = Arc::new(Volume::create(dir, collection, id, replica, ttl, self.config.volume)?);
        tracing::info!(volume = id.0, collection, dir = %dir.display(), "created volume");
        self.volumes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.0, (dir_index, Arc::clone(&volume)));
        Ok(volume)
    }

    fn max_for(&self, dir_index: usize) -> usize {
        self.config.max_volumes.get(dir_index).or(self.config.max_volumes.last()).copied().unwrap_or(0)
    }
}
