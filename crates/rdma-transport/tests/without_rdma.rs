//! Host tests of the paths taken without RDMA (the host kernel has none): the engine
//! reports "no device", and a real `volume-server` running without RDMA refuses
//! sessions in a way the client types as "unavailable" (so the SDK falls back to HTTP),
//! and says why in `/status`.

use std::path::Path;
use std::sync::Arc;

use rdma_transport::verbs::{DeviceChoice, SidewayConfig, SidewayEngine};
use rdma_transport::{
    EngineQp, ErrorKind, QpEndpoint, RdmaClient, RdmaClientConfig, RdmaError, ReadEngine, ReadFuture,
};
use testbeds::ours::OurVolumeServer;

#[test]
fn the_sideway_engine_reports_a_missing_device() {
    let config = SidewayConfig::new(DeviceChoice::Name("no-such-rdma-device".into()));
    let error = SidewayEngine::open(config).unwrap_err();
    assert!(matches!(error, RdmaError::NoDevice(_)), "{error}");
    assert_eq!(error.kind(), ErrorKind::Unavailable);
}

/// FAKE engine: hands out a well-formed endpoint and never reads. It stands in for a
/// device the host does not have, to reach the server's "no RDMA here" answer; the guest
/// tests (`rdma_read_path`) run the same client against a server with a device.
#[derive(Debug)]
struct EndpointOnlyEngine;

struct EndpointOnlyQp;

impl ReadEngine for EndpointOnlyEngine {
    fn name(&self) -> &'static str {
        "endpoint-only (fake)"
    }

    fn create_qp(&self) -> Result<Box<dyn EngineQp>, RdmaError> {
        Ok(Box::new(EndpointOnlyQp))
    }
}

impl EngineQp for EndpointOnlyQp {
    fn endpoint(&self) -> QpEndpoint {
        QpEndpoint { qp_num: 1, psn: 1, gid: [0; 16], lid: 0, mtu: 1024, max_read_atomic: 1 }
    }

    fn connect(&mut self, _remote: &QpEndpoint) -> Result<(), RdmaError> {
        panic!("a server without RDMA must not get this far")
    }

    fn read(&self, _remote_addr: u64, _rkey: u32, _len: u32) -> ReadFuture<'_> {
        panic!("a server without RDMA must not get this far")
    }
}

#[test]
fn a_server_without_rdma_refuses_sessions_as_unavailable() {
    let bin = testbeds::ours::volume_server_binary();
    let dir = tempfile::tempdir().unwrap();
    let server = OurVolumeServer::start(&bin, dir.path(), &["--rdma", "off"]).unwrap();

    let status: serde_json::Value =
        ureq::get(&format!("http://{}/status", server.addr())).call().unwrap().into_json().unwrap();
    assert_eq!(status["Rdma"]["Enabled"], false);
    assert!(status["Rdma"]["Reason"].as_str().unwrap().contains("--rdma off"), "{status}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client =
        RdmaClient::new(&server.grpc_addr(), Arc::new(EndpointOnlyEngine), RdmaClientConfig::default())
            .unwrap();
    let error = runtime.block_on(client.read(&"1,01637037d6".parse().unwrap())).unwrap_err();
    assert!(matches!(error, RdmaError::NoDevice(_)), "{error}");
    assert_eq!(error.kind(), ErrorKind::Unavailable);

    // Nobody listening at all: unavailable too, and bounded by the client's timeouts.
    drop(server);
    let error = runtime.block_on(client.read(&"1,01637037d6".parse().unwrap())).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
}

/// A session needs the right TLS when the server's gRPC port runs weed's mutual TLS:
/// through TLS with a trusted certificate the server's answer ("no RDMA here": this host
/// has no device) comes back; without TLS, with another CA's certificate, or speaking TLS
/// to a plaintext port, the control plane fails as unavailable, within the timeouts.
#[test]
fn the_control_plane_is_dialed_over_mutual_tls_and_refusals_are_unavailable() {
    use rdma_transport::grpc_tls::{ClientTlsFiles, Dialer};

    let bin = testbeds::ours::volume_server_binary();
    let root = tempfile::tempdir().unwrap();
    let pki = testbeds::pki::Pki::new(&root.path().join("pki")).unwrap();
    let cluster_ca = pki.ca("cluster").unwrap();
    let foreign_ca = pki.ca("foreign").unwrap();
    let volume = pki.cert("cluster", "volume").unwrap();
    let client = pki.cert("cluster", "client").unwrap();
    let stranger = pki.cert("foreign", "stranger").unwrap();
    let security_toml = root.path().join("security.toml");
    std::fs::write(
        &security_toml,
        format!(
            "[grpc]\nca = {:?}\n[grpc.volume]\ncert = {:?}\nkey = {:?}\n",
            cluster_ca.display().to_string(),
            volume.cert.display().to_string(),
            volume.key.display().to_string(),
        ),
    )
    .unwrap();
    let start = |dir: &str, tls: bool| {
        let toml = security_toml.display().to_string();
        let mut args = vec!["--rdma", "off"];
        if tls {
            args.extend(["--security-config", &toml]);
        }
        let data = root.path().join(dir);
        std::fs::create_dir_all(&data).unwrap();
        let server = OurVolumeServer::start(&bin, &data, &args).unwrap();
        let grpc = server.grpc_addr();
        (server, grpc)
    };
    let (_tls_server, tls_grpc) = start("tls", true);
    let (_plain_server, plain_grpc) = start("plain", false);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let session = |grpc: &str, dialer: Dialer| {
        let config = RdmaClientConfig {
            rpc_timeout: std::time::Duration::from_secs(5),
            dialer,
            ..RdmaClientConfig::default()
        };
        let client = RdmaClient::new(grpc, Arc::new(EndpointOnlyEngine), config).unwrap();
        let started = std::time::Instant::now();
        let error = runtime.block_on(client.read(&"1,01637037d6".parse().unwrap())).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{error}: not bounded");
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
        error
    };
    let files = |ca: &Path, cert: &testbeds::pki::CertFiles| ClientTlsFiles {
        ca: ca.to_owned(),
        cert: cert.cert.clone(),
        key: cert.key.clone(),
    };
    let trusted = Dialer::mutual_tls(&files(&cluster_ca, &client)).unwrap();

    let through = session(&tls_grpc, trusted.clone());
    assert!(matches!(&through, RdmaError::NoDevice(m) if m.contains("server")), "{through}");
    let plaintext = session(&tls_grpc, Dialer::default());
    assert!(matches!(plaintext, RdmaError::ControlPlane(_)), "{plaintext}");
    let foreign_client = session(&tls_grpc, Dialer::mutual_tls(&files(&cluster_ca, &stranger)).unwrap());
    assert!(matches!(foreign_client, RdmaError::ControlPlane(_)), "{foreign_client}");
    let untrusted_server = session(&tls_grpc, Dialer::mutual_tls(&files(&foreign_ca, &stranger)).unwrap());
    assert!(matches!(untrusted_server, RdmaError::ControlPlane(_)), "{untrusted_server}");
    let tls_to_plaintext = session(&plain_grpc, trusted);
    assert!(matches!(tls_to_plaintext, RdmaError::ControlPlane(_)), "{tls_to_plaintext}");
}
