//! RDMA access control, tried as an attacker would: with raw verbs (an engine's queue
//! pair and READs of any address, rkey and length) and the control plane's gRPC calls,
//! not through `RdmaClient`, which refuses to misbehave. Against a real `volume-server`
//! in the Soft-RoCE guest. A session may READ exactly the records it located with the
//! right cookie, through its own queue pair, for a bounded time; every other READ must
//! fail, and other sessions keep being served meanwhile.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Server;
use needle::{Cookie, FileId, Needle, NeedleId, Ttl, Version};
use rdma_transport::grpc_tls::{ClientTlsFiles, Dialer};
use rdma_transport::proto::rdma_control_client::RdmaControlClient;
use rdma_transport::proto::{self, LocateStatus};
use rdma_transport::server::auth::JwtKey;
use rdma_transport::verbs::{DeviceChoice, SidewayConfig, SidewayEngine};
use rdma_transport::{EngineQp, QpEndpoint, RdmaError, ReadEngine};
use tonic::transport::Channel;

fn engine() -> Arc<dyn ReadEngine> {
    let config = SidewayConfig {
        queue_depth: 2,
        buffer_size: 64 << 10,
        ..SidewayConfig::new(DeviceChoice::Name(common::device_name()))
    };
    Arc::new(SidewayEngine::open(config).expect("the sideway engine opens the device"))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

async fn control(server: &Server, from: Option<std::net::IpAddr>) -> RdmaControlClient<Channel> {
    dial(server, from, &Dialer::default()).await
}

/// The control plane, dialed with `dialer` (plaintext, or mutual TLS with its certificate).
async fn dial(
    server: &Server,
    from: Option<std::net::IpAddr>,
    dialer: &Dialer,
) -> RdmaControlClient<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc()))
        .unwrap()
        .local_address(from)
        .timeout(Duration::from_secs(30));
    RdmaControlClient::new(dialer.connect(endpoint).await.expect("the control plane"))
}

/// A session opened by hand: its gRPC client, id and connected queue pair.
struct RawSession {
    control: RdmaControlClient<Channel>,
    id: u64,
    qp: Box<dyn EngineQp>,
    exposure: proto::Exposure,
}

impl RawSession {
    async fn open(
        server: &Server,
        engine: &dyn ReadEngine,
        jwt: &str,
        grant: &str,
    ) -> Result<Self, tonic::Status> {
        Self::open_on(control(server, None).await, engine, jwt, grant).await
    }

    /// [`RawSession::open`] on a control-plane client of the caller's.
    async fn open_on(
        mut control: RdmaControlClient<Channel>,
        engine: &dyn ReadEngine,
        jwt: &str,
        grant: &str,
    ) -> Result<Self, tonic::Status> {
        let mut qp = engine.create_qp().expect("a queue pair");
        let request = proto::OpenSessionRequest {
            client: Some(qp.endpoint().into()),
            jwt: jwt.to_owned(),
            volume_grant: grant.to_owned(),
        };
        let reply = control.open_session(request).await?.into_inner();
        let remote = QpEndpoint::try_from(reply.server.as_ref().expect("a server endpoint")).unwrap();
        qp.connect(&remote).expect("connecting the queue pair");
        let exposure = reply.exposure();
        Ok(Self { control, id: reply.session_id, qp, exposure })
    }

    async fn locate(&mut self, fid: &FileId) -> Result<proto::LocateResult, tonic::Status> {
        let results = self.locate_all(std::slice::from_ref(fid)).await?;
        Ok(results.into_iter().next().expect("one result"))
    }

    /// One Locate of all `fids`.
    async fn locate_all(&mut self, fids: &[FileId]) -> Result<Vec<proto::LocateResult>, tonic::Status> {
        let request =
            proto::LocateRequest { session_id: self.id, fids: fids.iter().map(FileId::to_string).collect() };
        Ok(self.control.locate(request).await?.into_inner().results)
    }

    /// The one segment of `fid`'s record (`record` exposure gives one per record).
    async fn segment(&mut self, fid: &FileId) -> proto::Segment {
        let result = self.locate(fid).await.expect("Locate");
        assert_eq!(result.status(), LocateStatus::Found, "{fid}: {}", result.message);
        assert_eq!(result.segments.len(), 1, "{fid}");
        assert!(result.valid_ms > 0, "a location says how long it stays readable");
        result.segments[0]
    }

    async fn read(&self, addr: u64, rkey: u32, len: u32) -> Result<Vec<u8>, RdmaError> {
        tokio::time::timeout(Duration::from_secs(30), self.qp.read(addr, rkey, len))
            .await
            .expect("a READ completes or fails within 30 s")
    }

    async fn close(mut self) {
        let request = proto::CloseSessionRequest { session_id: self.id };
        self.control.close_session(request).await.expect("CloseSession");
    }
}

/// Where `data` starts in volume `vid`'s `.dat` (the attacker knows the file layout).
fn data_offset(server: &Server, vid: u32, data: &[u8]) -> u64 {
    let dat = std::fs::read(server.dir.path().join(format!("{vid}.dat"))).unwrap();
    dat.windows(64).position(|w| w == &data[..64]).expect("the data in the .dat") as u64
}

/// Bytes from a record's first byte to its data (v3: header, then DataSize).
const DATA_IN_RECORD: u64 = 16 + 4;

/// The address of a neighbour's data, `to_neighbour` bytes from the data of the record
/// `segment` holds: what a session reading around its record would READ.
fn at_neighbour(segment: &proto::Segment, to_neighbour: i64) -> u64 {
    segment.addr.checked_add_signed(DATA_IN_RECORD as i64 + to_neighbour).unwrap()
}

/// Expects a READ to fail, and the server to go on serving another session.
async fn refused(attempt: Result<Vec<u8>, RdmaError>, what: &str, bystander: &RawSession, fid: &FileId) {
    match attempt {
        Err(RdmaError::Transfer(_)) => {}
        other => panic!("{what}: the READ must fail, got {:?}", other.map(|b| b.len())),
    }
    let mut control = bystander.control.clone();
    let segment = {
        let request = proto::LocateRequest { session_id: bystander.id, fids: vec![fid.to_string()] };
        control.locate(request).await.expect("Locate").into_inner().results[0].segments[0]
    };
    bystander.read(segment.addr, segment.rkey, segment.len).await.expect("another session is still served");
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn a_session_reads_the_records_it_located_and_not_a_byte_more() {
    let server = Server::start(&["--rdma-max-sessions-per-peer", "64"]);
    let [before, located, after, deleted, overwritten]: [Vec<u8>; 5] =
        std::array::from_fn(|i| testbeds::pseudo_random(4096, 12_000 + i as u64));
    let fids: Vec<FileId> = [&before, &located, &after, &deleted].iter().map(|d| server.upload(d)).collect();
    let (fid, gone) = (fids[1], fids[3]);
    server.delete(&gone);
    // An overwrite appends a new record; the old one stays in the `.dat`.
    let rewritten = testbeds::pseudo_random(4096, 12_999);
    let assigned = testbeds::weed::assign(&format!("http://{}", server.http()), "").unwrap();
    let body =
        testbeds::weed::UploadBody::Multipart { filename: "a", content_type: "application/octet-stream" };
    for data in [&overwritten, &rewritten] {
        let (status, _) = testbeds::weed::upload(server.http(), &assigned.fid, "", data, body, &[]).unwrap();
        assert_eq!(status, 201);
    }
    let vid = fid.volume.0;
    let at = |data: &[u8]| data_offset(&server, vid, data);
    let engine = engine();
    common::runtime().block_on(async {
        let mut bystander = RawSession::open(&server, engine.as_ref(), "", "").await.unwrap();
        assert_eq!(bystander.exposure, proto::Exposure::Record, "the default");
        let mine = bystander.segment(&fid).await;
        let record = bystander.read(mine.addr, mine.rkey, mine.len).await.expect("its own record");
        assert!(record[DATA_IN_RECORD as usize..][..4096] == located[..], "the located record's bytes");

        // Each probe on a session of its own: a refused READ leaves its queue pair in error.
        let base = at(&located);
        let probes: [(&str, i64, u32); 6] = [
            ("1 byte before the record", -(DATA_IN_RECORD as i64) - 1, 1),
            ("1 byte after the record", mine.len as i64 - DATA_IN_RECORD as i64, 1),
            ("the record and 1 byte more", -(DATA_IN_RECORD as i64), mine.len + 1),
            ("another live needle", at(&after) as i64 - base as i64, 64),
            ("a deleted needle's record", at(&deleted) as i64 - base as i64, 64),
            ("an overwritten needle's old version", at(&overwritten) as i64 - base as i64, 64),
        ];
        assert!(at(&before) < base && base < at(&after), "the neighbours are around it in the file");
        for (what, from_data, len) in probes {
            let mut attacker = RawSession::open(&server, engine.as_ref(), "", "").await.unwrap();
            let segment = attacker.segment(&fid).await;
            let data_addr = segment.addr + DATA_IN_RECORD;
            let addr = data_addr.checked_add_signed(from_data).unwrap();
            refused(attacker.read(addr, segment.rkey, len).await, what, &bystander, &fid).await;
            attacker.close().await;
        }

        // A volume-read grant on a server without volume exposure: record exposure all
        // the same, and its READs around its record fail as any other's.
        let mut granted = RawSession::open(&server, engine.as_ref(), "", "any").await.unwrap();
        assert_eq!(granted.exposure, proto::Exposure::Record);
        let segment = granted.segment(&fid).await;
        let after = granted.read(segment.addr + u64::from(segment.len), segment.rkey, 1).await;
        refused(after, "1 byte after the record, with a grant", &bystander, &fid).await;
        bystander.close().await;
    });
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn a_wrong_cookie_or_an_expired_needle_gets_no_segments() {
    // A volume written by hand: one live needle and one whose 1-minute TTL ran out an
    // hour ago (the server cannot be asked to write a needle in the past).
    let dir = tempfile::Builder::new().prefix("rdma-ttl-").tempdir_in("/dev/shm").unwrap();
    let ttl = Ttl::fit_seconds(60);
    let mut dat = needle::SuperBlock::new(needle::ReplicaPlacement::default(), ttl).to_bytes().unwrap();
    let mut idx = Vec::new();
    let hour_ago = unix_now() - 3600;
    let (live, stale) = (testbeds::pseudo_random(4096, 1), testbeds::pseudo_random(4096, 2));
    for (key, data, written) in [(1u64, &live, unix_now()), (2, &stale, hour_ago)] {
        let offset = dat.len() as u64;
        let n = Needle::new(NeedleId(key), Cookie(0x1234_5678), data)
            .with_ttl(ttl)
            .with_last_modified(written)
            .with_append_at_ns(written * 1_000_000_000);
        n.encode_into(Version::V3, &mut dat).unwrap();
        let size = n.body_size(Version::V3).unwrap();
        needle::IdxEntry::new(NeedleId(key), offset, size)
            .unwrap()
            .encode_into(needle::OffsetWidth::Four, &mut idx)
            .unwrap();
    }
    std::fs::write(dir.path().join("5.dat"), &dat).unwrap();
    std::fs::write(dir.path().join("5.idx"), &idx).unwrap();
    let server = Server::start_in(dir, &["--offset-width", "4"]);
    let fid = |key: u64, cookie: u32| FileId {
        volume: needle::VolumeId(5),
        key: NeedleId(key),
        cookie: Cookie(cookie),
        delta: None,
    };
    let http_status = |fid: FileId| match ureq::get(&format!("http://{}/{fid}", server.http())).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("GET {fid}: {e}"),
    };
    assert_eq!(http_status(fid(1, 0x1234_5678)), 200);
    assert_eq!(http_status(fid(1, 0x1234_5679)), 404, "HTTP: a wrong cookie");
    assert_eq!(http_status(fid(2, 0x1234_5678)), 404, "HTTP: past its TTL");
    let engine = engine();
    common::runtime().block_on(async {
        let mut session = RawSession::open(&server, engine.as_ref(), "", "").await.unwrap();
        let segment = session.segment(&fid(1, 0x1234_5678)).await;
        assert_eq!(
            session.read(segment.addr, segment.rkey, segment.len).await.unwrap().len(),
            segment.len as usize
        );
        for (wrong, what) in [(fid(1, 0x1234_5679), "a wrong cookie"), (fid(2, 0x1234_5678), "past its TTL")]
        {
            let result = session.locate(&wrong).await.unwrap();
            assert_eq!(result.status(), LocateStatus::NotFound, "{what}");
            assert!(result.segments.is_empty(), "{what}");
        }
    });
    let counted = (
        server.metric("volume_server_rdma_locate_wrong_cookie_total"),
        server.metric("volume_server_rdma_locate_expired_total"),
    );
    assert_eq!(counted, (1, 1));
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn a_location_is_readable_only_through_its_session_and_only_while_it_lasts() {
    // Sessions idle for 4 s expire, located records 2 s after their last Locate. Every
    // expiry below is checked after its time has passed on this machine's clock (which
    // the server shares), and made certain by a Locate of the session concerned (which
    // applies both times itself), never by waiting for the server's periodic sweep.
    let (idle, lifetime) = (Duration::from_secs(4), Duration::from_secs(2));
    let server = Server::start(&["--rdma-idle-timeout-secs", "4", "--rdma-location-lifetime-secs", "2"]);
    let data = testbeds::pseudo_random(4096, 77);
    let fid = server.upload(&data);
    let engine = engine();
    common::runtime().block_on(async {
        let mut bystander = RawSession::open(&server, engine.as_ref(), "", "").await.unwrap();
        bystander.segment(&fid).await;

        // Session A's location READ on session B's queue pair.
        let mut a = RawSession::open(&server, engine.as_ref(), "", "").await.unwrap();
        let mut b = RawSession::open(&server, engine.as_ref(), "", "").await.unwrap();
        let of_a = a.segment(&fid).await;
        b.segment(&fid).await;
        refused(
            b.read(of_a.addr, of_a.rkey, of_a.len).await,
            "A's location on B's queue pair",
            &bystander,
            &fid,
        )
        .await;
        a.read(of_a.addr, of_a.rkey, of_a.len).await.expect("A's own location");

        // After CloseSession: a new session of the same client presents the old location.
        a.close().await;
        let c = RawSession::open(&server, engine.as_ref(), "", "").await.unwrap();
        refused(
            c.read(of_a.addr, of_a.rkey, of_a.len).await,
            "a closed session's location",
            &bystander,
            &fid,
        )
        .await;

        // The location's own time runs out while its session lives on (it locates
        // another needle, which also drops its grants past their time).
        let mut d = RawSession::open(&server, engine.as_ref(), "", "").await.unwrap();
        let of_d = d.segment(&fid).await;
        // Taken after the answer: the server's clock for this grant started earlier.
        let located_at = Instant::now();
        let other = server.upload(&testbeds::pseudo_random(100, 78));
        while located_at.elapsed() <= lifetime {
            tokio::time::sleep(Duration::from_millis(500)).await;
            d.segment(&other).await;
            bystander.segment(&fid).await;
        }
        d.segment(&other).await;
        refused(
            d.read(of_d.addr, of_d.rkey, of_d.len).await,
            "a location past its lifetime",
            &bystander,
            &fid,
        )
        .await;

        // After idle expiry: the session is gone, and with it what it was granted.
        let mut e = RawSession::open(&server, engine.as_ref(), "", "").await.unwrap();
        let of_e = e.segment(&fid).await;
        let last_used = Instant::now();
        while last_used.elapsed() <= idle {
            tokio::time::sleep(Duration::from_millis(500)).await;
            bystander.segment(&fid).await;
        }
        let located = e.locate(&fid).await;
        assert_eq!(located.err().map(|s| s.code()), Some(tonic::Code::NotFound), "the idle session expired");
        let f = RawSession::open(&server, engine.as_ref(), "", "").await.unwrap();
        refused(
            f.read(of_e.addr, of_e.rkey, of_e.len).await,
            "an idle-expired session's location",
            &bystander,
            &fid,
        )
        .await;
    });
    assert!(server.metric("volume_server_rdma_sessions_expired_total") >= 1);
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn a_session_ends_with_its_token() {
    let server = Server::start(&["--rdma-jwt-key", "acl-secret"]);
    let data = testbeds::pseudo_random(4096, 88);
    let fid = server.upload(&data);
    let key = JwtKey::new("acl-secret");
    let engine = engine();
    common::runtime().block_on(async {
        let lasting = key.sign(&serde_json::json!({ "exp": unix_now() + 600 }));
        let mut bystander = RawSession::open(&server, engine.as_ref(), &lasting, "").await.unwrap();
        bystander.segment(&fid).await;
        let exp = unix_now() + 4;
        let short = key.sign(&serde_json::json!({ "exp": exp }));
        let mut session = RawSession::open(&server, engine.as_ref(), &short, "").await.unwrap();
        let segment = session.segment(&fid).await;
        session.read(segment.addr, segment.rkey, segment.len).await.expect("before exp");
        while unix_now() <= exp {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Past exp, the session's next call closes it (if the server's sweep has not).
        let located = session.locate(&fid).await;
        assert!(
            matches!(
                located.as_ref().map_err(|s| s.code()),
                Err(tonic::Code::Unauthenticated | tonic::Code::NotFound)
            ),
            "Locate past exp: {located:?}"
        );
        // Its queue pair answers nothing (an RC READ towards a destroyed queue pair may
        // just go unanswered), and another session of the same client presenting the
        // location is refused.
        let dead = tokio::time::timeout(
            Duration::from_secs(5),
            session.qp.read(segment.addr, segment.rkey, segment.len),
        );
        assert!(!matches!(dead.await, Ok(Ok(_))), "no bytes past the token's exp");
        let fresh = RawSession::open(&server, engine.as_ref(), &lasting, "").await.unwrap();
        refused(
            fresh.read(segment.addr, segment.rkey, segment.len).await,
            "past the token's exp",
            &bystander,
            &fid,
        )
        .await;
        let again = RawSession::open(&server, engine.as_ref(), &short, "").await;
        assert_eq!(again.err().map(|s| s.code()), Some(tonic::Code::PermissionDenied));
    });
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn three_hundred_sessions_from_one_address_are_capped_while_another_address_is_served() {
    // No session idles out while the flood runs, however slow the machine.
    let server = Server::start(&["--rdma-idle-timeout-secs", "3600"]);
    let fid = server.upload(&testbeds::pseudo_random(4096, 99));
    let engine = engine();
    common::runtime().block_on(async {
        // The flood: OpenSession after OpenSession from 127.0.0.1, all naming one queue
        // pair (the server refuses before making one of its own).
        let mut flood = control(&server, None).await;
        let qp = engine.create_qp().unwrap();
        let (mut opened, mut turned_away) = (0, 0);
        for _ in 0..300 {
            let request =
                proto::OpenSessionRequest { client: Some(qp.endpoint().into()), ..Default::default() };
            match flood.open_session(request).await {
                Ok(_) => opened += 1,
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                    assert!(status.message().contains("client address"), "{}", status.message());
                    turned_away += 1;
                }
            }
        }
        assert_eq!((opened, turned_away), (16, 284), "the default cap of 16 per address");

        // Another address (127.0.0.2) is still served, end to end.
        let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        let mut control = control(&server, Some(other)).await;
        let mut client_qp = engine.create_qp().unwrap();
        let request =
            proto::OpenSessionRequest { client: Some(client_qp.endpoint().into()), ..Default::default() };
        let reply =
            control.open_session(request).await.expect("another address opens a session").into_inner();
        client_qp.connect(&QpEndpoint::try_from(reply.server.as_ref().unwrap()).unwrap()).unwrap();
        let request = proto::LocateRequest { session_id: reply.session_id, fids: vec![fid.to_string()] };
        let segment = control.locate(request).await.unwrap().into_inner().results[0].segments[0];
        tokio::time::timeout(
            Duration::from_secs(30),
            client_qp.read(segment.addr, segment.rkey, segment.len),
        )
        .await
        .unwrap()
        .expect("and reads");
    });
    assert_eq!(server.metric("volume_server_rdma_sessions_refused_total"), 284);
    assert_eq!(server.metric("volume_server_rdma_sessions"), 17);
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn one_locate_registers_a_bounded_number_of_bytes() {
    let server = Server::start(&["--rdma-max-locate-mb", "1"]);
    let fids: Vec<FileId> =
        (0..3).map(|i| server.upload(&testbeds::pseudo_random(600_000, 300 + i))).collect();
    let engine = engine();
    common::runtime().block_on(async {
        let mut session = RawSession::open(&server, engine.as_ref(), "", "").await.unwrap();
        let statuses =
            |results: Vec<proto::LocateResult>| results.iter().map(|r| r.status()).collect::<Vec<_>>();
        use LocateStatus::{Found, Unavailable};
        // 600 kB registered, then 1.2 MB: the third record would pass the 1 MiB bound.
        let results = session.locate_all(&fids).await.expect("Locate");
        assert_eq!(statuses(results), [Found, Found, Unavailable]);
        // Alone it is found; then all three are, since renewing registers nothing.
        session.segment(&fids[2]).await;
        let results = session.locate_all(&fids).await.expect("Locate");
        assert_eq!(statuses(results), [Found, Found, Found]);
    });
    assert_eq!(server.metric("volume_server_rdma_locate_over_bound_total"), 1);
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn volume_exposure_reads_whole_volumes_for_a_grant_and_records_for_the_rest() {
    let server = Server::start(&["--rdma-exposure", "volume", "--rdma-jwt-key", "vol-secret"]);
    assert_eq!(server.rdma_status()["Exposure"], "volume");
    let (first, second) = (testbeds::pseudo_random(4096, 5), testbeds::pseudo_random(4096, 6));
    let (fid, neighbour) = (server.upload(&first), server.upload(&second));
    assert_eq!(fid.volume, neighbour.volume, "one volume");
    let key = JwtKey::new("vol-secret");
    let exp = unix_now() + 600;
    let jwt = key.sign(&serde_json::json!({ "exp": exp }));
    let engine = engine();
    common::runtime().block_on(async {
        let mut bystander = RawSession::open(&server, engine.as_ref(), &jwt, "").await.unwrap();
        assert_eq!(bystander.exposure, proto::Exposure::Record, "no grant: record exposure");
        bystander.segment(&fid).await;

        // Granted: the volume's bytes around the located record are readable too.
        let grant = key.sign(&serde_json::json!({ "exp": exp, "volumes": [fid.volume.0] }));
        let mut granted = RawSession::open(&server, engine.as_ref(), &jwt, &grant).await.unwrap();
        assert_eq!(granted.exposure, proto::Exposure::Volume);
        let located = granted.locate(&fid).await.unwrap();
        let segment = located.segments[0];
        let to_neighbour = data_offset(&server, fid.volume.0, &second) as i64
            - data_offset(&server, fid.volume.0, &first) as i64;
        let addr = at_neighbour(&segment, to_neighbour);
        let read = granted.read(addr, segment.rkey, 4096).await.expect("a granted session reads the volume");
        assert!(read == second, "the neighbour's bytes");

        // Not granted, on the same server: its records only.
        let mut plain = RawSession::open(&server, engine.as_ref(), &jwt, "").await.unwrap();
        let mine = plain.segment(&fid).await;
        let addr = at_neighbour(&mine, to_neighbour);
        refused(
            plain.read(addr, mine.rkey, 64).await,
            "an ungranted session reading around",
            &bystander,
            &fid,
        )
        .await;

        // A grant for another collection: its Locates are refused.
        let elsewhere = key.sign(&serde_json::json!({ "exp": exp, "collections": ["other"] }));
        let mut other = RawSession::open(&server, engine.as_ref(), &jwt, &elsewhere).await.unwrap();
        let result = other.locate(&fid).await.unwrap();
        assert_eq!(result.status(), LocateStatus::Forbidden, "{}", result.message);
        assert!(result.segments.is_empty());
        // The one-sided index (registered header, .idx mirror, .dat extents) goes to a
        // session whose grant covers the volume, and to no other.
        let open_index = |session: &RawSession| {
            let (mut control, session_id) = (session.control.clone(), session.id);
            async move {
                control
                    .open_index(proto::OpenIndexRequest { session_id, volume_id: fid.volume.0 })
                    .await
                    .map(|reply| reply.into_inner())
            }
        };
        let header = open_index(&granted).await.expect("the granted session opens the index");
        assert!(header.header.is_some_and(|h| h.len > 0));
        for (session, what) in [(&bystander, "record exposure"), (&other, "a grant for another collection")] {
            let refused = open_index(session).await.err().map(|s| s.code());
            assert_eq!(refused, Some(tonic::Code::PermissionDenied), "{what}");
        }
        // A forged grant opens nothing.
        let forged = JwtKey::new("wrong").sign(&serde_json::json!({ "exp": exp, "volumes": [fid.volume.0] }));
        let forged_session = RawSession::open(&server, engine.as_ref(), &jwt, &forged).await;
        assert_eq!(forged_session.err().map(|s| s.code()), Some(tonic::Code::PermissionDenied));
    });
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn volume_exposure_reads_whole_volumes_for_a_named_client_certificate_and_records_for_the_rest() {
    // The gRPC port runs weed's mutual TLS and admits any certificate of the cluster's
    // CA; --rdma-volume-cn names the one whose sessions read whole volumes.
    let pki_dir = tempfile::Builder::new().prefix("rdma-cn-").tempdir_in("/dev/shm").expect("tmpfs");
    let pki = testbeds::pki::Pki::new(pki_dir.path()).unwrap();
    let ca = pki.ca("cluster").unwrap();
    let volume = pki.cert("cluster", "volume").unwrap();
    let security = pki.dir().join("security.toml");
    std::fs::write(
        &security,
        format!("[grpc]\nca = {:?}\n[grpc.volume]\ncert = {:?}\nkey = {:?}\n", ca, volume.cert, volume.key),
    )
    .unwrap();
    let server = Server::start(&[
        "--rdma-exposure",
        "volume",
        "--rdma-volume-cn",
        "reader",
        "--security-config",
        &security.display().to_string(),
    ]);
    let (first, second) = (testbeds::pseudo_random(4096, 7), testbeds::pseudo_random(4096, 8));
    let (fid, neighbour) = (server.upload(&first), server.upload(&second));
    assert_eq!(fid.volume, neighbour.volume, "one volume");
    let to_neighbour = data_offset(&server, fid.volume.0, &second) as i64
        - data_offset(&server, fid.volume.0, &first) as i64;
    let dialer = |cn: &str| {
        let leaf = pki.cert("cluster", cn).unwrap();
        Dialer::mutual_tls(&ClientTlsFiles { ca: ca.clone(), cert: leaf.cert, key: leaf.key }).unwrap()
    };
    let (reader, other) = (dialer("reader"), dialer("other"));
    let engine = engine();
    common::runtime().block_on(async {
        let mut named =
            RawSession::open_on(dial(&server, None, &reader).await, engine.as_ref(), "", "").await.unwrap();
        assert_eq!(named.exposure, proto::Exposure::Volume, "the named certificate: volume exposure");
        let segment = named.locate(&fid).await.unwrap().segments[0];
        let addr = at_neighbour(&segment, to_neighbour);
        let read = named.read(addr, segment.rkey, 4096).await.expect("a named certificate reads the volume");
        assert!(read == second, "the neighbour's bytes");

        // Another certificate the port admits: its own records only.
        let mut unnamed =
            RawSession::open_on(dial(&server, None, &other).await, engine.as_ref(), "", "").await.unwrap();
        assert_eq!(unnamed.exposure, proto::Exposure::Record, "a certificate not named: record exposure");
        let mine = unnamed.segment(&fid).await;
        let read = unnamed.read(mine.addr, mine.rkey, mine.len).await.expect("its own record");
        assert_eq!(read.len(), mine.len as usize);
        let around = at_neighbour(&mine, to_neighbour);
        refused(
            unnamed.read(around, mine.rkey, 64).await,
            "an unnamed certificate reading around",
            &named,
            &fid,
        )
        .await;
    });
}
