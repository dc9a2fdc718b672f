//! The filer's gRPC calls the client makes (weed's `SeaweedFiler` service), each bounded
//! by the RPC timeout, with failures as typed SDK errors; and the filer as the client's
//! source of volume locations (`LookupVolume`).

use super::pb;
use super::pb::seaweed_filer_client::SeaweedFilerClient;
use crate::master::VolumeLocator;
use crate::{BoxFuture, Error};
use needle::VolumeId;
use rdma_transport::grpc_tls::{Dialer, grpc_address};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// weed's text for "no such entry" (`filer_pb.ErrNotFound`), which its filer returns
/// as the status message of a plain Go error (code Unknown).
const NOT_FOUND_MESSAGE: &str = "no entry is found in filer store";

/// A connection to one filer's gRPC port. Clones share it.
#[derive(Clone, Debug)]
pub(crate) struct FilerRpc {
    /// The filer as given (`host:port` of its HTTP port, or `host:port.grpcPort`).
    filer: String,
    endpoint: Endpoint,
    dialer: Dialer,
    /// Made on the first call (a channel needs the tokio runtime, which building the
    /// client does not); it connects then, and again after a failure.
    channel: Arc<OnceLock<SeaweedFilerClient<Channel>>>,
    timeout: Duration,
}

impl FilerRpc {
    /// Dials nothing yet: the first call connects.
    pub(crate) fn new(filer: &str, dialer: &Dialer, timeout: Duration) -> Result<Self, Error> {
        let config = |message: String| Error::Config(format!("filer {filer}: {message}"));
        let grpc = grpc_address(filer).map_err(config)?;
        let endpoint = Endpoint::from_shared(format!("http://{grpc}"))
            .map_err(|e| config(e.to_string()))?
            .connect_timeout(timeout)
            .timeout(timeout);
        Ok(Self {
            filer: filer.to_owned(),
            endpoint,
            dialer: dialer.clone(),
            channel: Arc::default(),
            timeout,
        })
    }

    /// The generated client, on this connection (call it within the tokio runtime).
    pub(crate) fn raw(&self) -> SeaweedFilerClient<Channel> {
        let client = self.channel.get_or_init(|| {
            SeaweedFilerClient::new(self.dialer.connect_lazy(self.endpoint.clone()))
                // Entries with thousands of chunks exceed tonic's 4 MiB default; weed's
                // own clients allow messages up to 1 GiB.
                .max_decoding_message_size(1 << 30)
        });
        client.clone()
    }

    fn error(&self, status: &tonic::Status) -> Error {
        Error::Filer { filer: self.filer.clone(), message: describe(status) }
    }

    /// The entry at `directory`/`name`; `None` when there is none.
    pub(crate) async fn lookup_entry(&self, directory: &str, name: &str) -> Result<Option<pb::Entry>, Error> {
        let request =
            pb::LookupDirectoryEntryRequest { directory: directory.to_owned(), name: name.to_owned() };
        match self.raw().lookup_directory_entry(request).await {
            Ok(reply) => Ok(reply.into_inner().entry),
            Err(status) if is_not_found(&status) => Ok(None),
            Err(status) => Err(self.error(&status)),
        }
    }

    /// Up to `limit` entries of `directory` after `start_after` (from the first when
    /// empty), in name order, without their chunk lists.
    pub(crate) async fn list(
        &self,
        directory: &str,
        start_after: &str,
        limit: u32,
    ) -> Result<Vec<pb::Entry>, Error> {
        let request = pb::ListEntriesRequest {
            directory: directory.to_owned(),
            prefix: String::new(),
            start_from_file_name: start_after.to_owned(),
            inclusive_start_from: false,
            limit,
            omit_chunks: true,
        };
        let mut stream =
            self.raw().list_entries(request).await.map_err(|status| self.error(&status))?.into_inner();
        let mut entries = Vec::new();
        loop {
            // The call's timeout bounds its start; each message is bounded here.
            let message =
                tokio::time::timeout(self.timeout, stream.message()).await.map_err(|_| Error::Filer {
                    filer: self.filer.clone(),
                    message: format!("listing stalled for {:?}", self.timeout),
                })?;
            match message {
                Ok(Some(reply)) => entries.extend(reply.entry),
                Ok(None) => return Ok(entries),
                Err(status) => return Err(self.error(&status)),
            }
        }
    }

    /// The volume servers (`host:port`) the filer knows for `volume`.
    async fn lookup_volume(&self, volume: VolumeId) -> Result<Vec<String>, Error> {
        let key = volume.0.to_string();
        let request = pb::LookupVolumeRequest { volume_ids: vec![key.clone()] };
        let reply = match self.raw().lookup_volume(request).await {
            Ok(reply) => reply,
            // The filer asked the master, which knows no such volume (any more).
            Err(status)
                if status.code() == tonic::Code::Unknown && status.message().contains("not found") =>
            {
                return Err(Error::VolumeNotFound { volume: volume.0, message: status.message().to_owned() });
            }
            Err(status) => return Err(self.error(&status)),
        };
        let servers: Vec<String> = reply
            .into_inner()
            .locations_map
            .remove(&key)
            .map(|l| l.locations.into_iter().map(|l| l.url).collect())
            .unwrap_or_default();
        if servers.is_empty() {
            return Err(Error::VolumeNotFound {
                volume: volume.0,
                message: format!("filer {} knows no server for it", self.filer),
            });
        }
        Ok(servers)
    }

    pub(crate) async fn configuration(&self) -> Result<pb::GetFilerConfigurationResponse, Error> {
        let reply = self.raw().get_filer_configuration(pb::GetFilerConfigurationRequest {}).await;
        reply.map(tonic::Response::into_inner).map_err(|status| self.error(&status))
    }
}

/// The filer as the chunk reader's source of volume locations.
impl VolumeLocator for FilerRpc {
    fn locate(&self, volume: VolumeId) -> BoxFuture<'_, Result<Vec<String>, Error>> {
        Box::pin(self.lookup_volume(volume))
    }
}

fn is_not_found(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::NotFound || status.message().contains(NOT_FOUND_MESSAGE)
}

/// A status as a person reads it: the code, the message, and for transport failures
/// the cause tonic keeps in the source chain (e.g. "connection refused").
fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}
