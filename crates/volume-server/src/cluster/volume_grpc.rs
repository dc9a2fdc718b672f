//! weed's `VolumeServer` gRPC service, the calls `weed master` and weed's tools make:
//! allocate and delete volumes, mark them read-only or writable, the vacuum cycle,
//! batch delete, status and ping, and both sides of moving a volume between servers
//! (see [`super::volume_move`]). Calls not implemented here answer `Unimplemented`
//! (tonic's router does that for every method the service does not declare).

use std::pin::Pin;
use std::sync::Arc;

use needle::{FileId, ReplicaPlacement, Ttl, VolumeId};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::grpc::{blocking, status};
use super::pb::volume_server_pb::volume_server_server::{VolumeServer, VolumeServerServer};
use super::pb::volume_server_pb::*;
use super::pb::{grpc_address, master_pb};
use super::volume_move::{self, CopiesUnderWay};
use rdma_transport::grpc_tls::Dialer;
use volume_store::error::Error;
use volume_store::store::Store;

/// The service over one store.
pub struct VolumeGrpc {
    store: Arc<Store>,
    /// What `VolumeServerStatus` reports.
    version: String,
    data_center: String,
    rack: String,
    copies: CopiesUnderWay,
    /// How other servers' gRPC ports are dialed (volume moves, pings).
    dialer: Dialer,
    /// `--file-size-limit-mb` in bytes: bounds a record received from a peer.
    file_size_limit: u64,
}

impl VolumeGrpc {
    /// The service over `store`; `version`, `data_center` and `rack` are what
    /// `VolumeServerStatus` reports; `dialer` reaches other servers; `file_size_limit`
    /// bounds what a peer may send as one record.
    pub fn new(
        store: Arc<Store>,
        version: String,
        data_center: String,
        rack: String,
        dialer: Dialer,
        file_size_limit: u64,
    ) -> Self {
        Self { store, version, data_center, rack, copies: CopiesUnderWay::default(), dialer, file_size_limit }
    }

    /// The tonic service, ready to add to the server's `Routes`.
    pub fn into_service(self) -> VolumeServerServer<Self> {
        VolumeServerServer::new(self)
    }
}

/// Ping's clock readings: weed's proto carries them as int64 nanoseconds.
fn now_ns() -> i64 {
    volume_store::clock::now_ns() as i64
}

/// weed's per-file answer to a batch delete: HTTP status codes in a gRPC reply.
fn delete_one(store: &Store, file_id: &str, skip_cookie_check: bool) -> DeleteResult {
    let result = |status: u16, error: String, size: u32| DeleteResult {
        file_id: file_id.to_owned(),
        status: i32::from(status),
        error,
        size,
        version: 0,
    };
    let fid: FileId = match file_id.parse() {
        Ok(fid) => fid,
        Err(e) => return result(400, format!("{e}"), 0),
    };
    let volume = match store.volume(fid.volume) {
        Ok(v) => v,
        Err(e) => return result(404, e.to_string(), 0),
    };
    let id = fid.needle_id();
    if !skip_cookie_check {
        match volume.read(id, fid.cookie) {
            Ok(stored) if stored.needle().flags.contains(needle::Flags::CHUNK_MANIFEST) => {
                return result(406, "ChunkManifest: not allowed in batch delete mode.".into(), 0);
            }
            Ok(_) => {}
            Err(Error::CookieMismatch { .. }) => {
                return result(400, "File Random Cookie does not match.".into(), 0);
            }
            Err(e) => return result(404, e.to_string(), 0),
        }
    }
    let cookie = (!skip_cookie_check).then_some(fid.cookie);
    match store.write_to(fid.volume, |volume| volume.delete_checked(id, cookie)) {
        Ok(0) => result(304, String::new(), 0),
        Ok(size) => DeleteResult { version: volume.version() as u32, ..result(202, String::new(), size) },
        Err(e @ (Error::NeedleNotFound(_) | Error::AlreadyDeleted(_))) => result(404, e.to_string(), 0),
        Err(e) => result(500, e.to_string(), 0),
    }
}

/// A data directory's file system as weed reports it: free counts the blocks reserved
/// for root (`f_bfree`), the same figure `--min-free-space` is checked against.
fn disk_status(dir: &std::path::Path) -> DiskStatus {
    let mut status =
        DiskStatus { dir: dir.display().to_string(), disk_type: "hdd".into(), ..Default::default() };
    match volume_store::disk_space::DiskUsage::of(dir) {
        Ok(usage) => {
            status.all = usage.all;
            status.free = usage.free;
            status.used = usage.used();
            status.percent_free = usage.percent_free();
            status.percent_used = usage.percent_used();
        }
        Err(e) => status.error = e.to_string(),
    }
    status
}

type CompactStream = Pin<Box<dyn Stream<Item = Result<VacuumVolumeCompactResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VolumeServer for VolumeGrpc {
    async fn batch_delete(
        &self,
        request: Request<BatchDeleteRequest>,
    ) -> Result<Response<BatchDeleteResponse>, Status> {
        let request = request.into_inner();
        let store = Arc::clone(&self.store);
        let results = tokio::task::spawn_blocking(move || {
            request.file_ids.iter().map(|fid| delete_one(&store, fid, request.skip_cookie_check)).collect()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(BatchDeleteResponse { results }))
    }

    async fn vacuum_volume_check(
        &self,
        request: Request<VacuumVolumeCheckRequest>,
    ) -> Result<Response<VacuumVolumeCheckResponse>, Status> {
        let volume = self.store.volume(VolumeId(request.into_inner().volume_id)).map_err(status)?;
        Ok(Response::new(VacuumVolumeCheckResponse { garbage_ratio: volume.garbage_ratio() }))
    }

    type VacuumVolumeCompactStream = CompactStream;

    async fn vacuum_volume_compact(
        &self,
        request: Request<VacuumVolumeCompactRequest>,
    ) -> Result<Response<CompactStream>, Status> {
        let volume = self.store.volume(VolumeId(request.into_inner().volume_id)).map_err(status)?;
        let size = blocking(move || volume.compact()).await?;
        // One progress message at the end: the master reads the stream to its end.
        let done = VacuumVolumeCompactResponse { processed_bytes: size as i64, load_avg_1m: 0.0 };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(done)]))))
    }

    async fn vacuum_volume_commit(
        &self,
        request: Request<VacuumVolumeCommitRequest>,
    ) -> Result<Response<VacuumVolumeCommitResponse>, Status> {
        let id = VolumeId(request.into_inner().volume_id);
        let store = Arc::clone(&self.store);
        let volume = blocking(move || store.commit_compaction(id)).await?;
        Ok(Response::new(VacuumVolumeCommitResponse {
            is_read_only: volume.is_read_only(),
            volume_size: volume.dat_size(),
        }))
    }

    async fn vacuum_volume_cleanup(
        &self,
        request: Request<VacuumVolumeCleanupRequest>,
    ) -> Result<Response<VacuumVolumeCleanupResponse>, Status> {
        let volume = self.store.volume(VolumeId(request.into_inner().volume_id)).map_err(status)?;
        blocking(move || volume.cleanup_compaction()).await?;
        Ok(Response::new(VacuumVolumeCleanupResponse {}))
    }

    async fn delete_collection(
        &self,
        request: Request<DeleteCollectionRequest>,
    ) -> Result<Response<DeleteCollectionResponse>, Status> {
        let collection = request.into_inner().collection;
        let store = Arc::clone(&self.store);
        blocking(move || {
            for volume in store.volumes().into_iter().filter(|v| v.collection() == collection) {
                store.delete_volume(volume.id(), false)?;
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(DeleteCollectionResponse {}))
    }

    async fn allocate_volume(
        &self,
        request: Request<AllocateVolumeRequest>,
    ) -> Result<Response<AllocateVolumeResponse>, Status> {
        let request = request.into_inner();
        let replica: ReplicaPlacement = if request.replication.is_empty() {
            ReplicaPlacement::default()
        } else {
            request.replication.parse().map_err(|e| Status::invalid_argument(format!("replication: {e}")))?
        };
        let ttl: Ttl = if request.ttl.is_empty() {
            Ttl::EMPTY
        } else {
            request.ttl.parse().map_err(|e| Status::invalid_argument(format!("ttl: {e}")))?
        };
        if !matches!(request.version, 0 | 3) {
            return Err(Status::invalid_argument(format!(
                "needle version {} not supported: this server creates version 3 volumes",
                request.version
            )));
        }
        if !matches!(request.disk_type.as_str(), "" | "hdd") {
            return Err(Status::invalid_argument(format!("no {:?} disks here", request.disk_type)));
        }
        let store = Arc::clone(&self.store);
        blocking(move || {
            store.create_volume_with_id(Some(VolumeId(request.volume_id)), &request.collection, replica, ttl)
        })
        .await?;
        Ok(Response::new(AllocateVolumeResponse {}))
    }

    async fn volume_delete(
        &self,
        request: Request<VolumeDeleteRequest>,
    ) -> Result<Response<VolumeDeleteResponse>, Status> {
        let request = request.into_inner();
        let store = Arc::clone(&self.store);
        blocking(move || store.delete_volume(VolumeId(request.volume_id), request.only_empty)).await?;
        Ok(Response::new(VolumeDeleteResponse {}))
    }

    async fn volume_mark_readonly(
        &self,
        request: Request<VolumeMarkReadonlyRequest>,
    ) -> Result<Response<VolumeMarkReadonlyResponse>, Status> {
        let request = request.into_inner();
        let store = Arc::clone(&self.store);
        blocking(move || store.set_read_only(VolumeId(request.volume_id), true, request.persist)).await?;
        Ok(Response::new(VolumeMarkReadonlyResponse {}))
    }

    async fn volume_mark_writable(
        &self,
        request: Request<VolumeMarkWritableRequest>,
    ) -> Result<Response<VolumeMarkWritableResponse>, Status> {
        let id = VolumeId(request.into_inner().volume_id);
        let store = Arc::clone(&self.store);
        blocking(move || store.set_read_only(id, false, true)).await?;
        Ok(Response::new(VolumeMarkWritableResponse {}))
    }

    async fn volume_status(
        &self,
        request: Request<VolumeStatusRequest>,
    ) -> Result<Response<VolumeStatusResponse>, Status> {
        let status = self.store.volume(VolumeId(request.into_inner().volume_id)).map_err(status)?.status();
        Ok(Response::new(VolumeStatusResponse {
            is_read_only: status.read_only,
            volume_size: status.dat_size,
            file_count: status.stats.file_count,
            file_deleted_count: status.stats.deletion_count,
        }))
    }

    async fn volume_server_status(
        &self,
        _request: Request<VolumeServerStatusRequest>,
    ) -> Result<Response<VolumeServerStatusResponse>, Status> {
        let dirs = self.store.config().dirs.clone();
        let disk_statuses =
            tokio::task::spawn_blocking(move || dirs.iter().map(|d| disk_status(d)).collect())
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(VolumeServerStatusResponse {
            disk_statuses,
            memory_status: None,
            version: self.version.clone(),
            data_center: self.data_center.clone(),
            rack: self.rack.clone(),
            state: Some(VolumeServerState::default()),
        }))
    }

    async fn volume_mount(
        &self,
        request: Request<VolumeMountRequest>,
    ) -> Result<Response<VolumeMountResponse>, Status> {
        let id = VolumeId(request.into_inner().volume_id);
        let store = Arc::clone(&self.store);
        blocking(move || store.mount(id).map(drop)).await?;
        Ok(Response::new(VolumeMountResponse {}))
    }

    async fn volume_unmount(
        &self,
        request: Request<VolumeUnmountRequest>,
    ) -> Result<Response<VolumeUnmountResponse>, Status> {
        let id = VolumeId(request.into_inner().volume_id);
        let store = Arc::clone(&self.store);
        blocking(move || store.unmount(id)).await?;
        Ok(Response::new(VolumeUnmountResponse {}))
    }

    type VolumeCopyStream = volume_move::VolumeCopyStream;

    async fn volume_copy(
        &self,
        request: Request<VolumeCopyRequest>,
    ) -> Result<Response<Self::VolumeCopyStream>, Status> {
        let stream = volume_move::volume_copy(
            Arc::clone(&self.store),
            &self.copies,
            self.dialer.clone(),
            request.into_inner(),
        )?;
        Ok(Response::new(stream))
    }

    async fn read_volume_file_status(
        &self,
        request: Request<ReadVolumeFileStatusRequest>,
    ) -> Result<Response<ReadVolumeFileStatusResponse>, Status> {
        let volume = self.store.volume(VolumeId(request.into_inner().volume_id)).map_err(status)?;
        let response = blocking(move || volume_move::read_file_status(&volume)).await?;
        Ok(Response::new(response))
    }

    type CopyFileStream = volume_move::CopyFileStream;

    async fn copy_file(
        &self,
        request: Request<CopyFileRequest>,
    ) -> Result<Response<Self::CopyFileStream>, Status> {
        Ok(Response::new(volume_move::copy_file(&self.store, request.into_inner())?))
    }

    type VolumeTailSenderStream = volume_move::TailSenderStream;

    async fn volume_tail_sender(
        &self,
        request: Request<VolumeTailSenderRequest>,
    ) -> Result<Response<Self::VolumeTailSenderStream>, Status> {
        Ok(Response::new(volume_move::tail_sender(Arc::clone(&self.store), request.into_inner())?))
    }

    async fn volume_tail_receiver(
        &self,
        request: Request<VolumeTailReceiverRequest>,
    ) -> Result<Response<VolumeTailReceiverResponse>, Status> {
        volume_move::tail_receiver(
            Arc::clone(&self.store),
            &self.dialer,
            request.into_inner(),
            self.file_size_limit,
        )
        .await?;
        Ok(Response::new(VolumeTailReceiverResponse {}))
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let request = request.into_inner();
        let start_time_ns = now_ns();
        if request.target.is_empty() {
            return Ok(Response::new(PingResponse {
                start_time_ns,
                remote_time_ns: start_time_ns,
                stop_time_ns: now_ns(),
            }));
        }
        let address = grpc_address(&request.target).map_err(Status::invalid_argument)?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(10));
        let unreachable = |e: tonic::transport::Error| Status::unavailable(format!("{address}: {e}"));
        let remote_time_ns = match request.target_type.as_str() {
            "master" => {
                let mut client = master_pb::seaweed_client::SeaweedClient::new(
                    self.dialer.connect(endpoint).await.map_err(unreachable)?,
                );
                client.ping(master_pb::PingRequest::default()).await?.into_inner().start_time_ns
            }
            "volumeServer" => {
                let channel = self.dialer.connect(endpoint).await.map_err(unreachable)?;
                let mut client = volume_server_client::VolumeServerClient::new(channel);
                client.ping(PingRequest::default()).await?.into_inner().start_time_ns
            }
            other => {
                return Err(Status::unimplemented(format!("pinging a {other:?} is not implemented")));
            }
        };
        Ok(Response::new(PingResponse { start_time_ns, remote_time_ns, stop_time_ns: now_ns() }))
    }
}
