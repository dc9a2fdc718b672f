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
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("volume-server");
    assert!(bin.exists(), "{} is missing: run `cargo build -p volume-server` first", bin.display());
    let dir = tempfile::tempdir().unwrap();
    let grpc_port = testbeds::process::free_port_pair().unwrap().to_string();
    let server =
        OurVolumeServer::start(&bin, dir.path(), &["--rdma", "off", "--grpc-port", &grpc_port]).unwrap();

    let status: serde_json::Value =
        ureq::get(&format!("http://{}/status", server.addr())).call().unwrap().into_json().unwrap();
    assert_eq!(status["Rdma"]["Enabled"], false);
    assert!(status["Rdma"]["Reason"].as_str().unwrap().contains("--rdma off"), "{status}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = RdmaClient::new(
        &format!("127.0.0.1:{grpc_port}"),
        Arc::new(EndpointOnlyEngine),
        RdmaClientConfig::default(),
    )
    .unwrap();
    let error = runtime.block_on(client.read(&"1,01637037d6".parse().unwrap())).unwrap_err();
    assert!(matches!(error, RdmaError::NoDevice(_)), "{error}");
    assert_eq!(error.kind(), ErrorKind::Unavailable);

    // Nobody listening at all: unavailable too, and bounded by the client's timeouts.
    drop(server);
    let error = runtime.block_on(client.read(&"1,01637037d6".parse().unwrap())).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
}
