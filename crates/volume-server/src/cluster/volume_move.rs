//! Moving a volume between servers, the calls `weed shell`'s volume.move (and
//! volume.copy, volume.balance, volume.fix.replication) make. The shell marks the
//! source read-only, then asks the TARGET for `VolumeCopy`: the target reads the
//! source's `ReadVolumeFileStatus` (a consistent cut: `.dat` and `.idx` sizes), pulls
//! `.dat`, `.idx` and `.vif` up to that cut with the source's `CopyFile` streams, and
//! mounts the copy. Then `VolumeTailReceiver` on the target replays what the source
//! appended after the copy's last AppendAtNs (the source's `VolumeTailSender`), and
//! the shell deletes the source. This module is both sides; either side may be weed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use needle::{HEADER_SIZE, Needle, NeedleHeader, Version, VolumeId};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use rdma_transport::grpc_tls::Dialer;

use super::grpc::{blocking, status};
use super::pb::grpc_address;
use super::pb::volume_server_pb::volume_server_client::VolumeServerClient;
use super::pb::volume_server_pb::*;
use volume_store::error::Error;
use volume_store::store::{PARTIAL_SUFFIX, Store};
use volume_store::vif::VolumeInfo as VifFile;
use volume_store::volume::{Volume, base_name, check_collection};

/// Bytes per streamed message (weed's `BufferSizeLimit`): well under gRPC's 4 MiB
/// default message limit on either side.
const CHUNK: usize = 2 * 1024 * 1024;

/// The longest a copy waits for the source's next message before giving up on it
/// (a source that stalls without closing its connection).
const STALL: Duration = Duration::from_secs(60);

/// How often `VolumeCopy` reports progress to the shell.
const PROGRESS_EVERY: u64 = 128 * 1024 * 1024;

/// The most `.vif` bytes a copy takes (weed's stop offset for it).
const VIF_LIMIT: u64 = 1024 * 1024;

/// How long a tail sender waits between rounds (weed's: the idle timeout counts them).
const TAIL_ROUND: Duration = Duration::from_secs(2);

pub type CopyFileStream = Pin<Box<dyn Stream<Item = Result<CopyFileResponse, Status>> + Send>>;
pub type VolumeCopyStream = Pin<Box<dyn Stream<Item = Result<VolumeCopyResponse, Status>> + Send>>;
pub type TailSenderStream = Pin<Box<dyn Stream<Item = Result<VolumeTailSenderResponse, Status>> + Send>>;

/// `ReadVolumeFileStatus`: the cut a copy takes (see [`Volume::file_status`]).
pub fn read_file_status(volume: &Volume) -> Result<ReadVolumeFileStatusResponse, Error> {
    let files = volume.file_status();
    let vif = VifFile::load(&volume.dat_path().with_extension("vif"))?;
    let volume_info = vif.map(|vif| VolumeInfo {
        version: vif.version,
        replication: vif.replication,
        bytes_offset: vif.bytes_offset,
        dat_file_size: vif.dat_file_size,
        expire_at_sec: vif.expire_at_sec.max(0) as u64,
        read_only: vif.read_only,
    });
    Ok(ReadVolumeFileStatusResponse {
        volume_id: volume.id().0,
        idx_file_timestamp_seconds: files.modified_at_second,
        idx_file_size: files.idx_size,
        dat_file_timestamp_seconds: files.modified_at_second,
        dat_file_size: files.dat_size,
        file_count: files.file_count,
        compaction_revision: u32::from(volume.compaction_revision()),
        collection: volume.collection().to_owned(),
        // weed's name for the default (hard drive) disk type.
        disk_type: String::new(),
        volume_info,
        version: volume.version() as u32,
    })
}

/// `CopyFile` (source side): streams one of a volume's files up to `stop_offset`, in
/// `CHUNK`-sized messages read as they are sent (never the whole file at once).
/// The first message carries the file's modification time: weed's receiver treats a
/// stream without one as "the file does not exist".
pub fn copy_file(store: &Store, request: CopyFileRequest) -> Result<CopyFileStream, Status> {
    if request.is_ec_volume {
        return Err(Status::unimplemented("erasure-coded volumes are not served by this server"));
    }
    let volume = store.volume(VolumeId(request.volume_id)).map_err(status)?;
    // u32::MAX: the caller does not care which revision it gets (weed's convention).
    let revision = u32::from(volume.compaction_revision());
    if request.compaction_revision != u32::MAX && request.compaction_revision != revision {
        return Err(Status::failed_precondition(format!(
            "volume {} is compacted: revision {revision} here, the copy started at {}",
            request.volume_id, request.compaction_revision
        )));
    }
    let path = match request.ext.as_str() {
        ".dat" => volume.dat_path().to_owned(),
        ".idx" => volume.idx_path().to_owned(),
        ".vif" => volume.dat_path().with_extension("vif"),
        other => {
            return Err(Status::invalid_argument(format!(
                "cannot copy {other:?} files: this server copies .dat, .idx and .vif"
            )));
        }
    };
    let missing_ok = request.ignore_source_file_not_found || request.stop_offset == 0;
    let file = match std::fs::File::open(&path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing_ok => None,
        Err(e) => return Err(status(Error::io(&path, e))),
    };
    let (tx, rx) = mpsc::channel(2);
    if let Some(file) = file {
        tokio::task::spawn_blocking(move || send_file(&file, &path, request.stop_offset, &tx));
    }
    Ok(Box::pin(ReceiverStream::new(rx)))
}

fn send_file(
    file: &std::fs::File,
    path: &Path,
    stop_offset: u64,
    tx: &mpsc::Sender<Result<CopyFileResponse, Status>>,
) {
    use std::os::unix::fs::FileExt;
    let modified_ts_ns = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(1, |d| d.as_nanos().max(1) as i64);
    let mut first = Some(modified_ts_ns);
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < stop_offset {
        let want = (stop_offset - at).min(CHUNK as u64) as usize;
        let n = match file.read_at(&mut buf[..want], at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(status(Error::io(path, e))));
                return;
            }
        };
        let message =
            CopyFileResponse { file_content: buf[..n].to_vec(), modified_ts_ns: first.take().unwrap_or(0) };
        if tx.blocking_send(Ok(message)).is_err() {
            return; // the caller hung up
        }
        at += n as u64;
    }
    if let Some(modified_ts_ns) = first {
        let _ = tx.blocking_send(Ok(CopyFileResponse { file_content: Vec::new(), modified_ts_ns }));
    }
}

/// A client for another volume server (`host:port` or `host:port.grpcPort`). Keepalive
/// pings end a call whose peer went away instead of letting it wait forever.
async fn connect(server: &str, dialer: &Dialer) -> Result<VolumeServerClient<Channel>, Status> {
    let address = grpc_address(server).map_err(Status::invalid_argument)?;
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    let channel = dialer
        .connect(endpoint)
        .await
        .map_err(|e| Status::unavailable(format!("volume server {server} ({address}): {e}")))?;
    Ok(VolumeServerClient::new(channel))
}

/// Volume ids with a `VolumeCopy` under way here: a second copy of the same volume is
/// refused rather than racing the first one for the same files.
#[derive(Default)]
pub struct CopiesUnderWay(Arc<Mutex<HashSet<u32>>>);

struct CopyTicket(Arc<Mutex<HashSet<u32>>>, u32);

impl Drop for CopyTicket {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

impl CopiesUnderWay {
    fn start(&self, id: u32) -> Result<CopyTicket, Status> {
        if !self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id) {
            return Err(Status::already_exists(format!("a copy of volume {id} is already under way here")));
        }
        Ok(CopyTicket(Arc::clone(&self.0), id))
    }
}

/// Files written by a copy; removed when dropped unless the copy got to `keep` them.
struct Staged {
    paths: Vec<PathBuf>,
    keep: bool,
}

impl Staged {
    /// The copy is mounted: its files stay.
    fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep {
            for path in &self.paths {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// `VolumeCopy` (target side): pulls volume `request.volume_id` from
/// `request.source_data_node` and mounts it. Progress messages stream while the
/// `.dat` comes in; the last message carries the AppendAtNs the tail starts from.
/// The files are written under temporary names and renamed only when all of them are
/// complete and sized as the source said, so a failed or abandoned copy leaves
/// nothing behind and nothing mounted.
pub fn volume_copy(
    store: Arc<Store>,
    copies: &CopiesUnderWay,
    dialer: Dialer,
    request: VolumeCopyRequest,
) -> Result<VolumeCopyStream, Status> {
    if !matches!(request.disk_type.as_str(), "" | "hdd") {
        return Err(Status::invalid_argument(format!("no {:?} disks here", request.disk_type)));
    }
    let id = VolumeId(request.volume_id);
    store.dir_for_copy(id).map_err(status)?;
    let ticket = copies.start(id.0)?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let pace = Pace::new(request.io_byte_per_second);
        let result = pull_volume(&store, id, &request.source_data_node, &dialer, pace, &tx).await;
        drop(ticket);
        let last =
            result.map(|last_append_at_ns| VolumeCopyResponse { last_append_at_ns, processed_bytes: 0 });
        if let Err(e) = &last {
            tracing::warn!(volume = id.0, source = request.source_data_node, error = %e, "volume copy failed");
        }
        let _ = tx.send(last).await;
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

async fn pull_volume(
    store: &Arc<Store>,
    id: VolumeId,
    source: &str,
    dialer: &Dialer,
    pace: Pace,
    progress: &mpsc::Sender<Result<VolumeCopyResponse, Status>>,
) -> Result<u64, Status> {
    let mut client = connect(source, dialer).await?;
    let cut = client
        .read_volume_file_status(ReadVolumeFileStatusRequest { volume_id: id.0 })
        .await
        .map_err(|e| Status::new(e.code(), format!("volume {id} on {source}: {}", e.message())))?
        .into_inner();
    let ours = u32::from(store.config().volume.width.bytes());
    if let Some(theirs) =
        cut.volume_info.as_ref().map(|info| info.bytes_offset).filter(|&b| b != 0 && b != ours)
    {
        return Err(Status::failed_precondition(format!(
            "volume {id} on {source} uses {theirs}-byte .idx offsets; this server runs with {ours}"
        )));
    }
    check_collection(&cut.collection)
        .map_err(|e| Status::invalid_argument(format!("volume {id} on {source}: {e}")))?;
    let dir = store.dir_for_copy(id).map_err(status)?;
    let base = base_name(&cut.collection, id);
    if dir.join(format!("{base}.dat")).exists() {
        return Err(Status::already_exists(format!(
            "{} holds files of volume {id} that are not mounted; mount or remove them first",
            dir.display()
        )));
    }
    let temp = |ext: &str| dir.join(format!("{base}.{ext}{PARTIAL_SUFFIX}"));
    let mut staged = Staged { paths: vec![temp("dat"), temp("idx"), temp("vif")], keep: false };

    let mut fetch = FileFetch {
        client: &mut client,
        id: id.0,
        collection: &cut.collection,
        revision: cut.compaction_revision,
        pace,
    };
    let mut reported = 0u64;
    let dat = fetch
        .fetch(
            ".dat",
            cut.dat_file_size,
            false,
            &staged.paths[0],
            |done| {
                let report = done >= reported + PROGRESS_EVERY;
                if report {
                    reported = done;
                }
                report.then_some(done)
            },
            progress,
        )
        .await?;
    let idx = fetch.fetch(".idx", cut.idx_file_size, false, &staged.paths[1], |_| None, progress).await?;
    let vif = fetch.fetch(".vif", VIF_LIMIT, true, &staged.paths[2], |_| None, progress).await?;
    for (what, got, want) in [(".dat", dat, cut.dat_file_size), (".idx", idx, cut.idx_file_size)] {
        if got != Some(want) {
            return Err(Status::data_loss(format!(
                "copying volume {id} from {source}: got {} {what} bytes, the source said {want}",
                got.unwrap_or(0)
            )));
        }
    }

    // Complete: move the files into place (the .dat last: its name is what makes a
    // volume) and mount them. Until `keep`, a failure removes whatever was renamed.
    let finals: Vec<PathBuf> =
        ["dat", "idx", "vif"].iter().map(|ext| dir.join(format!("{base}.{ext}"))).collect();
    let order: &[usize] = if vif.is_some() { &[1, 2, 0] } else { &[1, 0] };
    let collection = cut.collection.clone();
    let store = Arc::clone(store);
    let volume = blocking(move || -> Result<Arc<Volume>, Error> {
        for &i in order {
            std::fs::rename(&staged.paths[i], &finals[i]).map_err(|e| Error::io(&finals[i], e))?;
            staged.paths[i] = finals[i].clone();
        }
        volume_store::durable::sync_parent(&finals[0])?;
        // `dir_for_copy` found the id free; a volume created meanwhile makes this fail.
        let volume = store.mount_copied(&dir, &collection, id)?;
        staged.keep();
        Ok(volume)
    })
    .await?;
    let last = volume.file_status().last_append_ns;
    // weed's fallback for volumes without AppendAtNs: the .dat's modification time.
    Ok(if last != 0 { last } else { cut.dat_file_timestamp_seconds.saturating_mul(1_000_000_000) })
}

/// One `CopyFile` pull after another from the same source, at the same revision.
struct FileFetch<'a> {
    client: &'a mut VolumeServerClient<Channel>,
    id: u32,
    collection: &'a str,
    revision: u32,
    pace: Pace,
}

/// The shell's `-ioBytePerSecond` for a copy (weed applies it on the target): after
/// each chunk, waits until the bytes so far are no ahead of the rate.
struct Pace {
    bytes_per_second: u64,
    started: tokio::time::Instant,
    done: u64,
}

impl Pace {
    /// No limit for 0 or less (weed's default).
    fn new(bytes_per_second: i64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(0) as u64,
            started: tokio::time::Instant::now(),
            done: 0,
        }
    }

    async fn account(&mut self, bytes: usize) {
        self.done += bytes as u64;
        if self.bytes_per_second > 0 {
            let due = Duration::from_secs_f64(self.done as f64 / self.bytes_per_second as f64);
            tokio::time::sleep_until(self.started + due).await;
        }
    }
}

impl FileFetch<'_> {
    /// Streams file `ext` of the volume (up to `stop_offset` bytes) into `path`,
    /// synced. `Ok(None)`: the source has no such file (allowed with `missing_ok`);
    /// otherwise the bytes written. `report` turns bytes done into a progress message.
    async fn fetch(
        &mut self,
        ext: &str,
        stop_offset: u64,
        missing_ok: bool,
        path: &Path,
        mut report: impl FnMut(u64) -> Option<u64>,
        progress: &mpsc::Sender<Result<VolumeCopyResponse, Status>>,
    ) -> Result<Option<u64>, Status> {
        use tokio::io::AsyncWriteExt;
        let request = CopyFileRequest {
            volume_id: self.id,
            ext: ext.to_owned(),
            compaction_revision: self.revision,
            stop_offset,
            collection: self.collection.to_owned(),
            is_ec_volume: false,
            ignore_source_file_not_found: missing_ok,
        };
        let failed = |e: Status| {
            Status::new(e.code(), format!("copying {ext} of volume {}: {}", self.id, e.message()))
        };
        let mut stream = self.client.copy_file(request).await.map_err(failed)?.into_inner();
        let io = |e: std::io::Error| status(Error::io(path, e));
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let (mut written, mut found) = (0u64, false);
        let stalled = || {
            Status::deadline_exceeded(format!("copying {ext} of volume {}: no data for {STALL:?}", self.id))
        };
        while let Some(message) =
            tokio::time::timeout(STALL, stream.message()).await.map_err(|_| stalled())?.map_err(failed)?
        {
            found |= message.modified_ts_ns != 0;
            written += message.file_content.len() as u64;
            if written > stop_offset {
                return Err(Status::data_loss(format!(
                    "copying {ext} of volume {}: the source sent more than the {stop_offset} bytes asked",
                    self.id
                )));
            }
            if progress.is_closed() {
                return Err(Status::cancelled("the caller of VolumeCopy hung up"));
            }
            file.write_all(&message.file_content).await.map_err(io)?;
            self.pace.account(message.file_content.len()).await;
            if let Some(processed_bytes) = report(written) {
                let message =
                    VolumeCopyResponse { last_append_at_ns: 0, processed_bytes: processed_bytes as i64 };
                if progress.send(Ok(message)).await.is_err() {
                    return Err(Status::cancelled("the caller of VolumeCopy hung up"));
                }
            }
        }
        if !found {
            if missing_ok {
                drop(file);
                let _ = tokio::fs::remove_file(path).await;
                return Ok(None);
            }
            return Err(Status::not_found(format!("volume {} has no {ext} file on the source", self.id)));
        }
        file.sync_all().await.map_err(io)?;
        Ok(Some(written))
    }
}

/// `VolumeTailSender` (source side): streams every record appended after
/// `since_ns`, then keeps looking every two seconds for more. With an idle timeout
/// it ends after that many rounds without news (weed counts rounds, not seconds);
/// with 0 it runs until the caller hangs up.
pub fn tail_sender(store: Arc<Store>, request: VolumeTailSenderRequest) -> Result<TailSenderStream, Status> {
    let id = VolumeId(request.volume_id);
    let volume = store.volume(id).map_err(status)?;
    if volume.version() != Version::V3 {
        return Err(Status::failed_precondition(format!(
            "volume {id} is version {}: only version 3 records carry the timestamps a tail follows",
            volume.version() as u32
        )));
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut position = volume.data_start();
        let mut last_ns = request.since_ns;
        let mut idle_rounds_left = request.idle_timeout_seconds;
        loop {
            // A compaction or delete replaces the volume: its offsets mean nothing now.
            match store.volume(id) {
                Ok(current) if Arc::ptr_eq(&current, &volume) => {}
                _ => {
                    let _ = tx
                        .send(Err(Status::aborted(format!(
                            "volume {id} was compacted or deleted during the tail"
                        ))))
                        .await;
                    return;
                }
            }
            let (v, sender) = (Arc::clone(&volume), tx.clone());
            let round =
                tokio::task::spawn_blocking(move || send_records_since(&v, position, last_ns, &sender)).await;
            let (next_position, newest_ns) = match round {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                    return;
                }
            };
            position = next_position;
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(TAIL_ROUND).await;
            if newest_ns > last_ns {
                last_ns = newest_ns;
                idle_rounds_left = request.idle_timeout_seconds;
            } else if request.idle_timeout_seconds != 0 {
                idle_rounds_left = idle_rounds_left.saturating_sub(1);
                if idle_rounds_left == 0 {
                    return;
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Sends the records from `position` to the volume's current end whose AppendAtNs
/// is after `since_ns`, each as header + body in [`CHUNK`]-sized pieces (weed's
/// framing: the header repeats, `is_last_chunk` marks the record's last piece).
/// Returns where the scan stopped and the newest AppendAtNs sent (`since_ns` if none).
fn send_records_since(
    volume: &Volume,
    mut position: u64,
    since_ns: u64,
    tx: &mpsc::Sender<Result<VolumeTailSenderResponse, Status>>,
) -> Result<(u64, u64), Status> {
    let version = volume.version();
    let end = volume.file_status().dat_size;
    let mut newest = since_ns;
    let mut header = [0u8; HEADER_SIZE];
    let mut stamp = [0u8; 8];
    while position < end {
        volume.read_data(position, &mut header).map_err(status)?;
        let size = NeedleHeader::parse(&header).map_err(|e| Status::data_loss(e.to_string()))?.size;
        let record_size = version.record_size(size);
        if position + record_size > end {
            return Err(Status::data_loss(format!(
                "volume {}: record at {position} runs past the end ({end})",
                volume.id()
            )));
        }
        let stamp_at = position + (HEADER_SIZE + size as usize + needle::CHECKSUM_SIZE) as u64;
        volume.read_data(stamp_at, &mut stamp).map_err(status)?;
        let append_at_ns = u64::from_be_bytes(stamp);
        if append_at_ns > since_ns {
            let body_len = record_size - HEADER_SIZE as u64;
            let mut sent = 0u64;
            loop {
                let n = (body_len - sent).min(CHUNK as u64) as usize;
                let mut body = vec![0u8; n];
                volume.read_data(position + HEADER_SIZE as u64 + sent, &mut body).map_err(status)?;
                sent += n as u64;
                let message = VolumeTailSenderResponse {
                    needle_header: header.to_vec(),
                    needle_body: body,
                    is_last_chunk: sent == body_len,
                    version: version as u32,
                };
                if tx.blocking_send(Ok(message)).is_err() {
                    return Ok((position, newest)); // the caller hung up
                }
                if sent == body_len {
                    break;
                }
            }
            newest = newest.max(append_at_ns);
        }
        position += record_size;
    }
    Ok((position, newest))
}

/// Room a record takes beyond its data: header, name, mime, pairs (64 KiB at most),
/// the fixed fields, checksum, timestamp and padding.
const RECORD_OVERHEAD: u64 = 128 << 10;

/// `VolumeTailReceiver` (target side): follows the source's `VolumeTailSender` from
/// `since_ns` and applies each record to the local copy: a write, or for a tombstone
/// (a record without body) a delete. Every record is checked (header, CRC32-C) first.
/// A record whose data could not be uploaded here (past `file_size_limit`) is refused
/// before it is buffered.
pub async fn tail_receiver(
    store: Arc<Store>,
    dialer: &Dialer,
    request: VolumeTailReceiverRequest,
    file_size_limit: u64,
) -> Result<(), Status> {
    let most_record_bytes = file_size_limit.saturating_add(RECORD_OVERHEAD);
    let id = VolumeId(request.volume_id);
    let local_version = store.volume(id).map_err(status)?.version();
    let mut client = connect(&request.source_volume_server, dialer).await?;
    let mut stream = client
        .volume_tail_sender(VolumeTailSenderRequest {
            volume_id: id.0,
            since_ns: request.since_ns,
            idle_timeout_seconds: request.idle_timeout_seconds,
        })
        .await?
        .into_inner();
    let mut record = TailRecord::new(most_record_bytes);
    // The sender goes quiet for up to `idle_timeout_seconds` rounds before it ends;
    // quieter than that (plus slack) means it is stuck. Without a timeout it never ends
    // by itself, and neither does this call.
    let quiet_limit = match request.idle_timeout_seconds {
        0 => Duration::MAX,
        rounds => TAIL_ROUND * rounds + STALL,
    };
    loop {
        let next = match quiet_limit {
            Duration::MAX => stream.message().await?,
            limit => tokio::time::timeout(limit, stream.message()).await.map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the tail from {} went quiet",
                    request.source_volume_server
                ))
            })??,
        };
        let Some(message) = next else { break };
        if message.needle_header.is_empty() {
            continue;
        }
        let version = record_version(message.version, local_version)?;
        let Some(complete) =
            record.push(&message.needle_header, &message.needle_body, version, message.is_last_chunk)?
        else {
            continue;
        };
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || apply_record(&store, id, &complete, version))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
    }
    if !record.is_empty() {
        return Err(Status::data_loss("the tail ended in the middle of a record"));
    }
    Ok(())
}

/// One tail record reassembled from the sender's messages: its header (in every
/// message; the first one's counts), then body pieces until the last chunk. The
/// framing's entry point: `VolumeTailReceiver` feeds it each message of the stream.
pub struct TailRecord {
    bytes: Vec<u8>,
    /// The record's size as its header gives it.
    expected: u64,
    /// The largest record taken: the buffer grows with what the peer sends, up to this.
    most: u64,
}

impl TailRecord {
    /// Takes records of at most `most` bytes (padding included).
    pub fn new(most: u64) -> Self {
        Self { bytes: Vec::new(), expected: 0, most }
    }

    /// Whether no record is part way (the stream may end here).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Adds one message's pieces; returns the record once its last chunk arrived.
    pub fn push(
        &mut self,
        header: &[u8],
        body: &[u8],
        version: Version,
        last: bool,
    ) -> Result<Option<Vec<u8>>, Status> {
        if self.bytes.is_empty() {
            let parsed = NeedleHeader::parse(header)
                .map_err(|e| Status::invalid_argument(format!("tail record header: {e}")))?;
            let expected = version.record_size(parsed.size);
            if expected > self.most {
                return Err(Status::resource_exhausted(format!(
                    "a tail record of {expected} bytes is larger than the {} this server takes",
                    self.most
                )));
            }
            self.expected = expected;
            self.bytes.extend_from_slice(&header[..HEADER_SIZE]);
        }
        if (self.bytes.len() + body.len()) as u64 > self.expected {
            return Err(Status::invalid_argument("a tail record's body is longer than its header says"));
        }
        self.bytes.extend_from_slice(body);
        Ok(last.then(|| std::mem::take(&mut self.bytes)))
    }
}

/// The format of a tail record as the sender names it (0: the receiving volume's).
fn record_version(wire: u32, local: Version) -> Result<Version, Status> {
    match wire {
        0 => Ok(local),
        v => u8::try_from(v)
            .ok()
            .and_then(|byte| Version::from_byte(byte).ok())
            .ok_or_else(|| Status::invalid_argument(format!("tail record: unknown needle version {v}"))),
    }
}

fn apply_record(store: &Store, id: VolumeId, record: &[u8], version: Version) -> Result<(), Status> {
    let needle = Needle::decode(record, version)
        .map_err(|e| Status::data_loss(format!("tail record for volume {id}: {e}")))?;
    if NeedleHeader::parse(record).map_err(|e| Status::data_loss(e.to_string()))?.size == 0 {
        return match store.write_to(id, |volume| volume.delete_checked(needle.id, None)) {
            Ok(_) | Err(Error::NeedleNotFound(_) | Error::AlreadyDeleted(_)) => Ok(()),
            Err(e) => Err(status(e)),
        };
    }
    store.write_to(id, |volume| volume.write(&needle)).map(|_| ()).map_err(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_record_larger_than_the_bound_is_refused_before_it_is_buffered() {
        let header = |size: u32| {
            let mut h = [0u8; HEADER_SIZE];
            h[4..12].copy_from_slice(&7u64.to_be_bytes());
            h[12..16].copy_from_slice(&size.to_be_bytes());
            h
        };
        let mut record = TailRecord::new(1 << 20);
        let refused = record.push(&header(u32::MAX - 8), &[0u8; 64], Version::V3, false).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
        assert!(record.is_empty(), "nothing of it kept");
        // One within the bound is reassembled from its pieces.
        let size = 100;
        let total = Version::V3.record_size(size) as usize;
        let body = vec![1u8; total - HEADER_SIZE];
        assert!(record.push(&header(size), &body[..50], Version::V3, false).unwrap().is_none());
        let whole = record.push(&header(size), &body[50..], Version::V3, true).unwrap().unwrap();
        assert_eq!(whole.len(), total);
        assert!(record.is_empty());
    }

    #[test]
    fn a_tail_record_version_outside_a_byte_is_invalid_not_truncated() {
        assert_eq!(record_version(0, Version::V3).unwrap(), Version::V3);
        assert_eq!(record_version(2, Version::V3).unwrap(), Version::V2);
        for wire in [4, 257, 259, u32::MAX] {
            let refused = record_version(wire, Version::V3).expect_err("a version that is none");
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{wire}");
        }
    }
}
