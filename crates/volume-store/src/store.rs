//! The store: every volume in one or more data directories, and where new ones go.
//!
//! The volume table is read-mostly: a lookup takes a read lock just long enough to
//! clone the volume's `Arc`; only creating a volume takes the write lock. Reads and
//! writes of different volumes therefore never wait for each other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use needle::{ReplicaPlacement, Ttl, VolumeId};

use crate::disk_space::{DiskUsage, MinFreeSpace};
use crate::error::{Error, Result};
use crate::volume::{Volume, VolumeOptions, parse_dat_name};

/// Appended to the names of a volume copy's files until the copy is complete
/// (the volume server's `volume_move` writes them); opening the store removes such
/// leftovers.
pub const PARTIAL_SUFFIX: &str = ".copying";

/// How long a compaction commit of a `--index rocksdb` volume waits for requests
/// under way to let go of the old volume.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub dirs: Vec<PathBuf>,
    /// Most volumes each directory may hold (one value per directory).
    pub max_volumes: Vec<usize>,
    /// A volume whose `.dat` reaches this many bytes gets no more assignments.
    pub volume_size_limit: u64,
    /// The free space each directory keeps (one value per directory, or the last for
    /// the rest); below it the directory takes no writes (see [`crate::disk_space`]).
    pub min_free_space: Vec<MinFreeSpace>,
    pub volume: VolumeOptions,
}

pub struct Store {
    config: StoreConfig,
    volumes: RwLock<BTreeMap<u32, (usize, Arc<Volume>)>>,
    /// Per directory: its file system has less free space than its minimum. Shared
    /// with the directory's volumes, which then refuse writes.
    disk_space_low: Vec<Arc<AtomicBool>>,
    /// Serializes volume creation (id choice and directory choice).
    create: Mutex<()>,
    /// Signalled when the set of volumes or their state changes (the heartbeat to the
    /// master reports it at once instead of at its next pulse).
    changed: tokio::sync::Notify,
    /// Told the id of every volume whose files are retired (the RDMA read path drops
    /// the volume's registered regions). Set once, after the store is open.
    on_retire: OnceLock<RetireHook>,
    /// Volumes that failed to load at open and have not been mounted since.
    load_failures: Mutex<Vec<LoadFailure>>,
}

/// A volume found on disk that could not be loaded when the store opened: it is not
/// served (as in weed, which logs it and loads the others) until a mount loads it.
#[derive(Clone, Debug)]
pub struct LoadFailure {
    pub id: VolumeId,
    pub collection: String,
    pub dir: PathBuf,
    pub error: String,
}

/// Called with a volume id when [`Store`] retires that volume's files. It runs while
/// the old volume's writes are stopped, so it must not write to that volume.
pub type RetireHook = Box<dyn Fn(VolumeId) + Send + Sync>;

impl Store {
    /// Loads every volume found in the configured directories (creating missing
    /// directories). The same volume id in two places is an error; a volume that does
    /// not load is logged, left out and kept in [`Store::load_failures`].
    pub fn open(config: StoreConfig) -> Result<Self> {
        let mut volumes = BTreeMap::new();
        let mut load_failures = Vec::new();
        let disk_space_low: Vec<Arc<AtomicBool>> = config.dirs.iter().map(|_| Arc::default()).collect();
        for (dir_index, dir) in config.dirs.iter().enumerate() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let mut found = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
                let entry = entry.map_err(|e| Error::io(dir, e))?;
                let name = entry.file_name();
                let name = name.to_str().unwrap_or_default();
                if name.ends_with(PARTIAL_SUFFIX) {
                    // A copy from another server that a crash interrupted: never mounted.
                    tracing::warn!(file = %entry.path().display(), "removing an unfinished volume copy");
                    std::fs::remove_file(entry.path()).map_err(|e| Error::io(&entry.path(), e))?;
                } else if let Some((collection, id)) = parse_dat_name(name) {
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
                let volume = match Volume::load(dir, &collection, id, config.volume) {
                    Ok(volume) => volume.on_disk(Arc::clone(&disk_space_low[dir_index])),
                    Err(e) => {
                        tracing::error!(volume = id.0, collection, dir = %dir.display(), error = %e, "volume not loaded: the others are served");
                        load_failures.push(LoadFailure {
                            id,
                            collection,
                            dir: dir.clone(),
                            error: e.to_string(),
                        });
                        continue;
                    }
                };
                tracing::info!(volume = id.0, collection, dir = %dir.display(), report = ?volume.load_report(), "loaded");
                volumes.insert(id.0, (dir_index, Arc::new(volume)));
            }
        }
        let store = Self {
            config,
            volumes: RwLock::new(volumes),
            disk_space_low,
            create: Mutex::new(()),
            changed: Default::default(),
            on_retire: OnceLock::new(),
            load_failures: Mutex::new(load_failures),
        };
        store.check_disk_space();
        Ok(store)
    }

    /// Compares each directory's free space with its minimum and starts or stops its
    /// writes accordingly (the heartbeat tells the master at once). A directory whose
    /// file system cannot be read keeps its previous state.
    pub fn check_disk_space(&self) {
        for (dir_index, dir) in self.config.dirs.iter().enumerate() {
            let minimum = self.min_free_space_of(dir_index);
            let usage = match DiskUsage::of(dir) {
                Ok(usage) => usage,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "cannot read the free space: {e}");
                    continue;
                }
            };
            let low = minimum.is_low(usage);
            if self.disk_space_low[dir_index].swap(low, Ordering::Relaxed) != low {
                let (free, percent) = (usage.free, usage.percent_free());
                if low {
                    tracing::warn!(dir = %dir.display(), free, "disk free {percent:.2}% < required {minimum}: its volumes are read-only until space is freed");
                } else {
                    tracing::info!(dir = %dir.display(), free, "disk free {percent:.2}% >= required {minimum}: its volumes take writes again");
                }
                self.changed.notify_one();
            }
        }
    }

    /// The volume slots to report to the master: each directory's `--max`, or what it
    /// already holds while its free space is low (so the master creates no volume there).
    pub fn max_volume_count(&self) -> usize {
        let volumes = self.volumes.read().unwrap_or_else(|e| e.into_inner());
        (0..self.config.dirs.len())
            .map(|d| match self.disk_space_low[d].load(Ordering::Relaxed) {
                true => volumes.values().filter(|(dir, _)| *dir == d).count(),
                false => self.max_for(d),
            })
            .sum()
    }

    /// Whether data directory `dir_index` is below its minimum free space (as last checked).
    pub fn is_disk_space_low(&self, dir_index: usize) -> bool {
        self.disk_space_low.get(dir_index).is_some_and(|low| low.load(Ordering::Relaxed))
    }

    fn min_free_space_of(&self, dir_index: usize) -> MinFreeSpace {
        let minimums = &self.config.min_free_space;
        minimums.get(dir_index).or(minimums.last()).copied().unwrap_or_default()
    }

    fn disk_of(&self, dir_index: usize) -> Arc<AtomicBool> {
        Arc::clone(&self.disk_space_low[dir_index])
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The volumes that did not load when the store opened, less those mounted since.
    pub fn load_failures(&self) -> Vec<LoadFailure> {
        self.load_failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Notified (one permit) whenever a volume is created, deleted, compacted or
    /// changes read-only state.
    pub fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// Marks a volume read-only or writable (see [`Volume::set_read_only`]).
    pub fn set_read_only(&self, id: VolumeId, read_only: bool, persist: bool) -> Result<()> {
        self.volume(id)?.set_read_only(read_only, persist)?;
        self.changed.notify_one();
        Ok(())
    }

    pub fn volume(&self, id: VolumeId) -> Result<Arc<Volume>> {
        self.volumes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id.0)
            .map(|(_, v)| Arc::clone(v))
            .ok_or(Error::VolumeNotFound(id))
    }

    /// Runs a write (`work`) on volume `id`, looking the volume up again when a vacuum
    /// commit replaced it while `work` waited for it ([`Error::VolumeRetired`]). The
    /// commit installs the new volume before it lets waiting writers go, so one more
    /// look normally suffices; a few allow for commits in quick succession.
    pub fn write_to<T>(&self, id: VolumeId, work: impl Fn(&Volume) -> Result<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            let volume = self.volume(id)?;
            match work(&volume) {
                Err(Error::VolumeRetired(_)) if tries < 3 => tries += 1,
                result => return result,
            }
        }
    }

    /// Every volume, by id.
    pub fn volumes(&self) -> Vec<Arc<Volume>> {
        self.volumes.read().unwrap_or_else(|e| e.into_inner()).values().map(|(_, v)| Arc::clone(v)).collect()
    }

    /// The index in `--dir` of the directory a volume lives in.
    fn dir_index_of(&self, id: VolumeId) -> Option<usize> {
        self.volumes.read().unwrap_or_else(|e| e.into_inner()).get(&id.0).map(|(d, _)| *d)
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
        self.create_volume_with_id(None, collection, replica, ttl)
    }

    /// Creates a volume with id `id` (the master's choice) or, with `None`, the next
    /// free id; in the directory with the most free slots.
    pub fn create_volume_with_id(
        &self,
        id: Option<VolumeId>,
        collection: &str,
        replica: ReplicaPlacement,
        ttl: Ttl,
    ) -> Result<Arc<Volume>> {
        let _creating = self.create.lock().unwrap_or_else(|e| e.into_inner());
        let (id, dir_index) = self.place_new_volume(id)?;
        let dir = &self.config.dirs[dir_index];
        let volume = Volume::create(dir, collection, id, replica, ttl, self.config.volume)?;
        let volume = Arc::new(volume.on_disk(self.disk_of(dir_index)));
        tracing::info!(volume = id.0, collection, dir = %dir.display(), "created volume");
        Ok(self.serve(dir_index, volume))
    }

    /// Starts serving `volume` (in directory `dir_index`); the heartbeat reports it.
    fn serve(&self, dir_index: usize, volume: Arc<Volume>) -> Arc<Volume> {
        self.volumes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(volume.id().0, (dir_index, Arc::clone(&volume)));
        self.changed.notify_one();
        volume
    }

    /// Where a new volume goes: its id (`id`, or with `None` the next free one) and
    /// the directory with the most free slots. Fails when `id` is taken or every
    /// directory is at its `--max`.
    fn place_new_volume(&self, id: Option<VolumeId>) -> Result<(VolumeId, usize)> {
        let volumes = self.volumes.read().unwrap_or_else(|e| e.into_inner());
        let id = match id {
            Some(id) if volumes.contains_key(&id.0) => return Err(Error::VolumeExists(id)),
            Some(id) => id.0,
            None => volumes.keys().next_back().map_or(1, |last| last + 1),
        };
        let free = |d: usize| {
            let used = volumes.values().filter(|(dir, _)| *dir == d).count();
            self.max_for(d).saturating_sub(used)
        };
        let dir_index = (0..self.config.dirs.len())
            .filter(|&d| free(d) > 0 && !self.disk_space_low[d].load(Ordering::Relaxed))
            .max_by_key(|&d| (free(d), std::cmp::Reverse(d)))
            .ok_or(Error::NoFreeSlot)?;
        Ok((VolumeId(id), dir_index))
    }

    /// The directory a volume `id` copied from another server should be written to
    /// (see [`Store::mount_copied`]).
    pub fn dir_for_copy(&self, id: VolumeId) -> Result<PathBuf> {
        let (_, dir_index) = self.place_new_volume(Some(id))?;
        Ok(self.config.dirs[dir_index].clone())
    }

    /// Loads volume `id` from files already complete in `dir` (a copy from another
    /// server) and serves it; the next heartbeat reports it to the master.
    pub fn mount_copied(&self, dir: &Path, collection: &str, id: VolumeId) -> Result<Arc<Volume>> {
        let dir_index = self.config.dirs.iter().position(|d| d == dir).ok_or(Error::VolumeNotFound(id))?;
        crate::volume::discard_stale_map(dir, collection, id)?;
        self.mount_from(dir_index, collection, id)
    }

    /// weed's `VolumeMount`: serves volume `id` again from its files on disk (after
    /// [`Store::unmount`], or files put there by hand).
    pub fn mount(&self, id: VolumeId) -> Result<Arc<Volume>> {
        if let Ok(volume) = self.volume(id) {
            return Ok(volume);
        }
        for (dir_index, dir) in self.config.dirs.iter().enumerate() {
            for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
                let entry = entry.map_err(|e| Error::io(dir, e))?;
                if let Some((collection, found)) = entry.file_name().to_str().and_then(parse_dat_name)
                    && found == id
                {
                    return self.mount_from(dir_index, &collection, id);
                }
            }
        }
        Err(Error::VolumeNotFound(id))
    }

    fn mount_from(&self, dir_index: usize, collection: &str, id: VolumeId) -> Result<Arc<Volume>> {
        let _creating = self.create.lock().unwrap_or_else(|e| e.into_inner());
        if self.volume(id).is_ok() {
            return Err(Error::VolumeExists(id));
        }
        let dir = &self.config.dirs[dir_index];
        let volume =
            Arc::new(Volume::load(dir, collection, id, self.config.volume)?.on_disk(self.disk_of(dir_index)));
        tracing::info!(volume = id.0, collection, dir = %dir.display(), report = ?volume.load_report(), "mounted");
        self.load_failures.lock().unwrap_or_else(|e| e.into_inner()).retain(|f| f.id != id);
        Ok(self.serve(dir_index, volume))
    }

    /// weed's `VolumeUnmount`: stops serving volume `id` but keeps its files.
    pub fn unmount(&self, id: VolumeId) -> Result<()> {
        let volume = self
            .volumes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id.0)
            .map(|(_, v)| v)
            .ok_or(Error::VolumeNotFound(id))?;
        volume.stop_writes();
        self.retire(&volume, "unmounted");
        self.changed.notify_one();
        Ok(())
    }

    /// Deletes a volume and its files (`only_empty`: refuse if it holds live needles).
    pub fn delete_volume(&self, id: VolumeId, only_empty: bool) -> Result<()> {
        let volume = {
            let mut volumes = self.volumes.write().unwrap_or_else(|e| e.into_inner());
            let (_, volume) = volumes.get(&id.0).ok_or(Error::VolumeNotFound(id))?;
            let stats = volume.status().stats;
            if only_empty && stats.file_count > stats.deletion_count {
                return Err(Error::NotEmpty(id));
            }
            volumes.remove(&id.0).map(|(_, v)| v).ok_or(Error::VolumeNotFound(id))?
        };
        volume.stop_writes();
        self.retire(&volume, "deleted");
        let mut result = Ok(());
        // The map first: left behind by a crash, it would outlive the files it indexes.
        if let Some(dir) = volume.map_dir() {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => result = Err(Error::io(&dir, e)),
                _ => {}
            }
        }
        for path in volume.files() {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => result = Err(Error::io(&path, e)),
                _ => {}
            }
        }
        self.changed.notify_one();
        result
    }

    /// Vacuum commit: installs the compacted files of volume `id` (see
    /// [`Volume::commit_compaction`]) and replaces the volume with one loaded from them.
    pub fn commit_compaction(&self, id: VolumeId) -> Result<Arc<Volume>> {
        let old = self.volume(id)?;
        let dir_index = self.dir_index_of(id).ok_or(Error::VolumeNotFound(id))?;
        let dir = &self.config.dirs[dir_index];
        let (collection, read_only) = (old.collection().to_owned(), old.is_marked_read_only());
        let load = || -> Result<Arc<Volume>> {
            let new =
                Volume::load(dir, &collection, id, self.config.volume)?.on_disk(self.disk_of(dir_index));
            if read_only {
                new.set_read_only(true, false)?;
            }
            Ok(Arc::new(new))
        };
        let new = if old.map_dir().is_none() {
            old.commit_compaction(|| {
                self.retire(&old, "compacted");
                let new = load()?;
                let mut volumes = self.volumes.write().unwrap_or_else(|e| e.into_inner());
                if let Some(entry) = volumes.get_mut(&id.0) {
                    entry.1 = Arc::clone(&new);
                }
                Ok(new)
            })?
        } else {
            // A RocksDB map can be open once per process, so the old volume (and its
            // map) must be gone before the new one loads. Hold the table so nobody
            // takes the volume meanwhile, and wait (briefly) for requests under way to
            // drop it; if they do not, nothing has changed and the master may retry.
            let mut volumes = self.volumes.write().unwrap_or_else(|e| e.into_inner());
            let (dir_index, table_ref) = volumes.remove(&id.0).ok_or(Error::VolumeNotFound(id))?;
            drop(table_ref);
            let deadline = std::time::Instant::now() + BUSY_WAIT;
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            if Arc::strong_count(&old) > 1 {
                volumes.insert(id.0, (dir_index, old));
                return Err(Error::Busy(id));
            }
            // Nobody else holds `old`, so taking its write lock under the table lock
            // cannot wait on anyone.
            if let Err(e) = old.commit_compaction(|| Ok(())) {
                volumes.insert(id.0, (dir_index, old));
                return Err(e);
            }
            self.retire(&old, "compacted");
            drop(old);
            let new = load()?;
            volumes.insert(id.0, (dir_index, Arc::clone(&new)));
            new
        };
        tracing::info!(volume = id.0, revision = new.compaction_revision(), "compaction committed");
        self.changed.notify_one();
        Ok(new)
    }

    /// The one place a volume's files stop being the ones it was opened on: a
    /// compaction commit replaced them, or the volume was deleted. Writes to it have
    /// stopped by then ([`Volume::stop_writes`], or the commit itself); anything else
    /// tied to the old files (registered RDMA regions) must be retired here.
    fn retire(&self, volume: &Volume, why: &str) {
        tracing::info!(volume = volume.id().0, why, "volume files retired");
        if let Some(hook) = self.on_retire.get() {
            hook(volume.id());
        }
    }

    /// Installs the hook told about every retired volume; a second hook is refused.
    pub fn set_retire_hook(&self, hook: RetireHook) -> std::result::Result<(), RetireHook> {
        self.on_retire.set(hook)
    }

    fn max_for(&self, dir_index: usize) -> usize {
        self.config.max_volumes.get(dir_index).or(self.config.max_volumes.last()).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::IndexKind;
    use needle::{Cookie, Needle, NeedleId, OffsetWidth};

    fn config(dirs: Vec<PathBuf>, max: Vec<usize>) -> StoreConfig {
        StoreConfig {
            dirs,
            max_volumes: max,
            volume_size_limit: 1 << 20,
            // 0%: never low, whatever the test machine's disk holds.
            min_free_space: vec![MinFreeSpace::Percent(0.0)],
            volume: VolumeOptions { width: OffsetWidth::Five, index: IndexKind::Memory, fsync: false },
        }
    }

    #[test]
    fn volumes_spread_over_dirs_up_to_max_and_reload() {
        let root = tempfile::tempdir().unwrap();
        let dirs = vec![root.path().join("a"), root.path().join("b")];
        let store = Store::open(config(dirs.clone(), vec![2, 1])).unwrap();
        let rp = ReplicaPlacement::default();
        let ids: Vec<u32> = (0..3).map(|_| store.create_volume("", rp, Ttl::EMPTY).unwrap().id().0).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert!(matches!(store.create_volume("", rp, Ttl::EMPTY), Err(Error::NoFreeSlot)));
        assert_eq!(store.dir_index_of(VolumeId(2)), Some(0), "ties go to the first directory");
        assert_eq!(store.dir_index_of(VolumeId(3)), Some(1), "a holds 2, b 1");
        let v = store.volume(VolumeId(2)).unwrap();
        v.write(&Needle::new(NeedleId(5), Cookie(6), b"kept")).unwrap();
        assert!(store.is_writable(&v));
        drop((v, store));

        let store = Store::open(config(dirs.clone(), vec![2])).unwrap();
        assert_eq!(store.volumes().len(), 3);
        assert_eq!(
            store.volume(VolumeId(2)).unwrap().read(NeedleId(5), Cookie(6)).unwrap().needle().data,
            b"kept"
        );
        assert!(matches!(store.volume(VolumeId(9)), Err(Error::VolumeNotFound(_))));
        // The same volume in two directories is refused.
        std::fs::copy(dirs[0].join("1.dat"), dirs[1].join("1.dat")).unwrap();
        assert!(matches!(Store::open(config(dirs, vec![2])), Err(Error::BadVolume { .. })));
    }

    #[test]
    fn unmount_retires_and_keeps_files_mount_serves_them_again_delete_retires() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(config(vec![root.path().to_owned()], vec![4])).unwrap();
        let retired = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&retired);
        assert!(store.set_retire_hook(Box::new(move |id| seen.lock().unwrap().push(id.0))).is_ok());
        let v = store.create_volume("pics", ReplicaPlacement::default(), Ttl::EMPTY).unwrap();
        let id = v.id();
        v.write(&Needle::new(NeedleId(5), Cookie(6), b"kept")).unwrap();
        drop(v);

        store.unmount(id).unwrap();
        assert!(matches!(store.volume(id), Err(Error::VolumeNotFound(_))));
        assert!(root.path().join(format!("pics_{id}.dat")).exists(), "unmount keeps the files");
        assert_eq!(*retired.lock().unwrap(), vec![id.0], "unmount retires the volume's regions");
        assert!(matches!(store.unmount(id), Err(Error::VolumeNotFound(_))));

        let v = store.mount(id).unwrap();
        assert_eq!(v.collection(), "pics");
        // Files of a copy a crash interrupted are removed when the store opens.
        let partial = root.path().join("9.dat.copying");
        std::fs::write(&partial, b"half").unwrap();
        let reopened = Store::open(config(vec![root.path().to_owned()], vec![4])).unwrap();
        assert!(!partial.exists());
        assert_eq!(reopened.volumes().len(), 1, "the volume itself stays");
        drop(reopened);
        assert_eq!(v.read(NeedleId(5), Cookie(6)).unwrap().needle().data, b"kept");
        assert!(matches!(store.mount(VolumeId(77)), Err(Error::VolumeNotFound(_))));
        // A copy of a volume this store already serves has nowhere to go.
        assert!(matches!(store.dir_for_copy(id), Err(Error::VolumeExists(_))));

        // The delete after a move retires the volume (the RDMA path drops its regions).
        store.delete_volume(id, false).unwrap();
        assert_eq!(*retired.lock().unwrap(), vec![id.0, id.0]);
        assert!(!root.path().join(format!("pics_{id}.dat")).exists());
    }

    #[test]
    fn compaction_keeps_live_needles_and_writes_made_meanwhile() {
        for index in [IndexKind::Memory, IndexKind::Rocksdb] {
            let root = tempfile::tempdir().unwrap();
            let mut cfg = config(vec![root.path().to_owned()], vec![4]);
            cfg.volume.index = index;
            let store = Store::open(cfg.clone()).unwrap();
            let v = store.create_volume("", ReplicaPlacement::default(), Ttl::EMPTY).unwrap();
            let data = |i: u64, round: u8| vec![i as u8 ^ round; 100 + i as usize];
            let put = |v: &Volume, i: u64, round: u8| {
                v.write(&Needle::new(NeedleId(i), Cookie(i as u32), &data(i, round))).unwrap()
            };
            for i in 1..=10 {
                put(&v, i, 0);
            }
            for i in [2, 4, 6] {
                v.delete(NeedleId(i), Cookie(i as u32)).unwrap();
            }
            put(&v, 7, 1);
            assert_eq!(v.status().compaction_revision, 0);
            assert!(v.garbage_ratio() > 0.2, "{}", v.garbage_ratio());
            let before = v.dat_size();

            let compacted = v.compact().unwrap();
            // Writes and deletes between compaction and commit are carried over.
            put(&v, 11, 0);
            v.delete(NeedleId(8), Cookie(8)).unwrap();
            let new = if index == IndexKind::Memory {
                let new = store.commit_compaction(v.id()).unwrap();
                assert!(matches!(put_err(&v), Error::VolumeRetired(_)), "the old volume takes no writes");
                assert_eq!(
                    v.read(NeedleId(1), Cookie(1)).unwrap().needle().data,
                    data(1, 0),
                    "old reads go on"
                );
                new
            } else {
                // Someone holding the volume blocks a RocksDB commit, which then changes nothing.
                assert!(matches!(store.commit_compaction(v.id()), Err(Error::Busy(_))));
                assert_eq!(v.status().compaction_revision, 0);
                put(&v, 13, 0);
                v.delete(NeedleId(13), Cookie(13)).unwrap();
                let id = v.id();
                drop(v);
                store.commit_compaction(id).unwrap()
            };

            let check = |v: &Volume| {
                assert_eq!(v.status().compaction_revision, 1, "{index:?}");
                for (i, round) in [(1, 0), (3, 0), (5, 0), (7, 1), (9, 0), (10, 0), (11, 0)] {
                    assert_eq!(v.read(NeedleId(i), Cookie(i as u32)).unwrap().needle().data, data(i, round));
                }
                for i in [2, 4, 6, 8, 13] {
                    assert!(v.read(NeedleId(i), Cookie(i as u32)).is_err(), "needle {i} stays deleted");
                }
            };
            check(&new);
            assert!(new.dat_size() < before + 2 * 200, "garbage dropped: {before} -> {}", new.dat_size());
            assert!(compacted < before);
            assert!(Arc::ptr_eq(&new, &store.volume(new.id()).unwrap()), "the store serves the new volume");
            put(&new, 12, 0);
            drop((new, store));
            let store = Store::open(cfg).unwrap();
            let v = store.volume(VolumeId(1)).unwrap();
            check(&v);
            assert_eq!(v.read(NeedleId(12), Cookie(12)).unwrap().needle().data, data(12, 0));
            assert!(!root.path().join("1.cpd").exists() && !root.path().join("1.cpx").exists());
        }
    }

    /// A vacuum commit that stops after any of its steps (as a crash would: the
    /// failpoint makes the commit return there, and the store is dropped without
    /// any further write) leaves a volume that opens with every acknowledged live
    /// needle and no deleted one, and can be compacted again.
    #[test]
    fn a_commit_stopped_after_any_step_reopens_with_every_live_needle_and_no_deleted_one() {
        let steps = ["caught up", "commit marked", ".idx replaced", ".dat replaced", "directory synced"];
        for index in [IndexKind::Memory, IndexKind::Rocksdb] {
            for step in steps {
                let root = tempfile::tempdir().unwrap();
                let mut cfg = config(vec![root.path().to_owned()], vec![4]);
                cfg.volume.index = index;
                let store = Store::open(cfg.clone()).unwrap();
                let v = store.create_volume("", ReplicaPlacement::default(), Ttl::EMPTY).unwrap();
                // Lengths chosen so that the compacted `.idx` read against the old
                // `.dat` lines up by chance: needle 3 moves to where needle 1 was (same
                // size), and needle 2's live record to where its overwritten one was.
                let data = |i: u64, round: u8| vec![i as u8 ^ round; if i == 2 { 60 } else { 100 }];
                let put = |v: &Volume, i: u64, round: u8| {
                    v.write(&Needle::new(NeedleId(i), Cookie(i as u32), &data(i, round))).unwrap();
                };
                put(&v, 1, 0);
                put(&v, 2, 0);
                put(&v, 3, 0);
                put(&v, 2, 1);
                v.delete(NeedleId(1), Cookie(1)).unwrap();
                for i in 4..=12 {
                    put(&v, i, 0);
                }
                for i in [5, 9] {
                    v.delete(NeedleId(i), Cookie(i as u32)).unwrap();
                }
                v.compact().unwrap();
                // Between compaction and commit: carried over by the catch-up.
                put(&v, 13, 0);
                v.delete(NeedleId(4), Cookie(4)).unwrap();
                let id = v.id();
                drop(v);
                crate::compaction::CRASH_AT.set(Some(step));
                let stopped = store.commit_compaction(id);
                crate::compaction::CRASH_AT.set(None);
                assert!(stopped.is_err(), "{index:?} {step}: the failpoint did not fire");
                drop(store);

                let live = [(2, 1), (3, 0), (6, 0), (7, 0), (8, 0), (10, 0), (11, 0), (12, 0), (13, 0)];
                let check = |store: &Store, when: &str| {
                    let v = store.volume(id).unwrap();
                    for (i, round) in live {
                        let read = v.read(NeedleId(i), Cookie(i as u32));
                        let read =
                            read.unwrap_or_else(|e| panic!("{index:?} {step} {when}: needle {i}: {e}"));
                        assert_eq!(read.needle().data, data(i, round), "{index:?} {step} {when}: needle {i}");
                    }
                    for i in [1, 4, 5, 9] {
                        assert!(
                            v.read(NeedleId(i), Cookie(i as u32)).is_err(),
                            "{index:?} {step} {when}: deleted needle {i} came back"
                        );
                    }
                };
                let store = Store::open(cfg.clone()).unwrap();
                check(&store, "reopened");
                // The next vacuum starts from what the reopened volume holds.
                store.volume(id).unwrap().compact().unwrap();
                store.commit_compaction(id).unwrap();
                check(&store, "compacted again");
                drop(store);
                let store = Store::open(cfg).unwrap();
                check(&store, "reopened again");
                for ext in ["cpd", "cpx", "cpc"] {
                    assert!(!root.path().join(format!("1.{ext}")).exists(), "{index:?} {step}: 1.{ext} left");
                }
            }
        }
    }

    /// The catch-up copies the tail a bounded piece at a time: writes since the
    /// compaction several times that piece (and index entries across pieces) arrive whole.
    #[test]
    fn a_catch_up_larger_than_one_copy_piece_arrives_whole() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(config(vec![root.path().to_owned()], vec![4])).unwrap();
        let v = store.create_volume("", ReplicaPlacement::default(), Ttl::EMPTY).unwrap();
        let data = |i: u64| vec![i as u8; 300 << 10];
        v.write(&Needle::new(NeedleId(1), Cookie(1), b"old")).unwrap();
        v.delete(NeedleId(1), Cookie(1)).unwrap();
        v.compact().unwrap();
        for i in 2..=12 {
            v.write(&Needle::new(NeedleId(i), Cookie(1), &data(i))).unwrap();
        }
        v.delete(NeedleId(5), Cookie(1)).unwrap();
        let new = store.commit_compaction(v.id()).unwrap();
        assert!(matches!(new.read(NeedleId(1), Cookie(1)), Err(Error::NeedleNotFound(_))));
        assert!(matches!(new.read(NeedleId(5), Cookie(1)), Err(Error::AlreadyDeleted(_))));
        for i in (2..=12).filter(|&i| i != 5) {
            assert_eq!(new.read(NeedleId(i), Cookie(1)).unwrap().needle().data, data(i), "needle {i}");
        }
    }

    /// A crash inside `delete_volume` can leave any of its files behind; a volume
    /// created or copied in later with the same id must not inherit the old needle map.
    #[test]
    fn a_needle_map_left_by_a_crashed_delete_is_not_reused_by_a_new_volume_of_that_id() {
        let root = tempfile::tempdir().unwrap();
        let mut cfg = config(vec![root.path().to_owned()], vec![4]);
        cfg.volume.index = IndexKind::Rocksdb;
        let id = VolumeId(1);

        // Created anew with that id: starts empty.
        stale_map(root.path(), &cfg);
        let store = Store::open(cfg.clone()).unwrap();
        let new = store.create_volume_with_id(Some(id), "", ReplicaPlacement::default(), Ttl::EMPTY).unwrap();
        assert_eq!(new.status().stats.file_count, 0, "a new volume starts with an empty map");
        assert!(matches!(new.read(NeedleId(3), Cookie(1)), Err(Error::NeedleNotFound(_))));
        drop(new);
        store.delete_volume(id, false).unwrap();
        drop(store);

        // Copied in from elsewhere, with an index longer than the old map's watermark.
        let elsewhere = tempfile::tempdir().unwrap();
        let other = Store::open(config(vec![elsewhere.path().to_owned()], vec![4])).unwrap();
        let copied = other.create_volume("", ReplicaPlacement::default(), Ttl::EMPTY).unwrap();
        for i in 1..=8 {
            copied.write(&Needle::new(NeedleId(i), Cookie(2), &vec![b'c'; 10 * i as usize])).unwrap();
        }
        drop((copied, other));
        stale_map(root.path(), &cfg);
        let store = Store::open(cfg.clone()).unwrap();
        for ext in ["dat", "idx", "vif"] {
            std::fs::copy(elsewhere.path().join(format!("1.{ext}")), root.path().join(format!("1.{ext}")))
                .unwrap();
        }
        let mounted = store.mount_copied(root.path(), "", id).unwrap();
        for i in 1..=8 {
            let read =
                mounted.read(NeedleId(i), Cookie(2)).unwrap_or_else(|e| panic!("copied needle {i}: {e}"));
            assert_eq!(read.needle().data, vec![b'c'; 10 * i as usize]);
        }
    }

    /// Leaves in `dir` the RocksDB map of a volume 1 with five needles and none of its
    /// files, as a crash in the middle of deleting it (before this order) would.
    fn stale_map(dir: &Path, cfg: &StoreConfig) {
        let store = Store::open(cfg.clone()).unwrap();
        let v = store.create_volume("", ReplicaPlacement::default(), Ttl::EMPTY).unwrap();
        for i in 1..=5 {
            v.write(&Needle::new(NeedleId(i), Cookie(1), &[i as u8; 100])).unwrap();
        }
        drop((v, store));
        for ext in ["dat", "idx", "vif"] {
            std::fs::remove_file(dir.join(format!("1.{ext}"))).unwrap();
        }
        assert!(dir.join("1.rdb").exists());
    }

    /// Deleting removes the `.dat` last: a crash part way leaves either a volume that
    /// loads (its map rebuilt from what is left) or nothing that names one.
    #[test]
    fn delete_removes_the_dat_last() {
        let root = tempfile::tempdir().unwrap();
        let mut cfg = config(vec![root.path().to_owned()], vec![4]);
        cfg.volume.index = IndexKind::Rocksdb;
        let store = Store::open(cfg).unwrap();
        let v = store.create_volume("", ReplicaPlacement::default(), Ttl::EMPTY).unwrap();
        assert_eq!(v.files().last(), Some(&v.dat_path().to_owned()), "the .dat goes last");
        let id = v.id();
        drop(v);
        store.delete_volume(id, false).unwrap();
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn writes_racing_commits_land_in_the_new_volume() {
        let root = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(config(vec![root.path().to_owned()], vec![4])).unwrap());
        let v = store.create_volume("", ReplicaPlacement::default(), Ttl::EMPTY).unwrap();
        let id = v.id();
        for i in 1..=200u64 {
            v.write(&Needle::new(NeedleId(i), Cookie(1), &[i as u8; 300])).unwrap();
            if i % 2 == 0 {
                v.delete(NeedleId(i), Cookie(1)).unwrap();
            }
        }
        drop(v);
        let writer = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 1000..3000u64 {
                    let needle = Needle::new(NeedleId(i), Cookie(2), b"racing");
                    store.write_to(id, |v| v.write(&needle)).unwrap();
                }
            })
        };
        for _ in 0..3 {
            store.volume(id).unwrap().compact().unwrap();
            store.commit_compaction(id).unwrap();
            // Vacuum cycles of one volume are seconds apart; let the writer catch up.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        writer.join().unwrap();
        let v = store.volume(id).unwrap();
        assert_eq!(v.status().compaction_revision, 3);
        for i in 1000..3000u64 {
            assert_eq!(v.read(NeedleId(i), Cookie(2)).unwrap().needle().data, b"racing", "write {i}");
        }
        for i in 1..=200u64 {
            assert_eq!(v.read(NeedleId(i), Cookie(1)).is_ok(), i % 2 == 1, "needle {i}");
        }
    }

    #[test]
    fn compaction_drops_needles_whose_ttl_ran_out() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(config(vec![root.path().to_owned()], vec![4])).unwrap();
        let ttl: Ttl = "1h".parse().unwrap();
        let v = store.create_volume("", ReplicaPlacement::default(), ttl).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let old = Needle::new(NeedleId(1), Cookie(1), b"expired").with_last_modified(now - 7200);
        let fresh = Needle::new(NeedleId(2), Cookie(2), b"fresh").with_last_modified(now);
        v.write(&old).unwrap();
        v.write(&fresh).unwrap();
        v.compact().unwrap();
        let new = store.commit_compaction(v.id()).unwrap();
        assert!(matches!(new.read(NeedleId(1), Cookie(1)), Err(Error::NeedleNotFound(_))));
        assert_eq!(new.read(NeedleId(2), Cookie(2)).unwrap().needle().data, b"fresh");
    }

    fn put_err(v: &Volume) -> Error {
        v.write(&Needle::new(NeedleId(99), Cookie(1), b"late")).unwrap_err()
    }

    #[test]
    fn commit_without_compaction_cleanup_and_delete() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(config(vec![root.path().to_owned()], vec![4])).unwrap();
        let v = store.create_volume("", ReplicaPlacement::default(), Ttl::EMPTY).unwrap();
        v.write(&Needle::new(NeedleId(1), Cookie(1), b"x")).unwrap();
        assert!(matches!(store.commit_compaction(v.id()), Err(Error::NotCompacted(_))));
        v.compact().unwrap();
        assert!(root.path().join("1.cpd").exists());
        v.cleanup_compaction().unwrap();
        assert!(!root.path().join("1.cpd").exists() && !root.path().join("1.cpx").exists());
        assert!(matches!(store.commit_compaction(v.id()), Err(Error::NotCompacted(_))));

        assert!(matches!(store.delete_volume(v.id(), true), Err(Error::NotEmpty(_))));
        let at = store.create_volume_with_id(Some(VolumeId(7)), "c", ReplicaPlacement::default(), Ttl::EMPTY);
        assert_eq!(at.unwrap().id(), VolumeId(7));
        assert!(matches!(
            store.create_volume_with_id(Some(VolumeId(7)), "", ReplicaPlacement::default(), Ttl::EMPTY),
            Err(Error::VolumeExists(_))
        ));
        store.delete_volume(v.id(), false).unwrap();
        assert!(matches!(put_err(&v), Error::VolumeRetired(_)));
        assert!(matches!(store.volume(VolumeId(1)), Err(Error::VolumeNotFound(_))));
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 3, "only volume 7's files are left: {left:?}");
        assert!(matches!(store.delete_volume(VolumeId(1), false), Err(Error::VolumeNotFound(_))));
    }

    #[test]
    fn collections_and_full_volumes() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(config(vec![root.path().to_owned()], vec![4])).unwrap();
        let v = store.create_volume("pics", ReplicaPlacement::default(), Ttl::EMPTY).unwrap();
        assert!(root.path().join("pics_1.dat").exists() && root.path().join("pics_1.vif").exists());
        v.write(&Needle::new(NeedleId(1), Cookie(1), &vec![0u8; 1 << 20])).unwrap();
        assert!(!store.is_writable(&v), "past the size limit: no more assignments");
        drop((v, store));
        let store = Store::open(config(vec![root.path().to_owned()], vec![4])).unwrap();
        assert_eq!(store.volume(VolumeId(1)).unwrap().collection(), "pics");
    }

    #[test]
    fn a_directory_low_on_space_serves_reads_and_deletes_but_takes_no_writes() {
        let root = tempfile::tempdir().unwrap();
        let dirs = vec![root.path().join("low"), root.path().join("roomy")];
        let store = Store::open(config(dirs.clone(), vec![3])).unwrap();
        let rp = ReplicaPlacement::default();
        let v = store.create_volume("", rp, Ttl::EMPTY).unwrap();
        v.write(&Needle::new(NeedleId(1), Cookie(1), b"kept")).unwrap();
        v.write(&Needle::new(NeedleId(2), Cookie(2), b"gone")).unwrap();
        drop((v, store));

        // 100%: no file system is that empty, so "low" is low from the start.
        let mut low = config(dirs.clone(), vec![3]);
        low.min_free_space = vec![MinFreeSpace::Percent(100.0), MinFreeSpace::Percent(0.0)];
        let store = Store::open(low).unwrap();
        let v = store.volume(VolumeId(1)).unwrap();
        assert!(v.is_read_only() && !v.is_marked_read_only(), "read-only, not marked so");
        assert!(v.status().read_only && !store.is_writable(&v), "told to the master and the assigner");
        assert!(matches!(put_err(&v), Error::ReadOnly(_)));
        assert_eq!(v.read(NeedleId(1), Cookie(1)).unwrap().needle().data, b"kept");
        v.delete(NeedleId(2), Cookie(2)).unwrap();
        // The low directory reports only the slot it uses; new volumes go elsewhere.
        assert_eq!(store.max_volume_count(), 1 + 3);
        let placed = store.create_volume("", rp, Ttl::EMPTY).unwrap();
        assert_eq!(store.dir_index_of(placed.id()), Some(1), "the roomy directory");
        // A vacuum commit does not turn the low disk into a lasting mark.
        v.compact().unwrap();
        let new = store.commit_compaction(v.id()).unwrap();
        assert!(new.is_read_only() && !new.is_marked_read_only());
        assert!(matches!(put_err(&new), Error::ReadOnly(_)));
        drop((v, new, placed, store));

        // Both low: no place for a new volume at all.
        let mut both = config(dirs, vec![3]);
        both.min_free_space = vec![MinFreeSpace::Percent(100.0)];
        let store = Store::open(both).unwrap();
        assert!(matches!(store.create_volume("", rp, Ttl::EMPTY), Err(Error::NoFreeSlot)));
        assert_eq!(store.max_volume_count(), 2);
    }
}
