//! gRPC mutual TLS as weed configures it, live: a `weed master`, a `weed volume` and our
//! server read one `security.toml` whose `[grpc]` sections hold certificates of a test
//! CA (made with the `openssl` CLI; no host names in them: weed checks the chain only).
//! Ours joins the master over TLS (heartbeats), the master allocates a volume on ours
//! over TLS, uploads and downloads through the master work, `weed shell` (with the
//! `[grpc.client]` certificate) marks a volume of ours read-only and writable again and
//! moves a volume from weed volume to ours (ours dials weed volume's gRPC with its
//! certificate). Clients without a certificate, with one of another CA, or with a CN
//! not on `allowed_commonNames` are refused by our gRPC port. A second cluster runs with
//! `[tls] max_version = "TLS 1.2"` and a cipher suite list: weed still talks to ours,
//! and `openssl s_client` sees the cap.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use testbeds::weed::{WeedMaster, WeedVolume};
use volume_server::cluster::pb::volume_server_pb::VolumeServerStatusRequest;
use volume_server::cluster::pb::volume_server_pb::volume_server_client::VolumeServerClient;
use volume_server::security::grpc_tls::{GrpcTls, GrpcTlsSettings};

/// Our data center: assigns asking for it land on ours.
const OURS_DC: &str = "dc-ours";

/// The test PKI and a `security.toml` using it (absolute paths: weed and ours run in
/// different working directories).
struct Pki {
    dir: PathBuf,
    security_toml: PathBuf,
}

impl Pki {
    /// The PKI and a `security.toml` ending with `extra` (more sections).
    fn new(dir: &Path, extra: &str) -> Self {
        let certs = testbeds::pki::Pki::new(dir).unwrap();
        certs.ca("cluster").unwrap();
        certs.ca("foreign").unwrap();
        for cn in ["master", "volume", "client", "intruder"] {
            certs.cert("cluster", cn).unwrap();
        }
        certs.cert("foreign", "stranger").unwrap();
        let p = |name: &str| dir.join(name).display().to_string();
        let security_toml = dir.join("security.toml");
        std::fs::write(
            &security_toml,
            format!(
                "[grpc]\nca = \"{ca}\"\n\n\
                 [grpc.volume]\ncert = \"{vc}\"\nkey = \"{vk}\"\n\
                 allowed_commonNames = \"master,volume,client\"\n\n\
                 [grpc.master]\ncert = \"{mc}\"\nkey = \"{mk}\"\n\n\
                 [grpc.client]\ncert = \"{cc}\"\nkey = \"{ck}\"\n\n{extra}",
                ca = p("cluster-ca.crt"),
                vc = p("volume.crt"),
                vk = p("volume.key"),
                mc = p("master.crt"),
                mk = p("master.key"),
                cc = p("client.crt"),
                ck = p("client.key"),
            ),
        )
        .unwrap();
        Self { dir: dir.to_owned(), security_toml }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Our dialer trusting `ca` and presenting certificate `cn`.
    fn dialer(&self, ca: &str, cn: &str) -> rdma_transport::grpc_tls::Dialer {
        let files = GrpcTlsSettings {
            ca: self.path(&format!("{ca}-ca.crt")),
            client_cert: self.path(&format!("{cn}.crt")),
            client_key: self.path(&format!("{cn}.key")),
            ..GrpcTlsSettings::default()
        };
        GrpcTls::load(&files).unwrap().dialer
    }
}

/// `weed shell` with the PKI's directory as its config directory (so it reads the
/// `security.toml` and dials with `[grpc.client]`); its output.
fn weed_shell(pki: &Pki, master: &WeedMaster, script: &str) -> String {
    let config_dir = format!("-config_dir={}", pki.dir.display());
    let master = format!("-master={}", master.addr());
    run_weed(&[&config_dir, "shell", &master], script, Duration::from_secs(120)).1
}

/// A `VolumeServerStatus` call to our gRPC port with `dialer` (None: plaintext).
fn status_call(grpc: &str, dialer: Option<rdma_transport::grpc_tls::Dialer>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        let channel = match dialer {
            Some(dialer) => dialer.connect(endpoint).await,
            None => endpoint.connect().await,
        }
        .map_err(|e| format!("connect: {e:?}"))?;
        let mut client = VolumeServerClient::new(channel);
        client.volume_server_status(VolumeServerStatusRequest {}).await.map_err(|e| format!("call: {e}"))?;
        Ok(())
    })
}

#[test]
fn a_weed_cluster_on_mutual_tls_works_with_ours_and_strangers_are_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let pki = Pki::new(&scratch.path().join("pki"), "");
    let master = WeedMaster::start_in(&scratch.path().join("master"), 100, Some(&pki.dir)).unwrap();
    let weed = WeedVolume::start_in(&scratch.path().join("weed"), &master, Some(&pki.dir)).unwrap();
    // A file on weed volume while it is the only server, to move to ours later.
    let moved_data = pseudo_random(30_000, 6);
    let (moved_fid, at) = put(&master, &moved_data);
    assert_eq!(at, weed.addr());
    let toml = pki.security_toml.display().to_string();
    // Listed by the master: our heartbeat stream runs over TLS with our certificate.
    let ours =
        join(&scratch.path().join("ours"), &master, &["--security-config", &toml, "--data-center", OURS_DC]);

    // The master allocates a volume on ours (its gRPC call to our TLS port), then an
    // upload and a download through the master's assignment and lookup.
    let data = pseudo_random(40_000, 5);
    master.grow_in(OURS_DC).unwrap();
    let (fid, server) = put_in(&master, OURS_DC, &data);
    assert_eq!(server, ours.addr, "assigned to our data center");
    let on_ours = vid(&fid);
    assert_eq!(lookup(&master, on_ours), vec![ours.addr.clone()]);
    assert_eq!(get(&ours.addr, &format!("/{fid}")).body, data);

    // weed shell -> our gRPC: VolumeMarkReadonly / VolumeMarkWritable.
    let mark = |mode: &str| {
        weed_shell(
            &pki,
            &master,
            &format!("lock\nvolume.mark -node {} -volumeId {on_ours} -{mode}\nunlock\n", ours.addr),
        )
    };
    let out = mark("readonly");
    assert_eq!(read_only(&ours.addr, on_ours), Some(true), "weed shell volume.mark -readonly:\n{out}");
    let out = mark("writable");
    assert_eq!(read_only(&ours.addr, on_ours), Some(false), "weed shell volume.mark -writable:\n{out}");

    // weed shell volume.move weed -> ours: ours pulls the files from weed volume's gRPC.
    let moved = vid(&moved_fid);
    let out = weed_shell(
        &pki,
        &master,
        &format!(
            "lock\nvolume.move -source {} -target {} -volumeId {moved}\nunlock\n",
            weed.addr(),
            ours.addr
        ),
    );
    assert!(out.contains(&format!("moved volume {moved}")), "volume.move over TLS:\n{out}");
    assert_eq!(get(&ours.addr, &format!("/{moved_fid}")).body, moved_data, "the moved file on ours");

    // Our gRPC port: a client of the cluster's CA with an allowed name gets in (no host
    // name is checked either way: the certificates name no host) ...
    let grpc = volume_server::cluster::pb::grpc_address(&ours.addr).unwrap();
    status_call(&grpc, Some(pki.dialer("cluster", "client"))).expect("an allowed client");
    // ... strangers do not.
    let plain = status_call(&grpc, None).expect_err("a plaintext client");
    let foreign = status_call(&grpc, Some(pki.dialer("cluster", "stranger"))).expect_err("another CA's cert");
    let intruder = status_call(&grpc, Some(pki.dialer("cluster", "intruder"))).expect_err("a CN not allowed");
    eprintln!("refused as expected:\n  plaintext: {plain}\n  foreign CA: {foreign}\n  intruder: {intruder}");
    // And our client refuses a server whose certificate another CA signed.
    let wrong_trust =
        status_call(&grpc, Some(pki.dialer("foreign", "stranger"))).expect_err("untrusted server");
    assert!(wrong_trust.contains("connect"), "{wrong_trust}");

    ours.stop();
    weed.stop();
    master.stop();
}

/// `openssl s_client` to `addr` limited to `version` (`-tls1_2`, `-tls1_3`) with the
/// `client` certificate; whether the handshake succeeded, and its output.
fn s_client(pki: &Pki, addr: &str, version: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, version, "-alpn", "h2", "-brief"])
        .args(["-CAfile", &pki.path("cluster-ca.crt")])
        .args(["-cert", &pki.path("client.crt"), "-key", &pki.path("client.key")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (text.contains("CONNECTION ESTABLISHED"), text)
}

#[test]
fn tls_settings_cap_the_version_and_weed_still_talks_to_ours() {
    let scratch = tempfile::tempdir().unwrap();
    // The whole cluster at TLS 1.2 with one suite per key type (ours: ring's names).
    let tls = "[tls]\nmax_version = \"TLS 1.2\"\n\
               cipher_suites = \"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"\n";
    let pki = Pki::new(&scratch.path().join("pki"), tls);
    let master = WeedMaster::start_in(&scratch.path().join("master"), 100, Some(&pki.dir)).unwrap();
    let toml = pki.security_toml.display().to_string();
    let ours =
        join(&scratch.path().join("ours"), &master, &["--security-config", &toml, "--data-center", OURS_DC]);
    let data = pseudo_random(5_000, 9);
    master.grow_in(OURS_DC).unwrap();
    let (fid, server) = put_in(&master, OURS_DC, &data);
    assert_eq!((server.as_str(), get(&ours.addr, &format!("/{fid}")).body), (ours.addr.as_str(), data));
    let out = weed_shell(
        &pki,
        &master,
        &format!("lock\nvolume.mark -node {} -volumeId {} -readonly\nunlock\n", ours.addr, vid(&fid)),
    );
    assert_eq!(read_only(&ours.addr, vid(&fid)), Some(true), "weed shell volume.mark over TLS 1.2:\n{out}");

    let grpc = volume_server::cluster::pb::grpc_address(&ours.addr).unwrap();
    let (ok, text) = s_client(&pki, &grpc, "-tls1_2");
    assert!(
        ok && text.contains("ECDHE-ECDSA-AES128-GCM-SHA256"),
        "TLS 1.2 with the one ECDSA suite:\n{text}"
    );
    let (ok, text) = s_client(&pki, &grpc, "-tls1_3");
    assert!(!ok, "TLS 1.3 is above max_version:\n{text}");
    ours.stop();
    master.stop();
}

#[test]
fn a_broken_tls_configuration_stops_the_server() {
    let scratch = tempfile::tempdir().unwrap();
    let toml = scratch.path().join("security.toml");
    std::fs::write(&toml, "[grpc]\nca = \"\"\n[grpc.volume]\ncert = \"volume.crt\"\nkey = \"volume.key\"\n")
        .unwrap();
    let dir = scratch.path().join("d");
    let text = start_refused(
        &["--dir", dir.to_str().unwrap(), "--port", "0", "--security-config", toml.to_str().unwrap()],
        &[],
    );
    assert!(text.contains("[grpc] ca"), "{text}");
}
