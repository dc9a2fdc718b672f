//! RDMA sessions in a cluster whose gRPC runs weed's mutual TLS, in the Soft-RoCE guest
//! (`testbeds rdma-tests`): our `volume-server` with RDMA on (rxe0) and a `security.toml`
//! whose `[grpc]` sections hold certificates of a test CA (made with the `openssl` CLI on
//! tmpfs). An SDK client given the file's `[grpc.client]` certificate reads over RDMA;
//! one without TLS settings, or with another CA's certificate, gets no session and reads
//! over HTTP, each fallback counted, never wrong bytes.
#![cfg(feature = "rdma")]

mod common;

use client_sdk::grpc_tls::ClientTlsFiles;
use client_sdk::{
    Client, FallbackReason, FileId, RdmaEngine, RdmaPolicy, RdmaTransportConfig, UploadOptions,
};
use common::{guest_client, guest_device, guest_rdma_config};
use testbeds::ours::OurVolumeServer;
use testbeds::pki::Pki;
use testbeds::pseudo_random;

const RDMA: &str = "rdma-sideway";

fn rdma_config() -> RdmaTransportConfig {
    guest_rdma_config(RdmaEngine::Sideway)
}

fn client(server: &OurVolumeServer, config: RdmaTransportConfig, policy: RdmaPolicy) -> Client {
    guest_client(server.addr(), config, policy, None)
}

/// Reads every file and checks its bytes.
async fn read_all(client: &Client, files: &[(FileId, Vec<u8>)], who: &str) {
    for (fid, data) in files {
        let read = client.download(fid).await.unwrap_or_else(|e| panic!("{who}: {fid}: {e}"));
        assert!(
            read == data[..],
            "{who}: {fid}: {} bytes read, {} expected, contents differ",
            read.len(),
            data.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
async fn a_tls_grpc_port_opens_rdma_sessions_only_for_trusted_client_certificates() {
    let scratch = tempfile::Builder::new().prefix("sdk-grpc-tls-").tempdir_in("/dev/shm").expect("tmpfs");
    let pki = Pki::new(&scratch.path().join("pki")).unwrap();
    let cluster_ca = pki.ca("cluster").unwrap();
    pki.ca("foreign").unwrap();
    let volume = pki.cert("cluster", "volume").unwrap();
    let client_cert = pki.cert("cluster", "client").unwrap();
    let stranger = pki.cert("foreign", "stranger").unwrap();
    // The server opens paths from its working directory, so [grpc.volume]'s are
    // absolute; [grpc.client]'s are relative, which the SDK takes from the file's directory.
    let security_toml = pki.dir().join("security.toml");
    let path = |p: &std::path::Path| p.display().to_string();
    std::fs::write(
        &security_toml,
        format!(
            "[grpc]\nca = {:?}\n[grpc.volume]\ncert = {:?}\nkey = {:?}\nallowed_commonNames = \"client\"\n\
             [grpc.client]\ncert = \"client.crt\"\nkey = \"client.key\"\n",
            path(&cluster_ca),
            path(&volume.cert),
            path(&volume.key),
        ),
    )
    .unwrap();
    let data_dir = scratch.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let server = OurVolumeServer::start(
        &testbeds::ours::volume_server_binary(),
        &data_dir,
        &["--rdma-device", &guest_device(), "--security-config", &path(&security_toml)],
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // RDMA only, with the file weed's own clients use: every read is an RDMA read.
    let trusted = rdma_config().with_weed_security_toml(&security_toml).expect("the client certificate");
    let over_rdma = client(&server, trusted, RdmaPolicy::Require);
    let mut files = Vec::new();
    for (i, len) in [1usize, 4096, 65_537, (1 << 20) + 7].into_iter().enumerate() {
        let data = pseudo_random(len, 900 + i as u64);
        let fid = over_rdma.upload(data.clone(), &UploadOptions::named("tls.bin")).await.expect("upload").fid;
        files.push((fid, data));
    }
    read_all(&over_rdma, &files, "trusted").await;
    let metrics = over_rdma.metrics();
    assert_eq!(metrics.reads.get(RDMA), Some(&(files.len() as u64)), "{metrics:?}");
    assert_eq!(metrics.reads.get("http"), None, "Require never reads over HTTP: {metrics:?}");

    // The same with the PEM files named directly.
    let named = ClientTlsFiles { ca: cluster_ca.clone(), cert: client_cert.cert, key: client_cert.key };
    let explicit = client(&server, rdma_config().with_grpc_tls(&named).unwrap(), RdmaPolicy::Require);
    read_all(&explicit, &files[1..2], "explicit files").await;
    assert_eq!(explicit.metrics().reads.get(RDMA), Some(&1));

    // No TLS settings, or a certificate of another CA: no session, so every read is
    // served over HTTP (byte-exact) and the fallbacks are counted.
    let foreign = ClientTlsFiles { ca: cluster_ca, cert: stranger.cert, key: stranger.key };
    let refused = [
        ("plaintext", rdma_config()),
        ("another CA's certificate", rdma_config().with_grpc_tls(&foreign).unwrap()),
    ];
    for (who, config) in refused {
        let strict = client(&server, config.clone(), RdmaPolicy::Require);
        assert!(strict.download(&files[0].0).await.is_err(), "{who}: RDMA only must fail without a session");

        let prefer = client(&server, config, RdmaPolicy::Prefer);
        read_all(&prefer, &files, who).await;
        let metrics = prefer.metrics();
        assert_eq!(metrics.reads.get("http"), Some(&(files.len() as u64)), "{who}: {metrics:?}");
        assert_eq!(metrics.reads.get(RDMA), None, "{who}: {metrics:?}");
        let counts = prefer.fallback_counts();
        let unavailable = counts.get(&(RDMA, FallbackReason::Unavailable)).copied().unwrap_or(0);
        let backoff = counts.get(&(RDMA, FallbackReason::Backoff)).copied().unwrap_or(0);
        assert!(unavailable >= 1, "{who}: {counts:?}");
        assert_eq!(unavailable + backoff, files.len() as u64, "{who}: every read fell back: {counts:?}");
    }
}
